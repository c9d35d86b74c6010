"""Relu, LeakyRelu, PRelu, Clip, HardSwish, HardSigmoid, Sigmoid, Tanh, Erf, Gelu, Softmax, LogSoftmax,
Dropout: each one existing layer."""
from __future__ import annotations

import numpy as np

from ....nn import layers as L
from ..builder import Builder, refuse
from ..reader import OnnxNode
from ._weights import set_tensor


def _simple(cls: type):
    def convert(b: Builder, node: OnnxNode) -> None:
        b.emit(node, cls(), [b.data(node, 0)])
    return convert


def leaky_relu(b: Builder, node: OnnxNode) -> None:
    b.emit(node, L.LeakyReLU(float(node.attr("alpha", 0.01))), [b.data(node, 0)])


def prelu(b: Builder, node: OnnxNode) -> None:
    """y = x if x > 0 else slope * x: one slope, or one per channel (slope (C,), (C, 1) or (C, 1, 1))."""
    x = b.data(node, 0)
    slope = b.static(node, 1, "slope")
    shape = b.shapes(node, 0)[0]
    if slope.size != 1 and (len(shape) < 2 or slope.size != shape[1] or slope.shape[0] != shape[1]):
        raise refuse(node, f"a slope of shape {slope.shape} for an input of shape {shape}: only one slope or one "
                           f"per channel (axis 1) is supported")
    module = L.PReLU(int(slope.size))
    set_tensor(module, "weight", slope.reshape(-1))
    b.emit(node, module, [x])


def clip(b: Builder, node: OnnxNode) -> None:
    """min / max are inputs since opset 11 (omitted: unbounded): ReLU6 for [0, 6], ReLU for [0, inf),
    Hardtanh otherwise."""
    x = b.data(node, 0)
    low, high = b.static(node, 1, "min"), b.static(node, 2, "max")
    low = -np.inf if low is None else float(low)
    high = np.inf if high is None else float(high)
    if (low, high) == (0.0, 6.0):
        module = L.ReLU6()
    elif (low, high) == (0.0, np.inf):
        module = L.ReLU()
    else:
        module = L.Hardtanh(low, high)
    b.emit(node, module, [x])


def hard_sigmoid(b: Builder, node: OnnxNode) -> None:
    """y = max(0, min(1, alpha x + beta)); PyTorch's Hardsigmoid is alpha = 1/6, beta = 1/2."""
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    if not (np.isclose(alpha, 1 / 6, rtol=1e-6) and beta == 0.5):
        raise refuse(node, f"alpha={alpha}, beta={beta}: only alpha=1/6, beta=0.5 (PyTorch's Hardsigmoid) "
                           f"is supported")
    b.emit(node, L.Hardsigmoid(), [b.data(node, 0)])


def gelu(b: Builder, node: OnnxNode) -> None:
    """Gelu (opset 20): approximate 'none' or 'tanh'."""
    b.emit(node, L.GELU(node.attr("approximate", "none")), [b.data(node, 0)])


def _softmax(cls: type):
    def convert(b: Builder, node: OnnxNode) -> None:
        """opset >= 13: along ``axis`` (default -1)."""
        b.emit(node, cls(dim=int(node.attr("axis", -1))), [b.data(node, 0)])
    return convert


def dropout(b: Builder, node: OnnxNode) -> None:
    """Dropout(ratio) (the ratio an input since opset 12, default 0.5); the mask output is not supported."""
    if len(node.outputs) > 1 and node.outputs[1] and b.consumers[node.outputs[1]]:
        raise refuse(node, "its mask output is used; it is not supported")
    ratio = b.static(node, 1, "ratio", default=0.5)
    b.emit(node, L.Dropout(float(ratio)), [b.data(node, 0)], outputs=node.outputs[:1])


ACTIVATIONS = {"Relu": _simple(L.ReLU), "Sigmoid": _simple(L.Sigmoid), "Tanh": _simple(L.Tanh),
               "HardSwish": _simple(L.Hardswish), "Erf": _simple(L.Erf), "LeakyRelu": leaky_relu, "PRelu": prelu,
               "Clip": clip, "HardSigmoid": hard_sigmoid, "Gelu": gelu, "Softmax": _softmax(L.Softmax),
               "LogSoftmax": _softmax(L.LogSoftmax), "Dropout": dropout}
