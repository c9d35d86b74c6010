"""Conv, Gemm, MatMul, BatchNormalization, LayerNormalization, MaxPool, AveragePool, GlobalAveragePool.

Weights come from initializers (constants); a layer whose weight is computed from the data is refused.
"""
from __future__ import annotations

import math

import numpy as np

from ....nn import layers as L
from ....nn.init import skip_init
from ..builder import Builder, refuse
from ..reader import OnnxNode
from ._weights import set_tensor


def weight_name(node: OnnxNode, k: int = 1) -> str | None:
    """The module name a layer takes from its weight initializer (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``)."""
    name = node.input(k)
    return name[: -len(".weight")] if name.endswith(".weight") else None


def _pads(b: Builder, node: OnnxNode, kernel: list[int], strides: list[int], dilations: list[int]) -> tuple[int, ...]:
    """Symmetric padding per spatial axis from ``pads`` / ``auto_pad`` (asymmetric padding is refused)."""
    n = len(kernel)
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        size = b.shapes(node, 0)[0][2:]
        pads = []
        for i in range(n):
            out = math.ceil(size[i] / strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size[i], 0)
            pads.append((total // 2, total - total // 2) if auto == "SAME_UPPER" else (total - total // 2, total // 2))
        begin, end = [p[0] for p in pads], [p[1] for p in pads]
    elif auto == "VALID":
        begin = end = [0] * n
    else:
        pads = node.attr("pads", [0] * 2 * n)
        begin, end = pads[:n], pads[n:]
    if list(begin) != list(end):
        raise refuse(node, f"asymmetric padding (begin {list(begin)}, end {list(end)}) is not supported")
    return tuple(int(p) for p in begin)


def conv(b: Builder, node: OnnxNode) -> None:
    x = b.data(node, 0)
    w = b.static(node, 1, "weight")
    bias = b.static(node, 2, "bias")
    n = w.ndim - 2
    if n not in (1, 2):
        raise refuse(node, f"only 1-D and 2-D convolutions are supported, the weight has shape {w.shape}")
    kernel = list(node.attr("kernel_shape", w.shape[2:]))
    strides, dilations = list(node.attr("strides", [1] * n)), list(node.attr("dilations", [1] * n))
    groups = int(node.attr("group", 1))
    padding = _pads(b, node, kernel, strides, dilations)
    cls = L.Conv2d if n == 2 else L.Conv1d
    with skip_init():
        module = cls(w.shape[1] * groups, w.shape[0], tuple(kernel), tuple(strides), padding, tuple(dilations),
                     groups, bias=bias is not None)
    set_tensor(module, "weight", w)
    if bias is not None:
        set_tensor(module, "bias", bias)
    b.emit(node, module, [x], weight_name(node))


def _linear(b: Builder, node: OnnxNode, x: str, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """y = x W^T + b with W (out, in)."""
    with skip_init():
        module = L.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    set_tensor(module, "weight", weight)
    if bias is not None:
        set_tensor(module, "bias", bias)
    b.emit(node, module, [x], weight_name(node))


def gemm(b: Builder, node: OnnxNode) -> None:
    """Y = alpha A B' + beta C (B' = B or B^T) with constant B, C: a Linear of weight alpha B'^T."""
    if node.attr("transA", 0):
        raise refuse(node, "transA=1 is not supported (A must be (N, in))")
    x = b.data(node, 0)
    if not b.is_const(node, 1):
        raise refuse(node, "B must be a constant (a weight); a product of two activations is MatMul")
    w = b.static(node, 1, "B")
    w = (w if node.attr("transB", 0) else w.T) * np.float32(node.attr("alpha", 1.0))   # (out, in)
    c = b.static(node, 2, "C")
    bias = None if c is None else np.broadcast_to(c * np.float32(node.attr("beta", 1.0)), (w.shape[0],))
    _linear(b, node, x, w, bias)


def matmul(b: Builder, node: OnnxNode) -> None:
    """A @ B: a Linear when B is a constant matrix (weight B^T), else nn.MatMul of two activations."""
    if b.is_const(node, 1):
        w = b.static(node, 1, "B")
        if w.ndim != 2:
            raise refuse(node, f"a constant B must be a matrix, it has shape {w.shape}")
        _linear(b, node, b.data(node, 0), w.T, None)
    elif b.is_const(node, 0):
        raise refuse(node, "a constant A times an activation B is not supported")
    else:
        b.emit(node, L.MatMul(), [b.data(node, 0), b.data(node, 1)])


def _only_first_output(b: Builder, node: OnnxNode) -> None:
    used = [o for o in node.outputs[1:] if o and b.consumers[o]]
    if used:
        raise refuse(node, f"its optional outputs {used} are used; only the first output is supported")


def batch_norm(b: Builder, node: OnnxNode) -> None:
    """Y = (X - mean) / sqrt(var + eps) * scale + B; ONNX's momentum m keeps m of the running statistics,
    PyTorch's momentum is 1 - m."""
    _only_first_output(b, node)
    x = b.data(node, 0)
    scale, bias, mean, var = (b.static(node, k, what) for k, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
    ndim = len(b.shapes(node, 0)[0])
    cls = L.BatchNorm2d if ndim == 4 else L.BatchNorm1d
    if ndim not in (2, 3, 4):
        raise refuse(node, f"inputs of rank {ndim} are not supported (2, 3 or 4)")
    with skip_init():
        module = cls(scale.shape[0], eps=float(node.attr("epsilon", 1e-5)),
                     momentum=1.0 - float(node.attr("momentum", 0.9)))
    for name, array in (("weight", scale), ("bias", bias), ("running_mean", mean), ("running_var", var)):
        set_tensor(module, name, array)
    b.emit(node, module, [x], weight_name(node))


def layer_norm(b: Builder, node: OnnxNode) -> None:
    """Normalise over axes axis.. of X: LayerNorm(X.shape[axis:], eps)."""
    _only_first_output(b, node)
    x = b.data(node, 0)
    shape = b.shapes(node, 0)[0]
    axis = int(node.attr("axis", -1)) % len(shape)
    scale, bias = b.static(node, 1, "scale"), b.static(node, 2, "bias")
    normalized = shape[axis:]
    with skip_init():
        module = L.LayerNorm(normalized, eps=float(node.attr("epsilon", 1e-5)), bias=bias is not None)
    set_tensor(module, "weight", np.broadcast_to(scale, normalized))
    if bias is not None:
        set_tensor(module, "bias", np.broadcast_to(bias, normalized))
    b.emit(node, module, [x], weight_name(node))


def _pool_args(b: Builder, node: OnnxNode) -> tuple:
    _only_first_output(b, node)
    kernel = list(node.attr("kernel_shape"))
    n = len(kernel)
    if n not in (1, 2):
        raise refuse(node, f"only 1-D and 2-D pooling is supported, kernel_shape {kernel}")
    strides, dilations = list(node.attr("strides", [1] * n)), list(node.attr("dilations", [1] * n))
    return n, tuple(kernel), tuple(strides), _pads(b, node, kernel, strides, dilations), tuple(dilations)


def max_pool(b: Builder, node: OnnxNode) -> None:
    n, kernel, strides, padding, dilations = _pool_args(b, node)
    args = (kernel, strides, padding, dilations) if n == 2 else tuple(a[0] for a in (kernel, strides, padding, dilations))
    module = (L.MaxPool2d if n == 2 else L.MaxPool1d)(*args, ceil_mode=bool(node.attr("ceil_mode", 0)))
    b.emit(node, module, [b.data(node, 0)])


def average_pool(b: Builder, node: OnnxNode) -> None:
    """ONNX's count_include_pad defaults to 0 (PyTorch's to True)."""
    n, kernel, strides, padding, dilations = _pool_args(b, node)
    if any(d != 1 for d in dilations):
        raise refuse(node, f"dilated average pooling (dilations {list(dilations)}) is not supported")
    cls = L.AvgPool2d if n == 2 else L.AvgPool1d
    module = cls(kernel if n == 2 else kernel[0], strides if n == 2 else strides[0], padding if n == 2 else padding[0],
                 ceil_mode=bool(node.attr("ceil_mode", 0)), count_include_pad=bool(node.attr("count_include_pad", 0)))
    b.emit(node, module, [b.data(node, 0)])


def global_average_pool(b: Builder, node: OnnxNode) -> None:
    ndim = len(b.shapes(node, 0)[0])
    if ndim not in (3, 4):
        raise refuse(node, f"inputs of rank {ndim} are not supported (3 or 4)")
    module = L.AdaptiveAvgPool2d(1) if ndim == 4 else L.AdaptiveAvgPool1d(1)
    b.emit(node, module, [b.data(node, 0)])


LAYERS = {"Conv": conv, "Gemm": gemm, "MatMul": matmul, "BatchNormalization": batch_norm,
          "LayerNormalization": layer_norm, "MaxPool": max_pool, "AveragePool": average_pool,
          "GlobalAveragePool": global_average_pool}
