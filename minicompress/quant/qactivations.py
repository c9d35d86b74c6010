"""Quantized activations on QTensors, bit-exact with PyTorch 2.13 on x86 (fbgemm).

The vector-body / scalar-tail split and the two dequantize / quantize rules are those of ``qops``
(module docstring there). Clamps never round in float: they clamp codes to quantized bounds.
"""
from __future__ import annotations

import numpy as np

from .qops import (SIGMOID_QPARAMS, check_operand, unary_float_op, with_codes, body_mask, dequantize_tail, f32, quantize_body,
                   quantize_scalar, quantize_tail, requantize_from_int)
from .qtensor import check_qparams
from .qtensor import QTensor


def clamp(x: QTensor, min: float | None = None, max: float | None = None) -> QTensor:
    """``quantized clamp`` (also ``hardtanh``): codes clamped to [quantize(min), quantize(max)] with the
    scalar ``quantize_val`` rule; qparams unchanged."""
    x = check_operand(x, "clamp")
    codes = x.int_repr
    if min is not None:
        codes = np.maximum(codes, np.array(quantize_scalar(min, x.scale, x.zero_point, x.dtype)).astype(codes.dtype))
    if max is not None:
        codes = np.minimum(codes, np.array(quantize_scalar(max, x.scale, x.zero_point, x.dtype)).astype(codes.dtype))
    return with_codes(x, codes.copy(), x.scale, x.zero_point)


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
    x = check_operand(x, "hardswish")
    def fn(d: np.ndarray) -> np.ndarray:
        return (d * np.minimum(np.maximum(d + f32(3), f32(0)), f32(6))).astype(f32) / f32(6)
    return unary_float_op(x, fn, scale, zero_point, f32(1.0 / scale))


def leaky_relu(x: QTensor, negative_slope: float, scale: float, zero_point: int) -> QTensor:
    """``quantized::leaky_relu``: y = d if d > 0 else fl32(d * fl32(negative_slope)), requantized
    (inv = fl32(1 / fl32(scale)) in body and tail)."""
    x = check_operand(x, "leaky_relu")
    a = f32(negative_slope)
    return unary_float_op(x, lambda d: np.where(d > 0, d, d * a), scale, zero_point, f32(1) / f32(scale))


def sigmoid(x: QTensor) -> QTensor:
    """``torch.sigmoid`` of a quantized tensor, output qparams fixed: (1/256, 0) for quint8, (1/256, -128) qint8.

    Body: d = fl32(fl32(q) - fl32(z)) * fl32(s) (the two-argument vector dequantize, no FMA),
    y = 1 / fl32(1 + exp(-d)) in float32, q = rint(fl32(y * 256)) + z_out.
    Tail: y = fl32(1 / (1.0 + double(expf(-d)))) (double arithmetic), scalar quantize.
    exp: the correctly rounded float32 exp; PyTorch's vector body uses Sleef's expf (<= 1 ulp), which can
    only change a code when y * 256 lies within an ulp of a half-integer (never in the tests' exhaustive
    sweep of all codes over many input qparams).
    """
    x = check_operand(x, "sigmoid")
    scale, zero_point = SIGMOID_QPARAMS[x.dtype]
    d_body = (x.int_repr.astype(f32) - f32(x.zero_point)) * f32(x.scale)
    d_tail = dequantize_tail(x)
    with np.errstate(over="ignore"):                     # exp(-d) = inf gives y = 0, as in PyTorch
        e = np.exp(-d_body.astype(np.float64)).astype(f32)
        y_tail = (1.0 / (1.0 + np.exp(-d_tail.astype(np.float64)).astype(f32).astype(np.float64))).astype(f32)
    body = quantize_body(f32(1) / (f32(1) + e), f32(1.0 / scale), zero_point, x.dtype)
    tail = quantize_tail(y_tail, scale, zero_point, x.dtype)
    return with_codes(x, np.where(body_mask(x), body, tail), scale, zero_point)


def prelu(x: QTensor, weight: QTensor, scale: float, zero_point: int) -> QTensor:
    """``quantized::prelu`` (x: (N, C, ...) or (C,...) with one weight or C weights along dim 1), in integers:

    acc = (max(q, z) - z) * (q_one - z_w) + (min(q, z) - z) * (q_w - z_w)   (int32),
    q_one = quantize_val(1.0) with the weight's qparams (so slope 1 is exact only if 1.0 is representable),
    q' = clamp(rint(fl32(fl32(acc) * m)) + Z),  m = fl32(fl32(fl32(s) * fl32(s_w)) * fl32(1 / fl32(S))).
    """
    x, w = check_operand(x, "prelu"), check_operand(weight, "prelu weight")
    scale, zero_point = check_qparams(scale, zero_point, x.dtype)
    if w.dtype != x.dtype:
        raise TypeError(f"quantized prelu: weight dtype {w.dtype} must equal the input's {x.dtype}")
    if w.int_repr.ndim != 1 or (w.shape[0] != 1 and (x.ndim < 2 or x.shape[1] != w.shape[0])):
        raise ValueError(f"quantized prelu: weight of shape {w.shape} does not match input {x.shape} "
                         f"(1 or C = input.shape[1] parameters)")
    wq = w.int_repr.astype(np.int32).reshape((1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,))
    q_one = quantize_scalar(1.0, w.scale, w.zero_point, w.dtype)
    q, z = x.int_repr.astype(np.int32), x.zero_point
    acc = (np.maximum(q, z) - z) * (q_one - w.zero_point) + (np.minimum(q, z) - z) * (wq - w.zero_point)
    m = f32(f32(f32(x.scale) * f32(w.scale)) * (f32(1) / f32(scale)))
    return with_codes(x, requantize_from_int(acc, m, zero_point, x.dtype), scale, zero_point)
