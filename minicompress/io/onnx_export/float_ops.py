"""Float modules as ONNX nodes: one emitter per module class, ``emit(g, call, xs) -> [output names]``.

``call`` is the traced call (``export.Call``: name, module, input / output shapes, the non-array arguments
of a FloatFunctional op); ``xs`` the input tensor names. Each emitter writes the module's eval-mode
forward as the few ONNX operators that compute it::

    Linear            Gemm(x, W, b, transB=1) for (N, in); MatMul(x, W^T) + Add(b) for (..., in)
    Conv1d / Conv2d   Conv (pads, strides, dilations, group)
    BatchNorm1d / 2d  BatchNormalization with the running statistics
    ReLU / ReLU6 / Hardtanh / LeakyReLU / PReLU / Hardswish / Hardsigmoid / Sigmoid / Tanh / SiLU / GELU /
    Softmax / LogSoftmax   their ONNX operators (Clip for ReLU6 / Hardtanh, Sigmoid * x for SiLU,
                      GELU as 0.5 x (1 + erf(x / sqrt 2)) below opset 20)
    MaxPool / AvgPool / AdaptiveAvgPool (output 1 or dividing the input)   MaxPool / AveragePool / GlobalAveragePool
    Flatten / Unflatten / Permute   Flatten or Reshape (batch axis kept as 0) / Transpose
    Add / Mul / Cat / FloatFunctional   Add / Mul / Concat
    Dropout / Identity / QuantStub / DeQuantStub   Identity;  LayerNorm  LayerNormalization (opset 17+);  Embedding  Gather
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ... import nn
from ...quant import QuantStub
from .builder import Graph

F32 = np.float32


def _pair(v: Any, n: int) -> list[int]:
    return [int(u) for u in (v if isinstance(v, (tuple, list)) else (v,) * n)]


def _array(p: Any) -> np.ndarray:
    return np.asarray(p.data if hasattr(p, "data") else p, F32)


def linear(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m = call.module
    w, b = _array(m.weight), None if m.bias is None else _array(m.bias)
    if len(call.in_shapes[0]) == 2:
        ins = [xs[0], g.const(f"{call.name}.weight", w)] + ([g.const(f"{call.name}.bias", b)] if b is not None else [])
        return [g.node("Gemm", ins, call.name, transB=1)]
    y = g.node("MatMul", [xs[0], g.const(f"{call.name}.weight_t", np.ascontiguousarray(w.T))], call.name)
    return [y if b is None else g.node("Add", [y, g.const(f"{call.name}.bias", b)], call.name)]


def conv_pads(m: Any) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) of a convolution's ``padding`` (ints, 'valid' or 'same')."""
    nd = len(m.kernel_size)
    if m.padding == "valid":
        return [0] * 2 * nd
    if m.padding == "same":
        totals = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        return [t // 2 for t in totals] + [t - t // 2 for t in totals]
    return list(m.padding) * 2


def conv_attrs(m: Any) -> dict:
    if getattr(m, "padding_mode", "zeros") != "zeros":
        raise ValueError(f"ONNX export: {m._name()} has padding_mode={m.padding_mode!r}; only 'zeros' is exported")
    return {"kernel_shape": list(m.kernel_size), "strides": list(m.stride), "dilations": list(m.dilation),
            "pads": conv_pads(m), "group": int(m.groups)}


def conv(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m = call.module
    ins = [xs[0], g.const(f"{call.name}.weight", _array(m.weight))]
    if m.bias is not None:
        ins.append(g.const(f"{call.name}.bias", _array(m.bias)))
    return [g.node("Conv", ins, call.name, **conv_attrs(m))]


def batchnorm(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m = call.module
    if not m.track_running_stats or m.running_mean is None:
        raise ValueError(f"ONNX export: {call.name} ({m._name()}) keeps no running statistics; eval mode would use "
                         f"batch statistics, which ONNX BatchNormalization does not")
    c = m.num_features
    w = _array(m.weight) if m.weight is not None else np.ones(c, F32)
    b = _array(m.bias) if m.bias is not None else np.zeros(c, F32)
    ins = [xs[0]] + [g.const(f"{call.name}.{k}", v) for k, v in
                     (("weight", w), ("bias", b), ("running_mean", _array(m.running_mean)),
                      ("running_var", _array(m.running_var)))]
    return [g.node("BatchNormalization", ins, call.name, epsilon=float(m.eps))]


def clip(g: Graph, call: Any, xs: list[str], lo: float, hi: float) -> list[str]:
    return [g.node("Clip", [xs[0], g.const(f"{call.name}.min", F32(lo)), g.const(f"{call.name}.max", F32(hi))],
                   call.name)]


def gelu(g: Graph, call: Any, xs: list[str]) -> list[str]:
    approximate = call.module.approximate
    if g.opset >= 20:
        return [g.node("Gelu", xs, call.name, approximate=approximate)]
    x, c = xs[0], lambda k, v: g.const(f"{call.name}.{k}", F32(v))
    if approximate == "tanh":       # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = g.node("Mul", [g.node("Mul", [x, x], call.name), x], call.name)
        inner = g.node("Add", [x, g.node("Mul", [x3, c("k", 0.044715)], call.name)], call.name)
        t = g.node("Tanh", [g.node("Mul", [inner, c("sqrt_2_over_pi", np.sqrt(2 / np.pi))], call.name)], call.name)
    else:                           # 0.5 x (1 + erf(x / sqrt 2))
        t = g.node("Erf", [g.node("Div", [x, c("sqrt2", np.sqrt(2.0))], call.name)], call.name)
    half_x = g.node("Mul", [x, c("half", 0.5)], call.name)
    return [g.node("Mul", [half_x, g.node("Add", [t, c("one", 1.0)], call.name)], call.name)]


def prelu(g: Graph, call: Any, xs: list[str]) -> list[str]:
    w = _array(call.module.weight)
    rank = len(call.in_shapes[0])
    slope = w.reshape((-1,) + (1,) * (rank - 2)) if w.size > 1 and rank > 2 else w
    return [g.node("PRelu", [xs[0], g.const(f"{call.name}.weight", slope)], call.name)]


def _pool_attrs(m: Any, nd: int) -> dict:
    k, s, p = _pair(m.kernel_size, nd), _pair(m.stride, nd), _pair(m.padding, nd)
    return {"kernel_shape": k, "strides": s, "pads": p * 2, "ceil_mode": int(bool(m.ceil_mode))}


def maxpool(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m = call.module
    nd = len(call.in_shapes[0]) - 2
    if getattr(m, "return_indices", False):
        raise ValueError(f"ONNX export: {call.name} ({m._name()}) returns indices; not exported")
    return [g.node("MaxPool", xs, call.name, dilations=_pair(m.dilation, nd), **_pool_attrs(m, nd))]


def avgpool(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m = call.module
    if getattr(m, "divisor_override", None) is not None:
        raise ValueError(f"ONNX export: {call.name} ({m._name()}) has divisor_override; ONNX AveragePool has none")
    nd = len(call.in_shapes[0]) - 2
    return [g.node("AveragePool", xs, call.name, count_include_pad=int(bool(m.count_include_pad)),
                   **_pool_attrs(m, nd))]


def adaptive_pool_kind(call: Any) -> tuple[str, list[int]]:
    """('global', []) for an output of size 1, ('window', kernel) when the output divides the input."""
    ins, outs = call.in_shapes[0][2:], call.out_shapes[0][2:]
    if all(o == 1 for o in outs):
        return "global", []
    if all(i % o == 0 for i, o in zip(ins, outs)):
        return "window", [i // o for i, o in zip(ins, outs)]
    raise ValueError(f"ONNX export: {call.name} ({call.module._name()}) pools {tuple(ins)} to {tuple(outs)}: only "
                     f"an output of 1 or one dividing the input is exported (no ONNX adaptive pooling)")


def adaptive_avgpool(g: Graph, call: Any, xs: list[str]) -> list[str]:
    kind, kernel = adaptive_pool_kind(call)
    if kind == "global":
        return [g.node("GlobalAveragePool", xs, call.name)]
    return [g.node("AveragePool", xs, call.name, kernel_shape=kernel, strides=kernel)]


def reshape_to(g: Graph, call: Any, x: str) -> str:
    """Reshape to the traced output shape, keeping the batch axis dynamic (0 = copy the input's)."""
    shape = [0] + list(call.out_shapes[0][1:])
    return g.node("Reshape", [x, g.const(f"{call.name}.shape", np.array(shape, np.int64))], call.name)


def flatten(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m, rank = call.module, len(call.in_shapes[0])
    start, end = m.start_dim % rank, m.end_dim % rank
    if start == 0:
        raise ValueError(f"ONNX export: {call.name} flattens the batch axis (start_dim=0); the batch stays dynamic")
    if end == rank - 1:
        return [g.node("Flatten", xs, call.name, axis=start)] if start == 1 or rank == 2 else [reshape_to(g, call, xs[0])]
    return [reshape_to(g, call, xs[0])]


def unflatten(g: Graph, call: Any, xs: list[str]) -> list[str]:
    if call.module.dim % len(call.in_shapes[0]) == 0:
        raise ValueError(f"ONNX export: {call.name} unflattens the batch axis; the batch stays dynamic")
    return [reshape_to(g, call, xs[0])]


def merge(op: str) -> Callable:
    def emit(g: Graph, call: Any, xs: list[str]) -> list[str]:
        y = xs[0]
        for x in xs[1:]:
            y = g.node(op, [y, x], call.name)
        return [y]
    return emit


def float_functional(g: Graph, call: Any, xs: list[str]) -> list[str]:
    op, extra = call.args[0], call.args[1:]
    if op == "cat":
        return [g.node("Concat", xs, call.name, axis=int(extra[-1]))]
    if op in ("add_scalar", "mul_scalar"):
        c = g.const(f"{call.name}.scalar", F32(extra[-1]))
        return [g.node("Add" if op == "add_scalar" else "Mul", [xs[0], c], call.name)]
    y = g.node("Mul" if op == "mul" else "Add", xs, call.name)
    return [g.node("Relu", [y], call.name) if op == "add_relu" else y]


def layer_norm(g: Graph, call: Any, xs: list[str]) -> list[str]:
    m = call.module
    if g.opset < 17:
        raise ValueError(f"ONNX export: {call.name} (LayerNorm) needs opset 17 (LayerNormalization), got {g.opset}")
    shape = m.normalized_shape
    w = _array(m.weight) if m.weight is not None else np.ones(shape, F32)
    ins = [xs[0], g.const(f"{call.name}.weight", w)]
    if getattr(m, "bias", None) is not None:
        ins.append(g.const(f"{call.name}.bias", _array(m.bias)))
    return [g.node("LayerNormalization", ins, call.name, axis=-len(shape), epsilon=float(m.eps))]


def embedding(g: Graph, call: Any, xs: list[str]) -> list[str]:
    if call.module.max_norm is not None:
        raise ValueError(f"ONNX export: {call.name} (Embedding) has max_norm, which renormalises rows in forward")
    return [g.node("Gather", [g.const(f"{call.name}.weight", _array(call.module.weight)), xs[0]], call.name)]


def unary(op: str, **attrs: Any) -> Callable:
    return lambda g, call, xs: [g.node(op, xs, call.name, **attrs)]


def silu(g: Graph, call: Any, xs: list[str]) -> list[str]:
    return [g.node("Mul", [xs[0], g.node("Sigmoid", xs, call.name)], call.name)]


def softmax(op: str) -> Callable:
    def emit(g: Graph, call: Any, xs: list[str]) -> list[str]:
        dim = call.module.dim
        if dim is None:
            raise ValueError(f"ONNX export: {call.name} ({op}) has dim=None (PyTorch's implicit axis); give a dim")
        return [g.node(op, xs, call.name, axis=int(dim))]
    return emit


# Most specific classes first: ReLU6 is a Hardtanh, AdaptiveAvgPool1d an AdaptiveAvgPool2d.
FLOAT_EMITTERS: tuple[tuple[type, Callable], ...] = (
    (nn.Linear, linear), (nn.Conv1d, conv), (nn.Conv2d, conv),
    (nn.BatchNorm1d, batchnorm), (nn.BatchNorm2d, batchnorm),
    (nn.ReLU, unary("Relu")), (nn.ReLU6, lambda g, c, xs: clip(g, c, xs, 0.0, 6.0)),
    (nn.Hardtanh, lambda g, c, xs: clip(g, c, xs, c.module.min_val, c.module.max_val)),
    (nn.LeakyReLU, lambda g, c, xs: [g.node("LeakyRelu", xs, c.name, alpha=float(c.module.negative_slope))]),
    (nn.PReLU, prelu), (nn.Hardswish, unary("HardSwish")),
    (nn.Hardsigmoid, unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5)),
    (nn.Sigmoid, unary("Sigmoid")), (nn.Tanh, unary("Tanh")), (nn.SiLU, silu), (nn.GELU, gelu),
    (nn.Softmax, softmax("Softmax")), (nn.LogSoftmax, softmax("LogSoftmax")),
    (nn.MaxPool1d, maxpool), (nn.MaxPool2d, maxpool), (nn.AvgPool1d, avgpool), (nn.AvgPool2d, avgpool),
    (nn.AdaptiveAvgPool1d, adaptive_avgpool), (nn.AdaptiveAvgPool2d, adaptive_avgpool),
    (nn.Flatten, flatten), (nn.Unflatten, unflatten),
    (nn.Permute, lambda g, c, xs: [g.node("Transpose", xs, c.name, perm=[int(d) for d in c.module.dims])]),
    (nn.Dropout, unary("Identity")), (nn.Identity, unary("Identity")), (QuantStub, unary("Identity")),
    (nn.Add, merge("Add")), (nn.Mul, merge("Mul")),
    (nn.Cat, lambda g, c, xs: [g.node("Concat", xs, c.name, axis=int(c.module.dim))]),
    (nn.FloatFunctional, float_functional), (nn.LayerNorm, layer_norm), (nn.Embedding, embedding),
)
