"""Channel surgery: remove whole channels so the model is physically smaller, not just sparse.

The model is traced once (``dependency.dependency_graph``); each prunable ``Group`` loses its units of lowest
importance (``importance.group_importance``), and every member of the group loses the same units::

    Conv / Linear 'out'       weight[keep], bias[keep]            out_channels / out_features
    Conv / Linear 'in'        weight[:, keep]                     in_channels / in_features
    depthwise conv 'channel'  weight[keep], bias[keep]            in_channels = out_channels = groups
    BatchNorm 'channel'       weight, bias, running_mean, running_var [keep]
    PReLU / GroupNorm         weight[keep] (and bias); GroupNorm loses whole groups (num_groups)
    Embedding 'out'           weight[:, keep]                     embedding_dim
    parameter 'param'         p[..., keep] along its channel axis (a ViT's class token / position embedding)
    RNN / LSTM / GRU 'hidden' the kept units' gate rows of weight_ih_l* / weight_hh_l* / biases, their columns
                              of weight_hh_l* and of weight_ih_l{k>0} (each direction's block)   hidden_size
    RNN / LSTM / GRU 'in'     weight_ih_l0[:, keep] (and _reverse)                               input_size

How many units go, per group of C (Torch-Pruning's rules, so that both give the same widths)::

    ratio r (float)   n = C - int(C * (1 - r)),  r = min(r, max_ratio)
    count k (int)     n = k
    round_to R        the kept C - n rounded down to a multiple of R; if that is 0, nothing is removed
    always            C - n >= min_channels (Torch-Pruning instead leaves a group whole when every
                      channel would go, e.g. at r = 1.0)

Local ranking (default) cuts each group on its own; ``global_pruning=True`` ranks every group's
(normalised) scores together with ``n = total - int(total * (1 - r))`` and cuts the lowest, within each
group's ``max_ratio`` and ``min_channels``. Ties go to the lower unit index. Output layers (the model's
outputs) and ``ignored_layers`` keep their width.

If the removed units were zero where they are read (their consumers' columns masked), the smaller
model computes exactly what the masked one did: ``tests/prune/test_prune_dependency.py`` checks that on
ResNets, MobileNetV2 and a ViT.
"""
from __future__ import annotations

import copy
import numbers
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..nn.graph import trace_graph
from ..nn.kinds import layer_kind
from ..nn.layers import Embedding, GroupNorm, PReLU
from ..nn.layers.rnn import RNNBase
from ..nn.layers.rnn_steps import GATES
from ..nn.module import Module, Parameter
from .amount import validate_amount
from .base import pruned_tensors
from .dependency import SOURCES, DependencyGraph, Group, Member, dependency_graph
from .functional import remove
from .importance import group_importance

__all__ = ["bake_pruning", "plan_channel_prune", "channel_prune", "apply_plan", "prune_count"]

Plan = list[tuple[Group, np.ndarray]]          # (group, the units removed from it)


def bake_pruning(model: Module) -> Module:
    """Make every pruning permanent in place (``remove`` on every pruned tensor); returns ``model``."""
    for module in model.modules():
        for name in pruned_tensors(module):
            remove(module, name)
    return model


def prune_count(channels: int, amount: numbers.Real, *, round_to: int | None = None, max_ratio: float = 1.0,
                min_channels: int = 1) -> int:
    """Units to remove from a group of ``channels`` (module docstring, Torch-Pruning's arithmetic)."""
    if isinstance(amount, numbers.Integral):
        n = int(amount)
    else:
        n = channels - int(channels * (1 - min(float(amount), max_ratio)))
    n = min(n, int(channels * max_ratio)) if max_ratio < 1.0 else n
    if round_to and n > 0:
        kept = channels - n
        kept -= kept % round_to
        n = channels - kept if kept > 0 else 0     # nothing left: the group keeps its width (Torch-Pruning)
    return max(0, min(n, channels - min_channels))


def _check_options(amount: Any, round_to: Any, max_ratio: float, min_channels: int, ratios: Any) -> None:
    validate_amount(amount)
    if round_to is not None and (not isinstance(round_to, numbers.Integral) or round_to < 1):
        raise ValueError(f"channel_prune: round_to must be a positive int or None, got {round_to!r}")
    if not 0.0 <= max_ratio <= 1.0:
        raise ValueError(f"channel_prune: max_ratio must be in [0, 1], got {max_ratio}")
    if min_channels < 1:
        raise ValueError(f"channel_prune: min_channels must be >= 1, got {min_channels}")
    for name, r in (ratios or {}).items():
        validate_amount(r)


def _select(dg: DependencyGraph, layers: Iterable[str] | None) -> list[Group]:
    groups = dg.prunable()
    if layers is None:
        return groups
    by_producer = {n: g for g in dg.groups for n, role in g.members if role in SOURCES}
    chosen = []
    for name in layers:
        if name not in by_producer:
            raise ValueError(f"channel_prune: {name!r} is not a Linear/conv layer of the traced model; "
                             f"prunable: {sorted(n for g in groups for n, r in g.members if r in SOURCES)}")
        group = by_producer[name]
        if group.blocked is not None:
            raise ValueError(f"channel_prune: cannot prune the outputs of {name!r}: {group.blocked}")
        if group not in chosen:
            chosen.append(group)
    return chosen


def _ratio(group: Group, amount: numbers.Real, ratios: Mapping[str, numbers.Real] | None) -> numbers.Real:
    for name, role in group.members:
        if role in SOURCES and ratios and name in ratios:
            return ratios[name]
    return amount


def plan(dg: DependencyGraph, amount: numbers.Real, importance: Any = "l1", *, layers: Iterable[str] | None = None,
         ratios: Mapping[str, numbers.Real] | None = None, round_to: int | None = None,
         global_pruning: bool = False, max_ratio: float = 1.0, min_channels: int = 1) -> Plan:
    """The units each group loses (module docstring); groups nothing can score are left whole."""
    _check_options(amount, round_to, max_ratio, min_channels, ratios)
    scored = []
    for group in _select(dg, layers):
        scores = group_importance(group, importance)
        if scores is not None:
            scored.append((group, scores))
        elif layers is not None:
            raise ValueError(f"channel_prune: importance {importance!r} scores nothing in the group of "
                             f"{group.root!r} (members {group.members}); 'bn_scale' needs a BatchNorm")
    if not global_pruning:
        out = []
        for group, scores in scored:
            n = prune_count(group.channels, _ratio(group, amount, ratios), round_to=round_to, max_ratio=max_ratio,
                            min_channels=min_channels)
            out.append((group, np.sort(np.argsort(scores, kind="stable")[:n])))
        return out
    total = sum(g.channels for g, _ in scored)
    budget = int(amount) if isinstance(amount, numbers.Integral) else total - int(total * (1 - float(amount)))
    caps = [prune_count(g.channels, max_ratio, max_ratio=max_ratio, min_channels=min_channels) for g, _ in scored]
    pool = sorted((s[u], k, u) for k, (_, s) in enumerate(scored) for u in range(s.size))
    removed: list[list[int]] = [[] for _ in scored]
    for _, k, u in pool:
        if budget == 0:
            break
        if len(removed[k]) < caps[k]:
            removed[k].append(u)
            budget -= 1
    out = []
    for (group, scores), units in zip(scored, removed):
        n = len(units)
        if round_to and n:
            n = prune_count(group.channels, n, round_to=round_to, min_channels=min_channels)
            units = list(np.argsort(scores, kind="stable")[:n])
        out.append((group, np.sort(np.array(units, np.int64))))
    return out


# -- surgery ------------------------------------------------------------------------------------------------
def keep_along(owner: Module, name: str, keep: np.ndarray, axis: int) -> None:
    """Keep indices ``keep`` along ``axis`` of ``owner``'s parameter or buffer ``name`` (absent: nothing)."""
    value = getattr(owner, name, None)
    if isinstance(value, Parameter):
        value.data = np.ascontiguousarray(np.take(value.data, keep, axis=axis))
        value.grad = None
    elif value is not None:                  # a buffer (BatchNorm running statistics)
        setattr(owner, name, np.ascontiguousarray(np.take(value, keep, axis=axis)))


def _cut_recurrent(module: RNNBase, role: str, keep: np.ndarray) -> None:
    """Hidden units or input features of a recurrent layer (module docstring)."""
    H, D = module.hidden_size, 2 if module.bidirectional else 1
    suffixes = [""] + (["_reverse"] if D == 2 else [])
    if role == "in":
        for sfx in suffixes:
            keep_along(module, f"weight_ih_l0{sfx}", keep, 1)
        module.input_size = len(keep)
        return
    rows = np.concatenate([g * H + keep for g in range(GATES[module.mode])])
    inputs = np.concatenate([d * H + keep for d in range(D)])
    for layer in range(module.num_layers):
        for sfx in suffixes:
            keep_along(module, f"weight_ih_l{layer}{sfx}", rows, 0)
            if layer > 0:
                keep_along(module, f"weight_ih_l{layer}{sfx}", inputs, 1)
            keep_along(module, f"weight_hh_l{layer}{sfx}", rows, 0)
            keep_along(module, f"weight_hh_l{layer}{sfx}", keep, 1)
            for b in ("bias_ih", "bias_hh"):
                keep_along(module, f"{b}_l{layer}{sfx}", rows, 0)
    module.hidden_size = len(keep)


def _width(module: Module, role: str) -> int:
    if isinstance(module, RNNBase):
        return module.hidden_size if role == "hidden" else module.input_size
    w = module.weight.data
    if role == "in":
        return w.shape[1]
    return w.shape[1] if isinstance(module, Embedding) else w.shape[0]


def _cut_member(module: Module, role: str, keep: np.ndarray) -> None:
    """Keep indices ``keep`` of one member (table in the module docstring)."""
    n, kind = len(keep), layer_kind(module)
    if isinstance(module, RNNBase):
        _cut_recurrent(module, role, keep)
    elif role == "in":
        keep_along(module, "weight", keep, 1)
        if kind == "linear":
            module.in_features = n
        else:
            module.in_channels = n
    elif role == "out" and isinstance(module, Embedding):
        keep_along(module, "weight", keep, 1)
        module.embedding_dim = n
    elif role == "out":
        keep_along(module, "weight", keep, 0)
        keep_along(module, "bias", keep, 0)
        if kind == "linear":
            module.out_features = n
        else:
            module.out_channels = n
    elif kind == "conv":                      # depthwise
        keep_along(module, "weight", keep, 0)
        keep_along(module, "bias", keep, 0)
        module.in_channels = module.out_channels = module.groups = n
    elif kind == "batchnorm":
        for name in ("weight", "bias", "running_mean", "running_var"):
            keep_along(module, name, keep, 0)
        module.num_features = n
    elif isinstance(module, PReLU):
        keep_along(module, "weight", keep, 0)
        module.num_parameters = n
    elif isinstance(module, GroupNorm):
        size = module.num_channels // module.num_groups
        for name in ("weight", "bias"):
            keep_along(module, name, keep, 0)
        module.num_channels, module.num_groups = n, n // size
    else:
        raise ValueError(f"channel_prune: no surgery for {type(module).__name__} as {role!r}")


def apply_plan(model: Module, chosen: Plan) -> Module:
    """Remove the planned units from ``model`` in place (every member of each group); returns ``model``."""
    removed: dict[Member, set[int]] = {}
    owners: dict[Member, tuple[Module, int]] = {}
    for group, units in chosen:
        for member in group.members:
            removed.setdefault(member, set()).update(group.indices(member, units).tolist())
            if member[1] == "param":
                owners[member] = (group.modules.get(member[0]), group.param_axes[member[0]])
    modules = dict(model.named_modules())
    for (name, role), gone in removed.items():
        if not gone:
            continue
        if role == "param":
            owner_name, _, attr = name.rpartition(".")
            owner, axis = modules[owner_name], owners[(name, role)][1]
            size = getattr(owner, attr).data.shape[axis]
            keep_along(owner, attr, np.setdiff1d(np.arange(size), sorted(gone)), axis)
            continue
        module = modules[name]
        _cut_member(module, role, np.setdiff1d(np.arange(_width(module, role)), sorted(gone)))
    return model


def _kept(chosen: Plan) -> dict[str, np.ndarray]:
    kept = {}
    for group, units in chosen:
        for name, role in group.members:
            if role in SOURCES:
                width = sum(len(u[(name, role)]) for u in group.units)
                kept[name] = np.setdiff1d(np.arange(width), group.indices((name, role), units))
    return kept


def plan_channel_prune(model: Module, example_input: Any, amount: numbers.Real, importance: Any = "l1", *,
                       layers: Iterable[str] | None = None, ignored_layers: Iterable[str] = (),
                       ratios: Mapping[str, numbers.Real] | None = None, round_to: int | None = None,
                       global_pruning: bool = False, max_ratio: float = 1.0,
                       min_channels: int = 1) -> dict[str, np.ndarray]:
    """Which output channels of each pruned producer survive: ``{layer name: sorted kept indices}``.

    Arguments as ``channel_prune``; the model is not changed.
    """
    work = bake_pruning(copy.deepcopy(model))
    dg = dependency_graph(work, example_input, ignored_layers=ignored_layers)
    return _kept(plan(dg, amount, importance, layers=layers, ratios=ratios, round_to=round_to,
                      global_pruning=global_pruning, max_ratio=max_ratio, min_channels=min_channels))


def channel_prune(model: Module, example_input: Any, amount: numbers.Real, importance: str | Callable | Mapping = "l1",
                  *, layers: Iterable[str] | None = None, ignored_layers: Iterable[str] = (),
                  ratios: Mapping[str, numbers.Real] | None = None, round_to: int | None = None,
                  global_pruning: bool = False, max_ratio: float = 1.0, min_channels: int = 1) -> Module:
    """A new, physically smaller dense model with ``amount`` of each dependency group's channels removed.

    Parameters
    ----------
    model, example_input
        Traced once (``nn.trace_graph``; a batched input) and left untouched. Pruning masks already on
        ``model`` are baked in (the new model has plain Parameters; its remaining zeros stay).
    amount
        Fraction (float, Torch-Pruning's ``pruning_ratio``) or count (int) of each group's channels.
    importance
        'l1', 'l2' (``MagnitudeImportance(p=1 | 2)``, group mean, mean-normalised), 'bn_scale', 'taylor'
        (needs ``.grad`` from a backward), 'random', an importance object, or ``{layer: scores}``.
    layers, ignored_layers, ratios
        Prune only the groups of these producers; keep the width of these layers; per-layer amounts.
    round_to, global_pruning, max_ratio, min_channels
        Module docstring.
    """
    new = bake_pruning(copy.deepcopy(model))
    dg = dependency_graph(new, example_input, ignored_layers=ignored_layers)
    apply_plan(new, plan(dg, amount, importance, layers=layers, ratios=ratios, round_to=round_to,
                         global_pruning=global_pruning, max_ratio=max_ratio, min_channels=min_channels))
    new.clear_caches()
    trace_graph(new, example_input)              # the smaller model must still run on the same input
    return new
