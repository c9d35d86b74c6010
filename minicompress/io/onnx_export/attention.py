"""Attention and a ViT's token modules as ONNX operators (float models).

MultiheadAttention (batch_first, query, key and value of (N, L, E), no masks, no bias_k / bias_v or zero
attention -- anything else is refused by name), the module docstring's eqs. 1-3 written out::

    q, k, v = x_q W_q^T + b_q, x_k W_k^T + b_k, x_v W_v^T + b_v      MatMul + Add   (N, L|S, H*D)
    q, k, v -> (N, H, L|S, D)                                         Reshape [0, 0, H, D] + Transpose
    a = softmax(q k^T / sqrt(D))                                      MatMul, Mul, Softmax(axis=-1)
    y = (a v -> (N, L, H*D)) W_o^T + b_o                              MatMul, Transpose, Reshape, MatMul + Add
    weights = mean over heads of a (need_weights; or a itself)       ReduceMean(axis 1)

PrependToken: Concat(Expand(token, [N, 1, D]), x) with N read from x's shape (the batch stays dynamic);
SelectToken(i): Gather(x, i, axis=1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...models.vit import PrependToken, SelectToken
from ...nn import MultiheadAttention
from .builder import Graph
from .float_ops import F32, _array


def _refuse(call: Any, why: str) -> None:
    raise ValueError(f"ONNX export: {call.name} (MultiheadAttention) {why}; exported: batch_first=True, (N, L, E) "
                     f"inputs, no masks, no add_bias_kv / add_zero_attn")


def _projection(g: Graph, x: str, w: np.ndarray, b: np.ndarray | None, hint: str) -> str:
    y = g.node("MatMul", [x, g.const(f"{hint}.weight_t", np.ascontiguousarray(w.T))], hint)
    return y if b is None else g.node("Add", [y, g.const(f"{hint}.bias", b)], hint)


def _heads(g: Graph, x: str, heads: int, head_dim: int, perm: list[int], hint: str) -> str:
    shape = g.const(f"{hint}.heads_shape", np.array([0, 0, heads, head_dim], np.int64))
    return g.node("Transpose", [g.node("Reshape", [x, shape], hint)], hint, perm=perm)


def _reduce_mean_heads(g: Graph, a: str, hint: str) -> str:
    if g.opset >= 18:
        return g.node("ReduceMean", [a, g.const(f"{hint}.axes", np.array([1], np.int64))], hint, keepdims=0)
    return g.node("ReduceMean", [a], hint, axes=[1], keepdims=0)


def multihead_attention(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m, name = call.module, call.name
    if not m.batch_first:
        _refuse(call, "has batch_first=False (inputs (L, N, E))")
    if len(xs) != 3:
        _refuse(call, f"gets {len(xs)} array inputs (masks)")
    if any(len(s) != 3 for s in call.in_shapes):
        _refuse(call, f"gets inputs {call.in_shapes}")
    if m.bias_k is not None or m.add_zero_attn:
        _refuse(call, "has add_bias_kv or add_zero_attn")
    need_weights, average = (bool(a) for a in call.args[:2]) if len(call.args) >= 2 else (True, True)
    H, D = m.num_heads, m.head_dim
    if m.in_proj_weight is not None:
        w_q, w_k, w_v = np.split(_array(m.in_proj_weight), 3)
    else:
        w_q, w_k, w_v = (_array(getattr(m, f"{k}_proj_weight")) for k in "qkv")
    b_q, b_k, b_v = (None,) * 3 if m.in_proj_bias is None else np.split(_array(m.in_proj_bias), 3)
    q = _heads(g, _projection(g, xs[0], w_q, b_q, f"{name}.q"), H, D, [0, 2, 1, 3], f"{name}.q")   # (N, H, L, D)
    k = _heads(g, _projection(g, xs[1], w_k, b_k, f"{name}.k"), H, D, [0, 2, 3, 1], f"{name}.k")   # (N, H, D, S)
    v = _heads(g, _projection(g, xs[2], w_v, b_v, f"{name}.v"), H, D, [0, 2, 1, 3], f"{name}.v")   # (N, H, S, D)
    scores = g.node("Mul", [g.node("MatMul", [q, k], name), g.const(f"{name}.scale", F32(1 / np.sqrt(D)))], name)
    a = g.node("Softmax", [scores], name, axis=-1)                                                # (N, H, L, S)
    heads = g.node("Transpose", [g.node("MatMul", [a, v], name)], name, perm=[0, 2, 1, 3])         # (N, L, H, D)
    merged = g.node("Reshape", [heads, g.const(f"{name}.merged_shape", np.array([0, 0, H * D], np.int64))], name)
    out = m.out_proj
    y = _projection(g, merged, _array(out.weight), None if out.bias is None else _array(out.bias), f"{name}.out_proj")
    if not need_weights:
        return [y]
    return [y, _reduce_mean_heads(g, a, name) if average else a]


def prepend_token(g: Graph, call: Any, xs: list[str]) -> list[str]:
    token, x = xs
    d = call.in_shapes[1][-1]
    batch = g.node("Slice", [g.node("Shape", [x], call.name), g.const(f"{call.name}.zero", np.array([0], np.int64)),
                             g.const(f"{call.name}.one", np.array([1], np.int64))], call.name)
    shape = g.node("Concat", [batch, g.const(f"{call.name}.token_shape", np.array([1, d], np.int64))], call.name, axis=0)
    return [g.node("Concat", [g.node("Expand", [token, shape], call.name), x], call.name, axis=1)]


def select_token(g: Graph, call: Any, xs: list[str]) -> list[str]:
    index = g.const(f"{call.name}.index", np.array(call.module.index, np.int64))
    return [g.node("Gather", [xs[0], index], call.name, axis=1)]


ATTENTION_EMITTERS = ((MultiheadAttention, multihead_attention), (PrependToken, prepend_token),
                      (SelectToken, select_token))
