"""The pruning methods of ``torch.nn.utils.prune``: which entries or channels a mask removes.

``compute_mask(t, default_mask)`` gets importance scores ``t`` and the mask of earlier prunes and
returns the new mask (see ``base`` for how a method re-parametrises a module). ``amount`` is a count
(int) or a fraction (float) of ``t``'s entries (unstructured) or of its channels along ``dim``
(structured), as in ``amount``.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..nn.random import get_rng
from .amount import count_to_prune, validate_amount, validate_count
from .base import BasePruningMethod, PruningContainer, _channel_dim, effective_weight, pruning_hook
from .norms import channel_norms

__all__ = ["BasePruningMethod", "PruningContainer", "pruning_hook", "effective_weight", "Identity",
           "RandomUnstructured", "L1Unstructured", "RandomStructured", "LnStructured", "CustomFromMask"]


class Identity(BasePruningMethod):
    """Prunes nothing: the re-parametrisation with a mask of ones (or the existing mask)."""

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        return np.array(default_mask, copy=True)


def _zero_flat(default_mask: np.ndarray, indices: np.ndarray) -> np.ndarray:
    mask = np.array(default_mask, copy=True, order="C")
    mask.reshape(-1)[indices] = 0
    return mask


class L1Unstructured(BasePruningMethod):
    """Zero the ``k`` entries of smallest ``|t|`` (k from ``amount``, counted among ``t``'s entries)."""

    def __init__(self, amount: numbers.Real) -> None:
        validate_amount(amount)
        self.amount = amount

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        k = count_to_prune(self.amount, t.size)
        validate_count(k, t.size)
        smallest = np.argsort(np.abs(t).reshape(-1), kind="stable")[:k]
        return _zero_flat(default_mask, smallest)


class RandomUnstructured(BasePruningMethod):
    """Zero ``k`` entries chosen uniformly at random (``rng``: a Generator or seed; default global)."""

    def __init__(self, amount: numbers.Real, rng: np.random.Generator | int | None = None) -> None:
        validate_amount(amount)
        self.amount, self.rng = amount, rng

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        k = count_to_prune(self.amount, t.size)
        validate_count(k, t.size)
        prob = get_rng(self.rng).random(t.size)
        return _zero_flat(default_mask, np.argsort(prob)[t.size - k:])  # the k largest draws


def _validate_structured(t: np.ndarray, dim: int) -> None:
    if t.ndim <= 1:
        raise ValueError(f"Structured pruning can only be applied to multidimensional tensors. "
                         f"Found tensor of shape {t.shape} with {t.ndim} dims")
    _channel_dim(t, dim)


def _channel_mask(t: np.ndarray, dim: int, keep: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
    """Ones on the channels ``keep`` (indices or booleans) along ``dim``, times ``default_mask``."""
    mask = np.zeros_like(t)
    slc: list = [slice(None)] * t.ndim
    slc[dim] = keep
    mask[tuple(slc)] = 1
    mask *= default_mask.astype(mask.dtype, copy=False)
    return mask


class LnStructured(BasePruningMethod):
    """Zero the ``k`` channels along ``dim`` of smallest L``n`` norm (``n``: real, inf, -inf, 'fro', 'nuc')."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount: numbers.Real, n: Any, dim: int = -1) -> None:
        validate_amount(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        _validate_structured(t, self.dim)
        size = t.shape[self.dim]
        k = count_to_prune(self.amount, size)
        validate_count(k, size)
        if k == 0:
            return np.array(default_mask, copy=True)
        norm = channel_norms(t, self.n, self.dim)  # (size,)
        largest = np.argsort(norm, kind="stable")[::-1][:size - k]
        return _channel_mask(t, self.dim, largest, default_mask)


class RandomStructured(BasePruningMethod):
    """Zero ``k`` channels along ``dim`` chosen uniformly at random."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount: numbers.Real, dim: int = -1,
                 rng: np.random.Generator | int | None = None) -> None:
        validate_amount(amount)
        self.amount, self.dim, self.rng = amount, dim, rng

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        _validate_structured(t, self.dim)
        size = t.shape[self.dim]
        k = count_to_prune(self.amount, size)
        validate_count(k, size)
        if k == 0:
            return np.array(default_mask, copy=True)
        prob = get_rng(self.rng).random(size)
        threshold = np.partition(prob, k - 1)[k - 1]  # k-th smallest draw
        return _channel_mask(t, self.dim % t.ndim, prob > threshold, default_mask)


class CustomFromMask(BasePruningMethod):
    """Apply a given mask: ``default_mask * mask``."""

    PRUNING_TYPE = "global"

    def __init__(self, mask: Any) -> None:
        self.mask = np.asarray(mask)

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        if default_mask.shape != self.mask.shape:
            raise ValueError(f"CustomFromMask: mask of shape {self.mask.shape} does not match the tensor's "
                             f"shape {default_mask.shape}")
        return default_mask * self.mask.astype(default_mask.dtype)
