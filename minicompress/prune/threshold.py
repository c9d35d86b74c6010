"""Threshold pruning: remove every weight whose magnitude is below a threshold (Han et al. 2015).

    keep  =  |t| >= tau                                                        (1)
    tau   =  threshold                      absolute, or
    tau   =  s * std(t[default_mask != 0])  Han et al.'s "quality parameter" s (sensitivity)   (2)

(1) is compared exactly: ``|t|`` widened to float64 against ``tau`` as a float64, so an entry equal to
``tau`` is kept and a float32 weight is never rounded against the threshold. The std in (2) is the
population std (ddof=0) of the **surviving** entries only. Han et al. prune, retrain, prune again;
taking the std over the survivors means the zeros of earlier rounds do not shrink it, and it is what
PyTorch's ``PruningContainer`` contract gives for free: an ``'unstructured'`` method pruned again only
sees the entries still unpruned. So pruning again with the same ``s`` keeps raising ``tau`` (the
survivors' std grows as the small ones go), and an entry removed earlier is never revived.

``global_unstructured(params, ThresholdPruning, sensitivity=s)`` takes one std over the surviving
entries of all the tensors together (one global threshold); with ``threshold=`` the global and the
per-layer results are the same. ``GradualThreshold`` raises ``s`` (or ``tau``) along Zhu & Gupta's
polynomial during training, as ``GradualPruning`` raises the sparsity.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..nn.module import Module
from .base import BasePruningMethod
from .functional import global_unstructured
from .schedule import GradualPruning

__all__ = ["ThresholdPruning", "threshold_pruning", "GradualThreshold"]


def _check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"ThresholdPruning: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class ThresholdPruning(BasePruningMethod):
    """Zero the entries with ``|t| < tau`` (1): ``threshold=tau`` or ``sensitivity=s`` for (2), one of them."""

    def __init__(self, threshold: float | None = None, sensitivity: float | None = None) -> None:
        if (threshold is None) == (sensitivity is None):
            raise ValueError(f"ThresholdPruning: give exactly one of threshold= and sensitivity=, got "
                             f"threshold={threshold!r}, sensitivity={sensitivity!r}")
        self.threshold = None if threshold is None else _check_nonnegative("threshold", threshold)
        self.sensitivity = None if sensitivity is None else _check_nonnegative("sensitivity", sensitivity)

    def tau(self, t: np.ndarray, default_mask: np.ndarray) -> float:
        """The threshold of (1) for scores ``t``: absolute, or (2) over the entries ``default_mask`` kept."""
        if self.threshold is not None:
            return self.threshold
        alive = np.asarray(t, dtype=np.float64)[default_mask != 0]
        return self.sensitivity * float(np.std(alive)) if alive.size else 0.0

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        mask = np.array(default_mask, copy=True, order="C")
        mask[np.abs(np.asarray(t, dtype=np.float64)) < self.tau(t, default_mask)] = 0
        return mask


def threshold_pruning(module: Module, name: str, threshold: float | None = None,
                      sensitivity: float | None = None, importance_scores: Any = None) -> Module:
    """Prune the still-unpruned entries of ``module.<name>`` with ``|importance| < tau`` (1)-(2); returns ``module``."""
    ThresholdPruning.apply(module, name, threshold, sensitivity, importance_scores=importance_scores)
    return module


class GradualThreshold(GradualPruning):
    """Training callback: threshold-prune ``targets`` at steps t0, t0 + dt, ..., t0 + n*dt with a value
    rising along ``polynomial_sparsity`` from ``initial`` to ``final``: the sensitivity ``s`` of (2)
    (``kind='sensitivity'``) or the absolute ``tau`` (``kind='threshold'``).

    ``scope='layer'``: each tensor's own std (2); ``'global'``: one std over all targets. Every event
    prunes only still-unpruned weights, so nothing is revived. ``history_``: ``(step, value)``.
    """

    def __init__(self, final: float, initial: float = 0.0, begin_step: int = 0, frequency: int = 100,
                 n_steps: int = 10, power: float = 3, scope: str = "layer", kind: str = "sensitivity",
                 targets: Any = None) -> None:
        if kind not in ("sensitivity", "threshold"):
            raise ValueError(f"GradualThreshold: kind must be 'sensitivity' or 'threshold', got {kind!r}")
        if scope not in ("layer", "global"):
            raise ValueError(f"GradualThreshold: scope must be 'layer' or 'global', got {scope!r}")
        super().__init__(final, initial, begin_step, frequency, n_steps, power, scope, targets)
        self.kind = kind

    @staticmethod
    def _check_range(initial: float, final: float) -> None:
        if not 0.0 <= initial <= final < math.inf:
            raise ValueError(f"GradualThreshold: need 0 <= initial <= final < inf, got {initial}, {final}")

    def prune(self, value: float) -> None:
        """One pruning event at sensitivity (or threshold) ``value``."""
        kwargs = {self.kind: value}
        if self.scope == "global":
            global_unstructured(self.targets, ThresholdPruning, **kwargs)
        else:
            for module, name in self.targets:
                ThresholdPruning.apply(module, name, **kwargs)
