"""Attention-head pruning: remove whole heads of every ``nn.MultiheadAttention``, physically.

Head h of an attention with H heads of width D owns (eqs. 1-3 of ``nn.layers.attention``)::

    rows    b * H * D + h * D + [0, D)  of in_proj_weight / in_proj_bias, for b = 0, 1, 2 (q, k, v)
            (or rows h * D + [0, D) of q_proj_weight, k_proj_weight, v_proj_weight)
    columns h * D + [0, D)              of out_proj.weight;   last axis of bias_k / bias_v

Removing them leaves ``num_heads = H'`` heads of the same ``head_dim`` D (the softmax scale 1 / sqrt(D) is
unchanged), an inner width H' D below ``embed_dim`` (which MultiheadAttention here accepts; PyTorch's
cannot hold it). The other heads compute exactly what they did: a removed head's contribution is its
columns of ``out_proj`` times its output, and both are gone.

Importance of head h:

- 'l1' / 'l2': ``sum |w|^p`` over the head's q, k, v rows and ``out_proj`` columns, averaged over those four
  members (Torch-Pruning's group magnitude with mean reduction, summed over the head's D channels);
- 'gate' (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): ``E_x |dL/d xi_h|`` for a gate
  ``xi_h = 1`` multiplying head h's output, ``dL/d xi_h = sum_{l, d} o_h[l, d] * dL/do_h[l, d]`` with ``o``
  the concatenated head outputs fed to ``out_proj`` — from ``head_gate_importance`` over data batches;
- ``{attention module name: scores (H,)}``.
"""
from __future__ import annotations

import copy
import numbers
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..nn.layers import MultiheadAttention
from ..nn.module import Module
from .amount import validate_amount
from .surgery import bake_pruning, keep_along, prune_count

__all__ = ["head_importance", "head_gate_importance", "plan_head_prune", "prune_heads"]


def _attentions(model: Module) -> dict[str, MultiheadAttention]:
    found = {name: m for name, m in model.named_modules() if isinstance(m, MultiheadAttention)}
    if not found:
        raise ValueError(f"prune_heads: {model._name()} has no MultiheadAttention module")
    return found


def _head_rows(m: MultiheadAttention, heads: np.ndarray) -> np.ndarray:
    """Rows of one projection (D per head) for ``heads``."""
    return (np.asarray(heads)[:, None] * m.head_dim + np.arange(m.head_dim)).ravel()


def head_importance(m: MultiheadAttention, p: float = 1) -> np.ndarray:
    """(H,) mean over the four members (q, k, v rows; out_proj columns) of ``sum |w|^p`` per head."""
    H, D = m.num_heads, m.head_dim
    if m.in_proj_weight is not None:
        projections = np.split(m.array("in_proj_weight").astype(np.float64), 3)
    else:
        projections = [m.array(n).astype(np.float64) for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
    members = [(np.abs(w) ** p).reshape(H, D, -1).sum(axis=(1, 2)) for w in projections]
    out = np.abs(m.out_proj.array("weight").astype(np.float64)) ** p                 # (E, H D)
    members.append(out.reshape(out.shape[0], H, D).sum(axis=(0, 2)))
    return sum(members) / len(members)


def head_gate_importance(model: Module, loss_fn: Any, batches: Iterable[tuple[Any, Any]]) -> dict[str, np.ndarray]:
    """Michel et al.'s ``E_x |dL/d xi_h|`` for every attention of ``model`` (module docstring), over ``batches``
    of ``(x, y)``: per sample, ``sum o_h * dL/do_h`` read at each ``out_proj`` (a forward hook keeps its input
    ``o``; the hook's backward maps the output gradient to ``dL/do = grad @ W_o``), absolute, averaged over
    samples. The model runs in its current mode; parameter gradients are restored to what they were."""
    attentions = _attentions(model)
    totals = {name: np.zeros(m.num_heads) for name, m in attentions.items()}
    saved_grads = {id(p): (p, None if p.grad is None else p.grad.copy()) for p in model.parameters()}
    count, handles, inputs = 0, [], {}

    def hooks(name: str, m: MultiheadAttention) -> tuple[Callable, Callable]:
        def forward(module: Module, args: tuple, output: Any) -> None:
            inputs.setdefault(name, []).append(args[0])

        def backward(module: Module, grad: np.ndarray) -> np.ndarray:
            o = inputs[name].pop()                                             # (N, L, H D), batch first
            d_o = grad @ module.array("weight")
            per_head = (o * d_o).reshape(o.shape[0], -1, m.num_heads, m.head_dim).sum(axis=(1, 3))   # (N, H)
            totals[name] += np.abs(per_head.astype(np.float64) * o.shape[0]).sum(axis=0)   # undo the batch mean
            return grad
        return forward, backward

    try:
        for name, m in attentions.items():
            forward, backward = hooks(name, m)
            handles.append(m.out_proj.register_forward_hook(forward, backward=backward))
        for x, y in batches:
            loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            count += len(x)
    finally:
        for h in handles:
            h.remove()
        for p, grad in saved_grads.values():
            p.grad = grad
    if count == 0:
        raise ValueError("head_gate_importance: no batches")
    return {name: total / count for name, total in totals.items()}


def _scores(name: str, m: MultiheadAttention, importance: Any) -> np.ndarray:
    if isinstance(importance, Mapping):
        if name not in importance:
            raise ValueError(f"prune_heads: no scores for {name!r}; scored: {sorted(importance)}")
        scores = np.asarray(importance[name], dtype=np.float64)
    elif importance in ("l1", "l2"):
        scores = head_importance(m, 1 if importance == "l1" else 2)
    elif callable(importance):
        scores = np.asarray(importance(name, m), dtype=np.float64)
    else:
        raise ValueError(f"prune_heads: importance must be 'l1', 'l2', {{name: scores}} (e.g. head_gate_importance) "
                         f"or a callable, got {importance!r}")
    if scores.shape != (m.num_heads,):
        raise ValueError(f"prune_heads: scores of {name!r} have shape {scores.shape}, expected ({m.num_heads},)")
    return scores


def plan_head_prune(model: Module, amount: numbers.Real, importance: Any = "l1", *,
                    ignored_layers: Iterable[str] = (), global_pruning: bool = False,
                    min_heads: int = 1) -> dict[str, np.ndarray]:
    """``{attention name: sorted removed heads}``. ``amount``: fraction (``n = H - int(H (1 - r))``) or count of
    each attention's heads; with ``global_pruning`` the heads of all attentions are ranked together (scores
    normalised per attention by their mean, as Torch-Pruning's normaliser, so layers compare)."""
    validate_amount(amount)
    if min_heads < 1:
        raise ValueError(f"prune_heads: min_heads must be >= 1, got {min_heads}")
    attentions = {n: m for n, m in _attentions(model).items() if n not in set(ignored_layers)}
    scores = {n: _scores(n, m, importance) for n, m in attentions.items()}
    if not global_pruning:
        return {n: np.sort(np.argsort(s, kind="stable")[:prune_count(s.size, amount, min_channels=min_heads)])
                for n, s in scores.items()}
    total = sum(s.size for s in scores.values())
    budget = int(amount) if isinstance(amount, numbers.Integral) else total - int(total * (1 - float(amount)))
    pool = sorted((s[h] / s.mean() if s.mean() > 0 else s[h], k, h)
                  for k, s in enumerate(scores.values()) for h in range(s.size))
    names, removed = list(scores), {n: [] for n in scores}
    for _, k, h in pool:
        if budget == 0:
            break
        if scores[names[k]].size - len(removed[names[k]]) > min_heads:
            removed[names[k]].append(h)
            budget -= 1
    return {n: np.sort(np.array(r, np.int64)) for n, r in removed.items()}


def _cut_heads(m: MultiheadAttention, removed: np.ndarray) -> None:
    H = m.num_heads
    keep = np.setdiff1d(np.arange(H), removed)
    rows = _head_rows(m, keep)                                         # in one projection
    blocks = np.concatenate([b * H * m.head_dim + rows for b in range(3)])   # in the packed q, k, v
    for name in ("in_proj_weight", "in_proj_bias"):                    # absent (None) ones are left alone
        keep_along(m, name, blocks, 0)
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        keep_along(m, name, rows, 0)
    keep_along(m.out_proj, "weight", rows, 1)
    m.out_proj.in_features = len(rows)
    for name in ("bias_k", "bias_v"):
        keep_along(m, name, rows, 2)
    m.num_heads = len(keep)


def prune_heads(model: Module, amount: numbers.Real, importance: Any = "l1", *, ignored_layers: Iterable[str] = (),
                global_pruning: bool = False, min_heads: int = 1) -> Module:
    """A new model with ``amount`` of each MultiheadAttention's heads removed (module docstring); ``model`` is
    left untouched and its pruning masks are baked into the copy. A 3-D ``attn_mask`` of shape
    (N * num_heads, L, S) must then be given for the remaining heads."""
    new = bake_pruning(copy.deepcopy(model))
    plan = plan_head_prune(new, amount, importance, ignored_layers=ignored_layers, global_pruning=global_pruning,
                           min_heads=min_heads)
    modules = dict(new.named_modules())
    for name, removed in plan.items():
        if removed.size:
            _cut_heads(modules[name], removed)
    new.clear_caches()
    return new
