"""onnxruntime's int8 operators as inference-only modules: what ``io.load_onnx`` builds for an int8 ONNX file.

Each module holds the node's constants (weights, int32 biases, scales, zero points) as buffers and calls the
matching function of ``quant.onnxruntime_ops`` -- the arithmetic is written there once, with its formula.
Integer tensors flow between these modules as plain uint8 / int8 / int32 arrays, as in ONNX. None of them
has a backward: an int8 graph is run, not trained (QAT trains through fake quantization instead).

``OnCodes(layer)`` runs a float layer that only moves or selects values (MaxPool, Flatten, Reshape, ...)
on integer codes: every uint8 / int8 code is exact in float32, so y = layer(float32(q)) cast back is exact.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..nn.module import Module
from . import onnxruntime_ops as O

__all__ = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
           "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
           "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "CastTo", "OnCodes"]


class _Int8Node(Module):
    """An onnxruntime int8 operator with constant arrays ``constants`` (buffers) and no backward."""

    def __init__(self, **constants: Any) -> None:
        super().__init__()
        for name, value in constants.items():
            self.register_buffer(name, None if value is None else np.asarray(value))

    def c(self, name: str) -> Any:
        return self.array(name)

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError(f"{self._name()} is an onnxruntime int8 operator, inference only")

    def backward_params(self, grad_output: Any) -> None:
        self.backward(grad_output)

    def extra_repr(self) -> str:
        parts = []
        for name, value in self.named_buffers(recurse=False):
            if value is not None and value.size == 1:
                parts.append(f"{name}={value.reshape(-1)[0]}")
        return ", ".join(parts)


class _AxisQParams(_Int8Node):
    """One (scale, zero point) per tensor or per ``axis``."""

    def __init__(self, scale: Any, zero_point: Any, axis: int = 1) -> None:
        super().__init__(scale=np.asarray(scale, np.float32), zero_point=zero_point)
        self.axis = axis


class QuantizeLinear(_AxisQParams):
    """(O1) q = clamp(rint(fl32(x / s)) + z); s, z per tensor or per ``axis`` (the codes have z's dtype)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return O.quantize_linear(x, self.c("scale"), self.c("zero_point"), self.axis)


class DequantizeLinear(_AxisQParams):
    """(O2) y = fl32(fl32(q - z) * s), float32; per tensor or per ``axis``."""

    def forward(self, q: np.ndarray) -> np.ndarray:
        return O.dequantize_linear(q, self.c("scale"), self.c("zero_point"), self.axis)


class DynamicQuantizeLinear(_Int8Node):
    """(O3) x -> (uint8 codes, scale float32 (), zero point uint8 ()) from x's own range."""

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q, s, z = O.dynamic_quantize_linear(x)
        return q, np.asarray(s, np.float32), np.asarray(z, np.uint8)


class MatMulInteger(_Int8Node):
    """(O4) acc = (a - z_a) @ (b - z_b), int32, with a constant b (K, N); z_a a constant or a second input
    (DynamicQuantizeLinear's zero point)."""

    def __init__(self, b: np.ndarray, a_zero_point: Any, b_zero_point: Any) -> None:
        super().__init__(b=b, a_zero_point=a_zero_point, b_zero_point=b_zero_point)

    def forward(self, a: np.ndarray, *a_zero_point: np.ndarray) -> np.ndarray:
        za = a_zero_point[0] if a_zero_point else self.c("a_zero_point")
        return O.matmul_integer(a, self.c("b"), 0 if za is None else za, self.c("b_zero_point"))


class _ConvAttrs(_Int8Node):
    def __init__(self, strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int,
                 **constants: Any) -> None:
        super().__init__(**constants)
        self.strides, self.pads, self.dilations, self.group = tuple(strides), tuple(pads), tuple(dilations), group


class ConvInteger(_ConvAttrs):
    """acc = conv(x - z_x, w - z_w) in int32 (``onnxruntime_ops.conv_integer``); z_x a constant or an input."""

    def __init__(self, w: np.ndarray, x_zero_point: Any, w_zero_point: Any, strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], group: int) -> None:
        super().__init__(strides, pads, dilations, group, w=w, x_zero_point=x_zero_point, w_zero_point=w_zero_point)

    def forward(self, x: np.ndarray, *x_zero_point: np.ndarray) -> np.ndarray:
        zx = x_zero_point[0] if x_zero_point else self.c("x_zero_point")
        return O.conv_integer(x, self.c("w"), int(0 if zx is None else zx), self.c("w_zero_point"), self.strides,
                              self.pads, self.dilations, self.group)


class QLinearConv(_ConvAttrs):
    """ConvInteger then (O5) with the int32 bias: y = clamp(rint(fl32(fl32(acc + b) * m[o])) + z_y)."""

    def __init__(self, w: np.ndarray, x_scale: Any, x_zero_point: Any, w_scale: Any, w_zero_point: Any,
                 y_scale: Any, y_zero_point: Any, bias: Any, strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], group: int) -> None:
        super().__init__(strides, pads, dilations, group, w=w, x_scale=x_scale, x_zero_point=x_zero_point,
                         w_scale=w_scale, w_zero_point=w_zero_point, y_scale=y_scale, y_zero_point=y_zero_point,
                         bias=bias)

    def forward(self, x: np.ndarray) -> np.ndarray:
        c = self.c
        return O.qlinear_conv(x, c("x_scale"), c("x_zero_point"), c("w"), c("w_scale"), c("w_zero_point"),
                              c("y_scale"), c("y_zero_point"), c("bias"), self.strides, self.pads, self.dilations,
                              self.group)


class QLinearMatMul(_Int8Node):
    """(O4) + (O5) without bias: a (..., M, K) codes @ b: a constant (K, N), or (b None) the codes of a second
    input (..., K, N), batch axes broadcasting (attention's q k^T and weights v)."""

    def __init__(self, b: np.ndarray | None, a_scale: Any, a_zero_point: Any, b_scale: Any, b_zero_point: Any,
                 y_scale: Any, y_zero_point: Any) -> None:
        super().__init__(b=b, a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale,
                         b_zero_point=b_zero_point, y_scale=y_scale, y_zero_point=y_zero_point)

    def forward(self, a: np.ndarray, *b: np.ndarray) -> np.ndarray:
        c = self.c
        return O.qlinear_matmul(a, c("a_scale"), c("a_zero_point"), b[0] if b else c("b"), c("b_scale"),
                                c("b_zero_point"), c("y_scale"), c("y_zero_point"))


class QGemm(_Int8Node):
    """com.microsoft QGemm (alpha 1, quantized output): (O4) + (O5) with the int32 bias C; b (N, K) if
    ``trans_b`` else (K, N)."""

    def __init__(self, b: np.ndarray, a_scale: Any, a_zero_point: Any, b_scale: Any, b_zero_point: Any,
                 bias: Any, y_scale: Any, y_zero_point: Any, trans_b: bool) -> None:
        super().__init__(b=b, a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale,
                         b_zero_point=b_zero_point, bias=bias, y_scale=y_scale, y_zero_point=y_zero_point)
        self.trans_b = trans_b

    def forward(self, a: np.ndarray) -> np.ndarray:
        c = self.c
        return O.qgemm(a, c("a_scale"), c("a_zero_point"), c("b"), c("b_scale"), c("b_zero_point"), c("bias"),
                       c("y_scale"), c("y_zero_point"), self.trans_b)


class _QLinearBinary(_Int8Node):
    op: Any = None

    def __init__(self, a_scale: Any, a_zero_point: Any, b_scale: Any, b_zero_point: Any, c_scale: Any,
                 c_zero_point: Any, a_codes: Any = None, b_codes: Any = None) -> None:
        super().__init__(a_scale=a_scale, a_zero_point=a_zero_point, b_scale=b_scale, b_zero_point=b_zero_point,
                         c_scale=c_scale, c_zero_point=c_zero_point, a_codes=a_codes, b_codes=b_codes)

    def forward(self, *operands: np.ndarray) -> np.ndarray:
        """The activation operands' codes, in order; a constant operand of the node (a QDQ file's
        DequantizeLinear of an initializer: attention's scaling, a bias) is ``a_codes`` / ``b_codes``."""
        c, given = self.c, iter(operands)
        a = c("a_codes") if c("a_codes") is not None else next(given)
        b = c("b_codes") if c("b_codes") is not None else next(given)
        return type(self).op(a, c("a_scale"), c("a_zero_point"), b, c("b_scale"), c("b_zero_point"), c("c_scale"),
                             c("c_zero_point"))


class QLinearAdd(_QLinearBinary):
    """(O6) com.microsoft QLinearAdd of two code tensors (b broadcasting against a)."""

    op = staticmethod(O.qlinear_add)


class QLinearMul(_QLinearBinary):
    """(O8) com.microsoft QLinearMul of two code tensors."""

    op = staticmethod(O.qlinear_mul)


class _QLinearUnary(_Int8Node):
    def __init__(self, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any) -> None:
        super().__init__(x_scale=x_scale, x_zero_point=x_zero_point, y_scale=y_scale, y_zero_point=y_zero_point)

    def qparams(self) -> tuple:
        return self.c("x_scale"), self.c("x_zero_point"), self.c("y_scale"), self.c("y_zero_point")


class QLinearGlobalAveragePool(_QLinearUnary):
    """(O7) com.microsoft QLinearGlobalAveragePool, channels first: (N, C, H, W) -> (N, C, 1, 1)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return O.qlinear_global_average_pool(x, *self.qparams())


class QLinearSigmoid(_QLinearUnary):
    """(O9) com.microsoft QLinearSigmoid: a 256-entry table of quantize(logistic(dequantize(code)))."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return O.qlinear_sigmoid(x, *self.qparams())


class QLinearLeakyRelu(_QLinearUnary):
    """(O9) com.microsoft QLinearLeakyRelu(alpha): a 256-entry table."""

    def __init__(self, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any, alpha: float) -> None:
        super().__init__(x_scale, x_zero_point, y_scale, y_zero_point)
        self.alpha = alpha

    def forward(self, x: np.ndarray) -> np.ndarray:
        return O.qlinear_leaky_relu(x, *self.qparams(), alpha=self.alpha)


class QLinearSoftmax(_QLinearUnary):
    """(O10) com.microsoft QLinearSoftmax(axis, opset): a lookup-table softmax of each row of codes."""

    def __init__(self, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any, axis: int,
                 opset: int) -> None:
        super().__init__(x_scale, x_zero_point, y_scale, y_zero_point)
        self.axis, self.opset = axis, opset

    def forward(self, x: np.ndarray) -> np.ndarray:
        return O.qlinear_softmax(x, self.c("x_scale"), self.c("y_scale"), self.c("y_zero_point"), self.axis,
                                 self.opset)


class QLinearConcat(_Int8Node):
    """(O9) com.microsoft QLinearConcat: input k (scale s_k, zero point z_k) copied or mapped through its table
    to (y_scale, y_zero_point), then concatenated along ``axis``."""

    def __init__(self, y_scale: Any, y_zero_point: Any, input_qparams: Sequence[tuple[Any, Any]], axis: int) -> None:
        super().__init__(y_scale=y_scale, y_zero_point=y_zero_point,
                         input_scales=np.array([s for s, _ in input_qparams], np.float32).reshape(-1),
                         input_zero_points=np.array([np.asarray(z).reshape(()) for _, z in input_qparams]))
        self.axis = axis

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        scales, zps = self.c("input_scales"), self.c("input_zero_points")
        return O.qlinear_concat(self.c("y_scale"), self.c("y_zero_point"),
                                [(x, scales[k], zps[k]) for k, x in enumerate(xs)], self.axis)


class CastTo(_Int8Node):
    """ONNX Cast of an activation: y = x.astype(dtype) (MatMulInteger's int32 to float32 is exact below 2^24)."""

    def __init__(self, dtype: Any) -> None:
        super().__init__()
        self.dtype = np.dtype(dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).astype(self.dtype)

    def extra_repr(self) -> str:
        return str(self.dtype)


class OnCodes(_Int8Node):
    """y = layer(float32(q)).astype(q.dtype) for a layer that moves or selects values (module docstring)."""

    def __init__(self, layer: Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *xs: np.ndarray) -> Any:
        dtype = xs[0].dtype
        out = self.layer(*(np.asarray(x).astype(np.float32) for x in xs))
        return tuple(o.astype(dtype) for o in out) if isinstance(out, tuple) else out.astype(dtype)
