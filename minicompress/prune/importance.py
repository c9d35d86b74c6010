"""Importance of the units of a channel ``Group`` (higher = more important), as Torch-Pruning computes it.

Each member of a group scores each unit; the scores are reduced over the members, then normalised::

    Conv / Linear 'out'   local[u] = sum |W[idx_u]|^p          (the unit's filters / rows, every weight)
    Conv / Linear 'in'    local[u] = sum |W[:, idx_u]|^p       (the columns that read the unit)
    BatchNorm             local[u] = sum |gamma[idx_u]|^p
    reduction  'mean': sum over members / number of members;  'sum';  'max';  'first': the root producer only
    normaliser 'mean': s / mean(s);  'sum': s / sum(s);  'max': s / max(s);  'standardization':
               (s - min) / (max - min + 1e-8);  None

``p = 2`` is the sum of *squares* (no square root), as Torch-Pruning's ``MagnitudeImportance(p=2)``;
depthwise convolutions, PReLU, GroupNorm and parameters fed into merges are members that Torch-Pruning's
magnitude importance does not score, and neither do we. Taylor (Molchanov et al. 2019) uses
``|W * dL/dW|`` summed the same way, from the gradients of the last ``backward`` (the engine's ``.grad``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..nn.kinds import layer_kind
from ..nn.random import get_rng
from .dependency import Group, Member

__all__ = ["MagnitudeImportance", "BNScaleImportance", "TaylorImportance", "RandomImportance", "group_importance"]

_REDUCTIONS = ("mean", "sum", "max", "first")
_NORMALISERS = (None, "mean", "sum", "max", "standardization")


def _is_scored(group: Group, member: Member) -> bool:
    """Torch-Pruning's scored members: Conv (groups=1) / Linear rows and columns, BatchNorm scales."""
    name, role = member
    if role == "param":
        return False
    module = group.modules[name]
    kind = layer_kind(module)
    if role in ("out", "in"):
        return kind == "linear" or (kind == "conv" and module.groups == 1)
    return kind == "batchnorm" and module.weight is not None


class _GroupImportance:
    """Shared reduction and normalisation (module docstring); subclasses give ``local(group, member)``."""

    scores_batchnorm = True

    def __init__(self, reduction: str = "mean", normalizer: str | None = "mean", bn_only: bool = False) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"importance: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if normalizer not in _NORMALISERS:
            raise ValueError(f"importance: normalizer must be one of {_NORMALISERS}, got {normalizer!r}")
        self.reduction, self.normalizer, self.bn_only = reduction, normalizer, bn_only

    def local(self, group: Group, member: Member, weight: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError

    def _arrays(self, group: Group, member: Member) -> tuple[np.ndarray, int]:
        module = group.modules[member[0]]
        return module.array("weight").astype(np.float64), 1 if member[1] == "in" else 0

    def __call__(self, group: Group) -> np.ndarray | None:
        scores = []
        for member in group.members:
            if not _is_scored(group, member) or (self.bn_only and member[1] != "channel"):
                continue
            if member[1] == "channel" and not self.scores_batchnorm:
                continue
            if self.reduction == "first" and member != group.root_member:
                continue
            weight, axis = self._arrays(group, member)
            per_index = self.local(group, member, weight, axis)                  # one value per index
            scores.append(np.array([per_index[u[member]].sum() for u in group.units]))
        if not scores:
            return None
        stacked = np.stack(scores)
        s = stacked.max(axis=0) if self.reduction == "max" else stacked.sum(axis=0)
        s = s / len(scores) if self.reduction == "mean" else s
        if self.normalizer == "mean":
            s = s / s.mean()
        elif self.normalizer == "sum":
            s = s / s.sum()
        elif self.normalizer == "max":
            s = s / s.max()
        elif self.normalizer == "standardization":
            s = (s - s.min()) / (s.max() - s.min() + 1e-8)
        return s


def _per_index(values: np.ndarray, axis: int) -> np.ndarray:
    """Sum of ``values`` over every axis but ``axis``."""
    return np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1).sum(axis=1)


class MagnitudeImportance(_GroupImportance):
    """Group ``sum |w|^p`` (module docstring); ``MagnitudeImportance(p=1)`` is ``importance='l1'``."""

    def __init__(self, p: float = 2, reduction: str = "mean", normalizer: str | None = "mean") -> None:
        super().__init__(reduction, normalizer)
        self.p = p

    def local(self, group: Group, member: Member, weight: np.ndarray, axis: int) -> np.ndarray:
        return _per_index(np.abs(weight) ** self.p, axis)


class BNScaleImportance(MagnitudeImportance):
    """Network slimming's ``|gamma|`` of the group's BatchNorms (Torch-Pruning's ``BNScaleImportance``)."""

    def __init__(self, reduction: str = "mean", normalizer: str | None = "mean") -> None:
        super().__init__(1, reduction, normalizer)
        self.bn_only = True


class TaylorImportance(_GroupImportance):
    """First-order Taylor ``sum |w * dL/dw|`` over the group's Conv / Linear rows and columns (BatchNorm is not
    scored, as in Torch-Pruning's ``TaylorImportance``), from the gradients of the last ``backward``."""

    scores_batchnorm = False

    def local(self, group: Group, member: Member, weight: np.ndarray, axis: int) -> np.ndarray:
        module = group.modules[member[0]]
        grad = module.weight.grad
        if grad is None:
            raise ValueError(f"channel_prune: importance='taylor' needs gradients: {member[0]!r}.weight.grad is "
                             f"None (run a forward and a loss backward first, without zero_grad)")
        return _per_index(np.abs(weight * grad.astype(np.float64)), axis)


class RandomImportance:
    """Uniform random scores: the baseline every criterion must beat."""

    def __init__(self, rng: Any = None) -> None:
        self.rng = get_rng(rng)

    def __call__(self, group: Group) -> np.ndarray:
        return self.rng.random(group.channels)


_NAMED: dict[str, Callable[[], Any]] = {
    "l1": lambda: MagnitudeImportance(p=1), "l2": lambda: MagnitudeImportance(p=2),
    "bn_scale": BNScaleImportance, "taylor": TaylorImportance, "random": RandomImportance,
}


def group_importance(group: Group, importance: Any) -> np.ndarray | None:
    """Scores of ``group``'s units, shape (channels,), or None when nothing in the group can be scored.

    ``importance``: 'l1', 'l2', 'bn_scale', 'taylor', 'random'; an importance object (any callable taking a
    ``Group``); or ``{module name: scores (C,)}`` of the output channels of modules whose outputs are the
    group's channels (a producer, its BatchNorm, its activation: ``activation_importance`` measures those),
    read for the first such module in call order.
    """
    if isinstance(importance, str):
        if importance not in _NAMED:
            raise ValueError(f"channel_prune: unknown importance {importance!r}; expected one of {sorted(_NAMED)}, "
                             f"an importance object or {{layer name: scores}}")
        importance = _NAMED[importance]()
    if isinstance(importance, Mapping):
        named = [n for n in group.taps if n in importance]
        if not named:
            return None
        per_unit = group.taps[named[0]]
        scores = np.asarray(importance[named[0]], dtype=np.float64)
        width = sum(len(idx) for idx in per_unit)
        if scores.shape != (width,):
            raise ValueError(f"channel_prune: scores of {named[0]!r} have shape {scores.shape}, expected ({width},)")
        scores = np.array([scores[idx].mean() for idx in per_unit])
    else:
        scores = importance(group)
        if scores is None:
            return None
        scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (group.channels,):
        raise ValueError(f"channel_prune: importance of group {group.root!r} has shape {scores.shape}, expected "
                         f"({group.channels},)")
    return scores
