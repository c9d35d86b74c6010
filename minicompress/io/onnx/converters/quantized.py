"""The int8 operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger,
QLinearConv, QLinearMatMul and com.microsoft QGemm, QLinearAdd, QLinearMul, QLinearGlobalAveragePool,
QLinearConcat, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax; Cast of an activation.

Each becomes one module of ``quant.onnxruntime_modules`` (onnxruntime 1.32's CPU arithmetic); scales, zero
points, weights and int32 biases must be constants. A Quantize / DequantizeLinear of a constant (a QDQ file's
int8 weight or int32 bias) is evaluated at load time with the same function, so the float operator after it
sees the weight onnxruntime computes. Only uint8 / int8 codes (int32 for a dequantized bias) are accepted.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ....quant import onnxruntime_modules as Q
from ....quant import onnxruntime_ops as O
from ..builder import Builder, refuse
from ..reader import OnnxNode
from .layers import _pads

CODE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))


def _qparams(b: Builder, node: OnnxNode, k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero point) at inputs k, k + 1; an omitted zero point is uint8 0."""
    scale = b.static(node, k, f"{what} scale")
    if scale is None:
        raise refuse(node, f"its {what} scale (input {k}) is missing")
    zp = b.static(node, k + 1, f"{what} zero point")
    zp = np.zeros(scale.shape, np.uint8) if zp is None else zp
    if zp.dtype not in CODE_DTYPES + (np.dtype(np.int32),):
        raise refuse(node, f"its {what} zero point holds {zp.dtype} values; only uint8 and int8 codes are supported")
    return np.asarray(scale, np.float32), zp


def _no_blocks(node: OnnxNode) -> None:
    if node.attr("block_size", 0):
        raise refuse(node, f"blocked quantization (block_size={node.attr('block_size')}) is not supported")


def quantize_linear(b: Builder, node: OnnxNode) -> None:
    """y = (O1)(x); the codes' dtype is the zero point's (or ``output_dtype``, opset 21; default uint8)."""
    _no_blocks(node)
    scale, zp = _qparams(b, node, 1, "output")
    if not node.input(2) and node.attr("output_dtype"):
        from onnx import helper
        zp = zp.astype(helper.tensor_dtype_to_np_dtype(node.attr("output_dtype")))
    if zp.dtype not in CODE_DTYPES:
        raise refuse(node, f"quantization to {zp.dtype} is not supported (uint8, int8)")
    axis = int(node.attr("axis", 1))
    if b.is_const(node, 0):
        x = b.static(node, 0, "input")
        b.set_const(node.outputs[0], [O.quantize_linear(x, scale, zp, axis)] * 2)
        return
    b.emit(node, Q.QuantizeLinear(scale, zp, axis), [b.data(node, 0)])


def dequantize_linear(b: Builder, node: OnnxNode) -> None:
    """y = (O2)(q): a constant (an int8 weight, an int32 bias) is dequantized now, an activation by a module."""
    _no_blocks(node)
    scale, zp = _qparams(b, node, 1, "input")
    axis = int(node.attr("axis", 1))
    if b.is_const(node, 0):
        q = b.static(node, 0, "input")
        b.set_const(node.outputs[0], [O.dequantize_linear(q, scale, zp, axis)] * 2)
        b.values[node.outputs[0]].initializer = b.value(node, 0).initializer
        return
    b.emit(node, Q.DequantizeLinear(scale, zp, axis), [b.data(node, 0)])


def dynamic_quantize_linear(b: Builder, node: OnnxNode) -> None:
    b.emit(node, Q.DynamicQuantizeLinear(), [b.data(node, 0)])


def _zero_point_input(b: Builder, node: OnnxNode, k: int) -> tuple[Any, list[str]]:
    """A zero point at input k: (constant, []) or (None, [its value name]) when computed (dynamic quantization)."""
    if not node.input(k):
        return 0, []
    if b.is_const(node, k):
        return b.static(node, k, "zero point"), []
    return None, [b.data(node, k, "zero point")]


def _weight(b: Builder, node: OnnxNode, k: int) -> np.ndarray:
    if not b.is_const(node, k):
        raise refuse(node, f"its weight (input {k}) must be a constant; products of two activations are not supported")
    w = b.static(node, k, "weight")
    if w.dtype not in CODE_DTYPES:
        raise refuse(node, f"its weight holds {w.dtype} values (uint8 or int8 expected)")
    return w


def matmul_integer(b: Builder, node: OnnxNode) -> None:
    w = _weight(b, node, 1)
    if w.ndim != 2:
        raise refuse(node, f"a constant B must be a matrix, it has shape {w.shape}")
    za, extra = _zero_point_input(b, node, 2)
    zb = b.static(node, 3, "B zero point", default=0)
    b.emit(node, Q.MatMulInteger(w, za, zb), [b.data(node, 0)] + extra)


def _conv_attrs(b: Builder, node: OnnxNode, w: np.ndarray) -> tuple:
    """(strides, pads (top, left, bottom, right), dilations, group) of a 2-D integer convolution."""
    if w.ndim != 4:
        raise refuse(node, f"only 2-D convolutions are supported, the weight has shape {w.shape}")
    kernel = list(node.attr("kernel_shape", w.shape[2:]))
    strides, dilations = list(node.attr("strides", [1, 1])), list(node.attr("dilations", [1, 1]))
    padding = _pads(b, node, kernel, strides, dilations)
    return tuple(strides), padding + padding, tuple(dilations), int(node.attr("group", 1))


def conv_integer(b: Builder, node: OnnxNode) -> None:
    w = _weight(b, node, 1)
    zx, extra = _zero_point_input(b, node, 2)
    zw = b.static(node, 3, "w zero point", default=0)
    b.emit(node, Q.ConvInteger(w, zx, zw, *_conv_attrs(b, node, w)), [b.data(node, 0)] + extra)


def _bias(b: Builder, node: OnnxNode, k: int) -> np.ndarray | None:
    bias = b.static(node, k, "bias")
    if bias is not None and bias.dtype != np.int32:
        raise refuse(node, f"its bias holds {bias.dtype} values (int32 expected)")
    return bias


def qlinear_conv(b: Builder, node: OnnxNode) -> None:
    """QLinearConv(x, s_x, z_x, w, s_w, z_w, s_y, z_y, B)."""
    w = _weight(b, node, 3)
    module = Q.QLinearConv(w, *_qparams(b, node, 1, "x"), *_qparams(b, node, 4, "w"), *_qparams(b, node, 6, "y"),
                           _bias(b, node, 8), *_conv_attrs(b, node, w))
    b.emit(node, module, [b.data(node, 0)])


def qlinear_matmul(b: Builder, node: OnnxNode) -> None:
    """QLinearMatMul(a, s_a, z_a, b, s_b, z_b, s_y, z_y): b a constant matrix, or codes of an activation (a
    per-tensor scale then; both broadcast as MatMul's batch axes do)."""
    qparams = (*_qparams(b, node, 1, "a"), *_qparams(b, node, 4, "b"), *_qparams(b, node, 6, "y"))
    if not b.is_const(node, 3):
        if qparams[2].size != 1:
            raise refuse(node, f"B is an activation with {qparams[2].size} scales; only a per-tensor scale is "
                               f"supported for an activation")
        b.emit(node, Q.QLinearMatMul(None, *qparams), [b.data(node, 0), b.data(node, 3, "B")])
        return
    w = _weight(b, node, 3)
    if w.ndim != 2:
        raise refuse(node, f"a constant B must be a matrix, it has shape {w.shape}")
    b.emit(node, Q.QLinearMatMul(w, *qparams), [b.data(node, 0)])


def qgemm(b: Builder, node: OnnxNode) -> None:
    """com.microsoft QGemm(A, s_a, z_a, B, s_b, z_b, C, s_y, z_y): alpha 1, transA 0, a quantized output."""
    if node.attr("transA", 0) or float(node.attr("alpha", 1.0)) != 1.0:
        raise refuse(node, f"transA={node.attr('transA', 0)}, alpha={node.attr('alpha', 1.0)}: only transA=0, "
                           f"alpha=1 is supported")
    if not node.input(7):
        raise refuse(node, "a float output (no y_scale) is not supported, only a quantized one")
    w = _weight(b, node, 3)
    module = Q.QGemm(w, *_qparams(b, node, 1, "a"), *_qparams(b, node, 4, "b"), _bias(b, node, 6),
                     *_qparams(b, node, 7, "y"), bool(node.attr("transB", 0)))
    b.emit(node, module, [b.data(node, 0)])


def _binary(cls: type):
    def convert(b: Builder, node: OnnxNode) -> None:
        """com.microsoft QLinearAdd / QLinearMul(A, s_a, z_a, B, s_b, z_b, s_c, z_c): activations, or one of
        them constant codes (a QDQ file's DequantizeLinear of a constant, e.g. attention's scaling)."""
        qparams = (*_qparams(b, node, 1, "A"), *_qparams(b, node, 4, "B"), *_qparams(b, node, 6, "C"))
        constant = {f"{x.lower()}_codes": _weight(b, node, k) for k, x in ((0, "A"), (3, "B")) if b.is_const(node, k)}
        if len(constant) == 2:
            raise refuse(node, "both operands are constants (fold them before exporting)")
        inputs = [b.data(node, k, x) for k, x in ((0, "A"), (3, "B")) if f"{x.lower()}_codes" not in constant]
        b.emit(node, cls(*qparams, **constant), inputs)
    return convert


def _unary(cls: type):
    def convert(b: Builder, node: OnnxNode) -> None:
        """(X, s_x, z_x, s_y, z_y) -> Y."""
        if node.attr("channels_last", 0):
            raise refuse(node, "channels_last=1 is not supported")
        extra = (float(node.attr("alpha", 0.01)),) if cls is Q.QLinearLeakyRelu else ()
        b.emit(node, cls(*_qparams(b, node, 1, "X"), *_qparams(b, node, 3, "Y"), *extra), [b.data(node, 0)])
    return convert


def qlinear_softmax(b: Builder, node: OnnxNode) -> None:
    """com.microsoft QLinearSoftmax(X, s_x, z_x, s_y, z_y), attributes opset (required) and axis (default -1 from
    opset 13, else 1)."""
    opset = node.attr("opset")
    if opset is None:
        raise refuse(node, "its required attribute 'opset' is missing")
    axis = int(node.attr("axis", -1 if opset >= 13 else 1))
    b.emit(node, Q.QLinearSoftmax(*_qparams(b, node, 1, "X"), *_qparams(b, node, 3, "Y"), axis, int(opset)),
           [b.data(node, 0)])


def qlinear_concat(b: Builder, node: OnnxNode) -> None:
    """com.microsoft QLinearConcat(s_y, z_y, X1, s_1, z_1, X2, ...) along ``axis``."""
    y = _qparams(b, node, 0, "Y")
    triples = range(2, len(node.inputs), 3)
    qparams = [_qparams(b, node, k + 1, f"input {k}") for k in triples]
    b.emit(node, Q.QLinearConcat(*y, qparams, int(node.attr("axis"))), [b.data(node, k) for k in triples])


def cast(b: Builder, node: OnnxNode) -> None:
    """Cast of an activation (MatMulInteger's int32 accumulator to float, in dynamic quantization)."""
    from onnx import helper
    b.emit(node, Q.CastTo(helper.tensor_dtype_to_np_dtype(node.attr("to"))), [b.data(node, 0)])


MS = "com.microsoft."
QUANTIZED = {"QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
             "DynamicQuantizeLinear": dynamic_quantize_linear, "MatMulInteger": matmul_integer,
             "ConvInteger": conv_integer, "QLinearConv": qlinear_conv, "QLinearMatMul": qlinear_matmul,
             MS + "QGemm": qgemm, MS + "QLinearAdd": _binary(Q.QLinearAdd), MS + "QLinearMul": _binary(Q.QLinearMul),
             MS + "QLinearGlobalAveragePool": _unary(Q.QLinearGlobalAveragePool),
             MS + "QLinearSigmoid": _unary(Q.QLinearSigmoid), MS + "QLinearLeakyRelu": _unary(Q.QLinearLeakyRelu),
             MS + "QLinearConcat": qlinear_concat, MS + "QLinearSoftmax": qlinear_softmax, "Cast": cast}
