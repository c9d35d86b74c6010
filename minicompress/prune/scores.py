"""Structured pruning by given per-channel scores (activation importance, or any other ranking).

``ScoreStructured(amount, scores, dim)`` removes, among the channels along ``dim`` that are still
alive (not yet entirely masked), the ``k`` with the smallest score::

    alive = {c : default_mask[..., c, ...] has a nonzero}
    k     = amount (int) or round(amount * |alive|)       (``amount``)
    prune the k channels of alive with the smallest scores[c]; ties: the lower index first   (1)

Like ``LnStructured`` pruned again, ``amount`` counts the channels still alive, and nothing pruned is
revived. The method holds its scores, as ``CustomFromMask`` holds its mask, so it is ``'global'``:
a container hands it the whole tensor and (1) itself skips the dead channels.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..nn.module import Module
from .amount import count_to_prune, validate_amount, validate_count
from .base import BasePruningMethod, _channel_dim

__all__ = ["ScoreStructured", "structured_from_scores"]


class ScoreStructured(BasePruningMethod):
    """Zero the ``k`` alive channels along ``dim`` with the smallest ``scores`` (1).  scores: (C,)"""

    PRUNING_TYPE = "global"

    def __init__(self, amount: numbers.Real, scores: Any, dim: int = 0) -> None:
        validate_amount(amount)
        scores = np.asarray(scores)
        if scores.ndim != 1 or not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
            raise ValueError(f"ScoreStructured: scores must be a 1-D array of finite numbers (one per channel), "
                             f"got shape {scores.shape}, dtype {scores.dtype}")
        self.amount, self.scores, self.dim = amount, scores, dim

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        if t.ndim < 2:
            raise ValueError(f"ScoreStructured needs a tensor with >= 2 dims, got shape {t.shape}")
        dim = _channel_dim(t, self.dim)
        if self.scores.shape != (t.shape[dim],):
            raise ValueError(f"ScoreStructured: {self.scores.shape[0]} scores for {t.shape[dim]} channels "
                             f"along dim {self.dim} of a tensor of shape {t.shape}")
        others = tuple(d for d in range(t.ndim) if d != dim)
        alive = np.flatnonzero(np.any(default_mask != 0, axis=others))
        k = count_to_prune(self.amount, alive.size)
        validate_count(k, alive.size)
        lowest = alive[np.argsort(self.scores[alive], kind="stable")[:k]]  # (1), ties: lower index first
        keep = np.ones(t.shape[dim], dtype=bool)
        keep[lowest] = False
        view = [1] * t.ndim
        view[dim] = t.shape[dim]
        return default_mask * keep.reshape(view).astype(default_mask.dtype)


def structured_from_scores(module: Module, name: str, scores: Any, amount: numbers.Real, dim: int = 0) -> Module:
    """Prune ``amount`` of the alive channels of ``module.<name>`` along ``dim`` with the smallest
    ``scores`` (1) -- e.g. ``activation_importance(...)['2']`` for the Conv ``'0'`` (``dim=0``: its
    output channels). Returns ``module``."""
    try:
        ScoreStructured.apply(module, name, amount, scores, dim)
    except ValueError as err:
        raise ValueError(f"{module._name()}.{name}: {err}") from None
    return module
