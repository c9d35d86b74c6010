"""Quantized activations on QTensors, bit-exact with PyTorch 2.13 on x86 (fbgemm).

The vector-body / scalar-tail split and the two dequantize / quantize rules are those of ``qops``
(module docstring there). Clamps never round in float: they clamp codes to quantized bounds.
"""
from __future__ import annotations

import numpy as np

from .qops import (SIGMOID_QPARAMS, _check, _dequant_quant, _out, dequantize_tail, f32, quantize_body,
                   quantize_scalar, quantize_tail, body_mask)
from .qtensor import QTensor


def clamp(x: QTensor, min: float | None = None, max: float | None = None) -> QTensor:
    """``quantized clamp`` (also ``hardtanh``): codes clamped to [quantize(min), quantize(max)] with the
    scalar ``quantize_val`` rule; qparams unchanged."""
    x = _check(x, "clamp")
    codes = x.int_repr
    if min is not None:
        codes = np.maximum(codes, np.array(quantize_scalar(min, x.scale, x.zero_point, x.dtype)).astype(codes.dtype))
    if max is not None:
        codes = np.minimum(codes, np.array(quantize_scalar(max, x.scale, x.zero_point, x.dtype)).astype(codes.dtype))
    return _out(x, codes.copy(), x.scale, x.zero_point)


def hardtanh(x: QTensor, min_val: float = -1.0, max_val: float = 1.0) -> QTensor:
    """``F.hardtanh`` on a quantized tensor = clamp(x, min_val, max_val)."""
    return clamp(x, min_val, max_val)


def relu6(x: QTensor) -> QTensor:
    """``quantized::relu6``: codes clamped to [z, quantize(6.0)]; qparams unchanged."""
    return clamp(x, 0.0, 6.0)


def hardswish(x: QTensor, scale: float, zero_point: int) -> QTensor:
    """``quantized::hardswish``: y = fl32(fl32(d * clamp(d + 3, 0, 6)) / 6), requantized to (scale, zero_point).

    Body quantize with inv = fl32(1.0 / scale) (a double division), tail with fl32(1 / fl32(scale)).
    """
    x = _check(x, "hardswish")
    def fn(d: np.ndarray) -> np.ndarray:
        return (d * np.minimum(np.maximum(d + f32(3), f32(0)), f32(6))).astype(f32) / f32(6)
    return _dequant_quant(x, fn, scale, zero_point, f32(1.0 / scale))


def leaky_relu(x: QTensor, negative_slope: float, scale: float, zero_point: int) -> QTensor:
    """``quantized::leaky_relu``: y = d if d > 0 else fl32(d * fl32(negative_slope)), requantized
    (inv = fl32(1 / fl32(scale)) in body and tail)."""
    x = _check(x, "leaky_relu")
    a = f32(negative_slope)
    return _dequant_quant(x, lambda d: np.where(d > 0, d, d * a), scale, zero_point, f32(1) / f32(scale))


def sigmoid(x: QTensor) -> QTensor:
    """``torch.sigmoid`` of a quantized tensor, output qparams fixed: (1/256, 0) for quint8, (1/256, -128) qint8.

    Body: d = fl32(fl32(q) - fl32(z)) * fl32(s) (the two-argument vector dequantize, no FMA),
    y = 1 / fl32(1 + exp(-d)) in float32, q = rint(fl32(y * 256)) + z_out.
    Tail: y = fl32(1 / (1.0 + double(expf(-d)))) (double arithmetic), scalar quantize.
    exp: the correctly rounded float32 exp; PyTorch's vector body uses Sleef's expf (<= 1 ulp), which can
    only change a code when y * 256 lies within an ulp of a half-integer (never in the tests' exhaustive
    sweep of all codes over many input qparams).
    """
    x = _check(x, "sigmoid")
    scale, zero_point = SIGMOID_QPARAMS[x.dtype]
    d_body = (x.int_repr.astype(f32) - f32(x.zero_point)) * f32(x.scale)
    d_tail = dequantize_tail(x)
    with np.errstate(over="ignore"):                     # exp(-d) = inf gives y = 0, as in PyTorch
        e = np.exp(-d_body.astype(np.float64)).astype(f32)
        y_tail = (1.0 / (1.0 + np.exp(-d_tail.astype(np.float64)).astype(f32).astype(np.float64))).astype(f32)
    body = quantize_body(f32(1) / (f32(1) + e), f32(1.0 / scale), zero_point, x.dtype)
    tail = quantize_tail(y_tail, scale, zero_point, x.dtype)
    return _out(x, np.where(body_mask(x), body, tail), scale, zero_point)
