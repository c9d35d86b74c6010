"""Channel surgery: remove whole channels so the model is physically smaller, not just sparse.

For every group found by ``graph.channel_groups`` (producer -> channel-wise layers -> consumer),
with ``keep`` the surviving channel indices (sorted, so channel order is preserved)::

    producer   weight[keep], bias[keep]                     (Linear rows / conv filters)
    BatchNorm  weight, bias, running_mean, running_var [idx] (idx = keep expanded, see below)
    depthwise  weight[keep], bias[keep], groups = len(keep)
    consumer   weight[:, idx]                               (Linear columns / conv input channels)

After a ``Flatten`` of (C, H, W), channel c owns the consumer's input columns c*HW ... c*HW + HW - 1,
so ``idx = (keep[:, None] * HW + arange(HW)).ravel()``; without a Flatten ``idx = keep``.

If the removed channels were already zero where the consumer reads them (their weights, bias and
BatchNorm shift masked, and ``f(0) = 0`` for the activations on the way), the smaller model
computes exactly what the masked one did.
"""
from __future__ import annotations

import copy
import numbers
from typing import Any, Callable

import numpy as np

from ..nn.kinds import layer_kind
from ..nn.module import Module, Parameter
from .amount import count_to_prune, validate_amount
from .functional import remove
from .graph import Group, channel_groups, trace
from .base import pruned_tensors

__all__ = ["bake_pruning", "channel_importance", "plan_channel_prune", "channel_prune"]


def bake_pruning(model: Module) -> Module:
    """Make every pruning permanent in place (``remove`` on every pruned tensor); returns ``model``."""
    for module in model.modules():
        for name in pruned_tensors(module):
            remove(module, name)
    return model


def _expand(keep: np.ndarray, block: int) -> np.ndarray:
    """Indices of the ``block``-wide feature blocks of channels ``keep``."""
    return (keep[:, None] * block + np.arange(block)).ravel()


def _is_bn(module: Module) -> bool:
    return layer_kind(module) == "batchnorm" and module.weight is not None


def channel_importance(group: Group, importance: str | Callable[[Group], np.ndarray]) -> np.ndarray:
    """Score of each output channel of ``group.producer`` (higher = more important).   -> (C,)

    'l1' / 'l2': norm of the producer's filter (weight[c]); 'bn_scale': |gamma| of the first
    BatchNorm after it (network slimming; averaged over a channel's block after a Flatten);
    a callable gets the ``Group`` and returns the scores.
    """
    producer = group.producer.module
    if callable(importance):
        scores = np.asarray(importance(group), dtype=np.float64)
    elif importance in ("l1", "l2"):
        w = np.abs(producer.weight.data.astype(np.float64)).reshape(group.channels, -1)
        scores = w.sum(axis=1) if importance == "l1" else np.sqrt((w * w).sum(axis=1))
    elif importance == "bn_scale":
        bns = [(n, s) for n, s in group.followers if _is_bn(n.module)]
        if not bns:
            raise ValueError(f"channel_prune: importance='bn_scale' needs a BatchNorm with a scale after "
                             f"{group.producer.name!r}; pass layers=[...] to leave it out")
        node, block = bns[0]
        scores = np.abs(node.module.weight.data.astype(np.float64)).reshape(group.channels, block).mean(axis=1)
    else:
        raise ValueError(f"channel_prune: unknown importance {importance!r}; expected 'l1', 'l2', 'bn_scale' "
                         f"or a callable")
    if scores.shape != (group.channels,):
        raise ValueError(f"channel_prune: importance of {group.producer.name!r} has shape {scores.shape}, "
                         f"expected ({group.channels},)")
    return scores


def _select_groups(groups: list[Group], skipped: dict[str, str], layers: Any) -> list[Group]:
    if layers is None:
        return groups
    by_name = {g.producer.name: g for g in groups}
    chosen = []
    for name in layers:
        if name in skipped:
            raise ValueError(f"channel_prune: cannot prune the outputs of {name!r}: {skipped[name]}")
        if name not in by_name:
            raise ValueError(f"channel_prune: {name!r} is not a Linear/conv layer of the model; prunable: "
                             f"{sorted(by_name)}")
        chosen.append(by_name[name])
    return chosen


def _plan(work: Module, example_input: np.ndarray, amount: numbers.Real, importance: str | Callable,
          layers: Any, scope: str, min_channels: int) -> tuple[dict[str, np.ndarray], list[Group]]:
    """Kept channels per producer name, and the groups to cut, for an already baked ``work`` model."""
    validate_amount(amount)
    if min_channels < 1:
        raise ValueError(f"channel_prune: min_channels must be >= 1, got {min_channels}")
    groups, skipped = channel_groups(trace(work, example_input))
    if importance == "bn_scale" and layers is None:  # network slimming cuts only BatchNorm-ed layers
        groups = [g for g in groups if any(_is_bn(n.module) for n, _ in g.followers)]
    groups = _select_groups(groups, skipped, layers)
    scores = {g.producer.name: channel_importance(g, importance) for g in groups}
    removed: dict[str, list[int]] = {name: [] for name in scores}
    if scope == "layer":
        for name, s in scores.items():
            k = min(count_to_prune(amount, s.size), s.size - min_channels)
            removed[name] = list(np.argsort(s, kind="stable")[:max(k, 0)])
    elif scope == "global":
        pool = [(s[c], i, c, name) for i, (name, s) in enumerate(scores.items()) for c in range(s.size)]
        budget = count_to_prune(amount, len(pool))
        for _, _, c, name in sorted(pool):
            if budget == 0:
                break
            if scores[name].size - len(removed[name]) > min_channels:
                removed[name].append(c)
                budget -= 1
    else:
        raise ValueError(f"channel_prune: scope must be 'layer' or 'global', got {scope!r}")
    keep = {name: np.setdiff1d(np.arange(scores[name].size), removed[name]) for name in scores}
    return keep, groups


def plan_channel_prune(model: Module, example_input: np.ndarray, amount: numbers.Real,
                       importance: str | Callable = "l1", layers: Any = None, scope: str = "layer",
                       min_channels: int = 1) -> dict[str, np.ndarray]:
    """Which output channels of each prunable layer survive: ``{layer name: sorted kept indices}``.

    ``amount`` is the fraction (float) or number (int) of channels removed from each layer
    (``scope='layer'``), or from all of them ranked together (``scope='global'``, for comparable
    scores such as 'bn_scale'); every layer keeps at least ``min_channels``. Channels of lowest
    importance go first (ties: lower index first). With 'bn_scale' and no ``layers``, only layers
    followed by a BatchNorm are pruned. ``example_input`` must be batched: (N, C, ...). The model is
    not changed.
    """
    work = bake_pruning(copy.deepcopy(model))
    return _plan(work, example_input, amount, importance, layers, scope, min_channels)[0]


def _slice_params(module: Module, idx: np.ndarray, axis: int, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, Parameter):
            value.data = np.ascontiguousarray(np.take(value.data, idx, axis=axis))
            value.grad = None
        elif value is not None:       # a buffer (BatchNorm running statistics)
            setattr(module, name, np.ascontiguousarray(np.take(value, idx, axis=axis)))


def _set(module: Module, **sizes: int) -> None:
    for attr, value in sizes.items():
        if hasattr(module, attr):
            setattr(module, attr, value)


def _cut(group: Group, keep: np.ndarray) -> None:
    producer, n = group.producer.module, len(keep)
    _slice_params(producer, keep, 0, ("weight", "bias"))
    _set(producer, out_channels=n, out_features=n)
    for node, block in group.followers:
        m, idx = node.module, _expand(keep, block)
        _slice_params(m, idx, 0, ("weight", "bias", "running_mean", "running_var"))
        _set(m, num_features=len(idx), in_channels=len(idx), out_channels=len(idx), groups=len(idx))
    consumer, idx = group.consumer.module, _expand(keep, group.spatial)
    _slice_params(consumer, idx, 1, ("weight",))
    _set(consumer, in_channels=len(idx), in_features=len(idx))


def channel_prune(model: Module, example_input: np.ndarray, amount: numbers.Real,
                  importance: str | Callable = "l1", layers: Any = None, scope: str = "layer",
                  min_channels: int = 1) -> Module:
    """A new, physically smaller dense model with ``amount`` of each prunable layer's channels removed.

    ``model`` is traced once on ``example_input`` (see ``graph``) and left untouched. Pruning masks
    already on ``model`` are baked in (the new model has plain Parameters; its remaining zeros stay).
    The classifier (a layer whose outputs are the model's outputs) keeps its width. Arguments as
    ``plan_channel_prune``; ``layers`` restricts pruning to those layer names.
    """
    new = bake_pruning(copy.deepcopy(model))
    keep, groups = _plan(new, example_input, amount, importance, layers, scope, min_channels)
    for group in groups:
        _cut(group, keep[group.producer.name])
    new.clear_caches()
    trace(new, example_input)  # the smaller model must still run on the same input
    return new
