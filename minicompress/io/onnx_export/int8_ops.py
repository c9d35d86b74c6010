"""int8 modules (``quant.convert`` / ``quant.quantize_dynamic`` output) as ONNX, in two formats.

An int8 activation is a ``QEdge`` (uint8 codes + per-tensor scale / zero point). ``g.int8_format``:

- ``'qoperator'``: integer operators on the codes, what onnxruntime's quantizer writes with
  QuantFormat.QOperator (``docs/onnxruntime_int8.md`` has each kernel's arithmetic)::

      Quantize          QuantizeLinear                 DeQuantize    DequantizeLinear
      QuantizedConv2d   QLinearConv (int32 bias)       QuantizedLinear  QGemm (com.microsoft, int32 bias, transB)
      add / add_relu    QLinearAdd (com.microsoft)     mul           QLinearMul (com.microsoft)
      cat               QLinearConcat (com.microsoft)  AdaptiveAvgPool2d(1)  QLinearGlobalAveragePool
      Sigmoid           QLinearSigmoid                 LeakyReLU     QLinearLeakyRelu
      ReLU / fused ReLU  nothing when the zero point is 0 (uint8 saturation is the ReLU), else Clip(min=z)
      ReLU6 / Hardtanh   Clip of the codes to PyTorch's quantized bounds (the same codes as PyTorch)
      MaxPool2d / Flatten   the same operator on the codes (qparams kept); Dropout / Identity: no node

  QGemm rather than QLinearMatMul + QLinearAdd: one requantisation with the int32 bias, the arithmetic of
  QLinearConv (QLinearMatMul has no bias input, and a QLinearAdd after it would round twice).
- ``'qdq'``: float operators between QuantizeLinear / DequantizeLinear pairs, what
  ``quantize_static(..., quant_format=QuantFormat.QDQ)`` writes: weights int8 initializers through
  DequantizeLinear (per channel, axis 0), biases int32 through DequantizeLinear with scale s_x * s_w, and
  every op's output quantized then dequantized with the module's (scale, zero point). With graph
  optimisations on, onnxruntime fuses these groups into the QOperator kernels above.

Both: the bias is quantized as onnxruntime's quantizer does, bias_q = round_half_even(fl32(b / fl32(s_x * s_w)))
(int32); PyTorch (FBGEMM) keeps the float bias / (s_x * s_w) instead -- the source of rare 1-code differences.
Hardswish and LayerNorm have no onnxruntime integer kernel: QDQ only (their float operator between the pairs).
DynamicQuantizedLinear (either format): DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(s_x * s_w)
-> Add(bias), as ``quantize_dynamic`` writes; onnxruntime's uint8 activation qparams (full 8-bit range) differ
from PyTorch's (reduce_range, 7-bit).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ... import nn, quant
from .builder import MS_DOMAIN, Graph, QEdge
from . import float_ops as F
from .float_ops import adaptive_pool_kind, conv_attrs
from ...quant.qops import quantize_scalar


def qedge(g: Graph, codes: str, scale: float, zero_point: int, hint: str, real: str | None = None) -> QEdge:
    """A QEdge for ``codes``; in QDQ graphs also its DequantizeLinear (unless ``real`` is given)."""
    s, z = g.qparams(hint, scale, zero_point)
    if g.int8_format == "qdq" and real is None:
        real = g.node("DequantizeLinear", [codes, s, z], hint)
    return QEdge(codes, float(scale), int(zero_point), s, z, np.uint8, real)


def quantize_to(g: Graph, x: str, scale: float, zero_point: int, hint: str) -> QEdge:
    """QuantizeLinear(x, scale, zero_point) as a QEdge (plus its DequantizeLinear in QDQ graphs)."""
    s, z = g.qparams(hint, scale, zero_point)
    codes = g.node("QuantizeLinear", [x, s, z], hint)
    real = g.node("DequantizeLinear", [codes, s, z], hint) if g.int8_format == "qdq" else None
    return QEdge(codes, float(scale), int(zero_point), s, z, np.uint8, real)


def out_qparams(m: Any) -> tuple[float, int]:
    return float(np.asarray(m.scale).reshape(-1)[0]), int(np.asarray(m.zero_point).reshape(-1)[0])


def relu_codes(g: Graph, codes: str, zero_point: int, hint: str) -> str:
    """max(q, z): nothing for z = 0 (uint8 cannot go below), else Clip(min = z) on the codes."""
    if zero_point == 0:
        return codes
    return g.node("Clip", [codes, g.const(f"{hint}.relu_min", zero_point, np.uint8)], hint)


def weight_params(m: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weight codes, float32 scales (C,) or (), int8 zero points of the same shape) of a WeightedQuantized."""
    w = np.asarray(m.weight, np.int8)
    s = np.asarray(m.weight_scale, np.float32)
    return w, s, np.asarray(m.weight_zero_point, np.int8).reshape(s.shape)


def quantize_bias(bias: Any, x_scale: float, w_scale: np.ndarray, n: int, who: str = "layer"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(bias_q int32 (n,), its scale fl32(s_x * s_w) (n,)): round_half_even(fl32(b / fl32(s_x * s_w))), as
    onnxruntime's quantizer (``quantize_bias_static``); zeros when the layer has no bias. A bias outside int32
    in those units is refused (it would wrap)."""
    bias_scale = np.ascontiguousarray(np.broadcast_to((np.float32(x_scale) * w_scale).astype(np.float32), (n,)))
    if bias is None:
        return np.zeros(n, np.int32), bias_scale
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        q = np.rint(np.asarray(bias, np.float32) / bias_scale).astype(np.float64)
    bad = ~(np.abs(q) <= 2 ** 31 - 1)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"ONNX export: {who}: bias[{k}] = {float(np.asarray(bias)[k]):.6g} is {q[k]:.4g} in units of "
                         f"s_x * s_w = {float(bias_scale[k]):.4g}, outside int32")
    return q.astype(np.int32), bias_scale


def _weighted(g: Graph, call: Any, x: QEdge, kind: str) -> list[QEdge]:
    """QuantizedLinear / QuantizedConv2d (+ fused ReLU) in either format."""
    m, name = call.module, call.name
    w, ws, wz = weight_params(m)
    sy, zy = out_qparams(m)
    n = w.shape[0]
    bias_q, bias_scale = quantize_bias(m.bias, x.scale, ws, n, name)
    relu = isinstance(m, (quant.QuantizedLinearReLU, quant.QuantizedConvReLU2d))
    attrs = conv_attrs(m) if kind == "conv" else {"transB": 1}
    if kind == "linear" and len(call.in_shapes[0]) != 2:
        raise ValueError(f"ONNX export: {name} ({type(m).__name__}) takes input {call.in_shapes[0]}; int8 Linear is "
                         f"exported for (N, in) inputs only")
    if g.int8_format == "qoperator":
        s_y, z_y = g.qparams(f"{name}.out", sy, zy)
        ins = [x.codes, x.scale_name, x.zp_name, g.const(f"{name}.weight", w), g.const(f"{name}.weight_scale", ws),
               g.const(f"{name}.weight_zero_point", wz)]
        if kind == "conv":
            y = g.node("QLinearConv", ins + [s_y, z_y, g.const(f"{name}.bias", bias_q)], name, **attrs)
        else:
            y = g.node("QGemm", ins + [g.const(f"{name}.bias", bias_q), s_y, z_y], name, domain=MS_DOMAIN, **attrs)
        y = relu_codes(g, y, zy, name) if relu else y
        return [QEdge(y, sy, zy, s_y, z_y, np.uint8)]
    axis = {"axis": 0} if ws.ndim else {}
    w_real = g.node("DequantizeLinear", [g.const(f"{name}.weight", w), g.const(f"{name}.weight_scale", ws),
                                         g.const(f"{name}.weight_zero_point", wz)], name, **axis)
    b_real = g.node("DequantizeLinear", [g.const(f"{name}.bias", bias_q), g.const(f"{name}.bias_scale", bias_scale),
                                         g.const(f"{name}.bias_zero_point", np.zeros(n, np.int32))], name, axis=0)
    y = g.node("Conv" if kind == "conv" else "Gemm", [x.real, w_real, b_real], name, **attrs)
    y = g.node("Relu", [y], name) if relu else y
    return [quantize_to(g, y, sy, zy, f"{name}.out")]


def dynamic_linear(g: Graph, call: Any, xs: list[Any]) -> list[str]:
    """DynamicQuantizeLinear -> MatMulInteger(x_q, W^T) -> Cast -> Mul(s_x * s_w) -> Add(bias) (-> Relu)."""
    m, name = call.module, call.name
    w, ws, wz = weight_params(m)
    xq, xs_, xz = g.node("DynamicQuantizeLinear", [xs[0]], name, n_out=3)
    acc = g.node("MatMulInteger", [xq, g.const(f"{name}.weight_t", np.ascontiguousarray(w.T)), xz,
                                   g.const(f"{name}.weight_zero_point", wz)], name)
    scale = g.node("Mul", [xs_, g.const(f"{name}.weight_scale", ws)], name)
    y = g.node("Mul", [g.node("Cast", [acc], name, to=1), scale], name)      # to = FLOAT
    if m.bias is not None:
        y = g.node("Add", [y, g.const(f"{name}.bias", np.asarray(m.bias, np.float32))], name)
    return [g.node("Relu", [y], name) if isinstance(m, quant.DynamicQuantizedLinearReLU) else y]


def quantize(g: Graph, call: Any, xs: list[Any]) -> list[QEdge]:
    m = call.module
    if m.dtype != "quint8":
        raise ValueError(f"ONNX export: {call.name} quantizes to {m.dtype}; only quint8 activations are exported")
    return [quantize_to(g, xs[0], float(m.scale[0]), int(m.zero_point[0]), call.name)]


def dequantize(g: Graph, call: Any, xs: list[QEdge]) -> list[str]:
    x = xs[0]
    if g.int8_format == "qdq":
        return [x.real]
    return [g.node("DequantizeLinear", [x.codes, x.scale_name, x.zp_name], call.name)]


def same_qparams(float_emitter: Callable) -> Callable:
    """An op that keeps the input's qparams (MaxPool, Flatten, Identity), written by its float emitter: on the
    codes (QOperator), or on the float tensor then QuantizeLinear / DequantizeLinear with the same qparams
    (QDQ; exact, since Q(DQ(q)) = q)."""
    def emit(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
        x = xs[0]
        if g.int8_format == "qoperator":
            (y,) = float_emitter(g, call, [x.codes])
            return [QEdge(y, x.scale, x.zero_point, x.scale_name, x.zp_name)]
        (y,) = float_emitter(g, call, [x.real])
        return [quantize_to(g, y, x.scale, x.zero_point, call.name)]
    return emit


def relu(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
    x = xs[0]
    if g.int8_format == "qoperator":
        return [QEdge(relu_codes(g, x.codes, x.zero_point, call.name), x.scale, x.zero_point, x.scale_name, x.zp_name)]
    return [quantize_to(g, g.node("Relu", [x.real], call.name), x.scale, x.zero_point, call.name)]


def global_avgpool(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
    x = xs[0]
    if adaptive_pool_kind(call)[0] != "global":
        raise ValueError(f"ONNX export: {call.name} (QuantizedAdaptiveAvgPool2d) pools to {call.out_shapes[0][2:]}; "
                         f"only an output of 1 is exported in int8")
    if g.int8_format == "qoperator":
        y = g.node("QLinearGlobalAveragePool", [x.codes, x.scale_name, x.zp_name, x.scale_name, x.zp_name], call.name,
                   domain=MS_DOMAIN, channels_last=0)
        return [QEdge(y, x.scale, x.zero_point, x.scale_name, x.zp_name)]
    return [quantize_to(g, g.node("GlobalAveragePool", [x.real], call.name), x.scale, x.zero_point, call.name)]


def binary(g: Graph, call: Any, xs: list[QEdge], op: str, with_relu: bool) -> list[QEdge]:
    """add / mul of two QEdges into the module's output qparams (QLinearAdd / QLinearMul, or Add / Mul in QDQ)."""
    sy, zy = out_qparams(call.module)
    y = xs[0]
    for k, b in enumerate(xs[1:]):
        hint = call.name if k == 0 else f"{call.name}.{k}"
        if g.int8_format == "qoperator":
            s, z = g.qparams(f"{hint}.out", sy, zy)
            codes = g.node(f"QLinear{op}", [y.codes, y.scale_name, y.zp_name, b.codes, b.scale_name, b.zp_name, s, z],
                           hint, domain=MS_DOMAIN)
            y = QEdge(relu_codes(g, codes, zy, hint) if with_relu else codes, sy, zy, s, z)
        else:
            r = g.node(op, [y.real, b.real], hint)
            y = quantize_to(g, g.node("Relu", [r], hint) if with_relu else r, sy, zy, f"{hint}.out")
    return [y]


def concat(g: Graph, call: Any, xs: list[QEdge], axis: int) -> list[QEdge]:
    sy, zy = out_qparams(call.module)
    if g.int8_format == "qoperator":
        s, z = g.qparams(f"{call.name}.out", sy, zy)
        ins = [s, z] + [t for x in xs for t in (x.codes, x.scale_name, x.zp_name)]
        return [QEdge(g.node("QLinearConcat", ins, call.name, domain=MS_DOMAIN, axis=axis), sy, zy, s, z)]
    return [quantize_to(g, g.node("Concat", [x.real for x in xs], call.name, axis=axis), sy, zy, f"{call.name}.out")]


def qfunctional(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
    op = call.args[0]
    if op in ("add", "add_relu"):
        return binary(g, call, xs, "Add", op == "add_relu")
    if op == "mul":
        return binary(g, call, xs, "Mul", False)
    if op == "cat":
        return concat(g, call, xs, int(call.args[-1]))
    raise ValueError(f"ONNX export: {call.name} (QFunctional.{op}) is not exported; add / add_relu / mul / cat are")


def lookup(op: str, float_op: str, out: Callable, **attrs: Callable) -> Callable:
    """QLinearSigmoid / QLinearLeakyRelu (256-entry tables in onnxruntime), or the float op in QDQ."""
    def emit(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
        x, (sy, zy) = xs[0], out(call.module)
        values = {k: f(call.module) for k, f in attrs.items()}
        if g.int8_format == "qoperator":
            s, z = g.qparams(f"{call.name}.out", sy, zy)
            y = g.node(op, [x.codes, x.scale_name, x.zp_name, s, z], call.name, domain=MS_DOMAIN, **values)
            return [QEdge(y, sy, zy, s, z)]
        return [quantize_to(g, g.node(float_op, [x.real], call.name, **values), sy, zy, f"{call.name}.out")]
    return emit


def clamp_codes(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
    """QuantizedReLU6 / QuantizedHardtanh: the codes clamped to [quantize(min), quantize(max)] with PyTorch's
    scalar rule (``qactivations.clamp``), so the codes are PyTorch's exactly; Clip on the codes (QOperator) or
    on the dequantized values with the dequantized bounds, then Q / DQ with the same qparams (QDQ)."""
    x, m = xs[0], call.module
    lo_hi = (0.0, 6.0) if isinstance(m, quant.QuantizedReLU6) else (m.min_val, m.max_val)
    codes = [quantize_scalar(v, x.scale, x.zero_point, "quint8") for v in lo_hi]
    if g.int8_format == "qoperator":
        bounds = [g.const(f"{call.name}.{k}", c, np.uint8) for k, c in zip(("min", "max"), codes)]
        return [QEdge(g.node("Clip", [x.codes] + bounds, call.name), x.scale, x.zero_point, x.scale_name, x.zp_name)]
    bounds = [g.const(f"{call.name}.{k}", np.float32(np.float32(x.scale) * np.float32(c - x.zero_point)))
              for k, c in zip(("min", "max"), codes)]
    return [quantize_to(g, g.node("Clip", [x.real] + bounds, call.name), x.scale, x.zero_point, call.name)]


def qdq_only(float_emitter: Callable) -> Callable:
    """An int8 module onnxruntime has no integer kernel for (Hardswish, LayerNorm): in QDQ graphs its float
    operator between DequantizeLinear and QuantizeLinear (the module's output qparams); refused in QOperator."""
    def emit(g: Graph, call: Any, xs: list[QEdge]) -> list[QEdge]:
        if g.int8_format != "qdq":
            raise ValueError(f"ONNX export: {call.name} ({type(call.module).__name__}) has no QOperator kernel in "
                             f"onnxruntime; export with int8_format='qdq'")
        (y,) = float_emitter(g, call, [xs[0].real])
        return [quantize_to(g, y, *out_qparams(call.module), f"{call.name}.out")]
    return emit


def sigmoid_qparams(m: Any) -> tuple[float, int]:
    """PyTorch's fixed sigmoid output qparams: (1/256, 0) quint8."""
    return 1.0 / 256.0, 0


# Quantized classes first: QuantizedReLU, QuantizedMaxPool2d... subclass the float layers.
INT8_EMITTERS: tuple[tuple[type, Callable], ...] = (
    (quant.Quantize, quantize), (quant.DeQuantize, dequantize),
    (quant.QuantizedConv2d, lambda g, c, xs: _weighted(g, c, xs[0], "conv")),
    (quant.QuantizedLinear, lambda g, c, xs: _weighted(g, c, xs[0], "linear")),
    (quant.DynamicQuantizedLinear, dynamic_linear),
    (quant.QuantizedReLU, relu), (quant.QuantizedMaxPool2d, same_qparams(F.maxpool)),
    (quant.QuantizedFlatten, same_qparams(F.flatten)),
    (quant.QuantizedDropout, lambda g, c, xs: [xs[0]]), (nn.Identity, lambda g, c, xs: [xs[0]]),   # no node
    (quant.QuantizedAdaptiveAvgPool2d, global_avgpool), (quant.QFunctional, qfunctional),
    (quant.QuantizedAdd, lambda g, c, xs: binary(g, c, xs, "Add", False)),
    (quant.QuantizedMul, lambda g, c, xs: binary(g, c, xs, "Mul", False)),
    (quant.QuantizedCat, lambda g, c, xs: concat(g, c, xs, int(c.module.dim))),
    (quant.QuantizedSigmoid, lookup("QLinearSigmoid", "Sigmoid", sigmoid_qparams)),
    (quant.QuantizedLeakyReLU, lookup("QLinearLeakyRelu", "LeakyRelu", out_qparams,
                                      alpha=lambda m: float(m.negative_slope))),
    (quant.QuantizedReLU6, clamp_codes), (quant.QuantizedHardtanh, clamp_codes),
    (quant.QuantizedHardswish, qdq_only(F.unary("HardSwish"))), (quant.QuantizedLayerNorm, qdq_only(F.layer_norm)),
)
# Modules whose inputs are float arrays although they are int8 modules.
FLOAT_INPUT_INT8 = (quant.Quantize, quant.DynamicQuantizedLinear)
