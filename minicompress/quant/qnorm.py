"""Quantized layer normalization on QTensors, bit-exact with PyTorch 2.13 on x86 (``quantized_normalize_kernel``).

Statistics come from integer sums of the codes; the normalization is float32 with the vector body /
scalar tail split of ``qops`` -- here per row, with a 32-element vector step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .qops import check_operand, f32, quantize_body, quantize_tail
from .qtensor import QTensor, check_qparams

ROW_STEP = 32                       # floats per vector step of the normalize kernel (4 x 8)


def layer_norm(x: QTensor, normalized_shape: Any, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
               scale: float, zero_point: int) -> QTensor:
    """``quantized::layer_norm`` over the last dims ``normalized_shape`` (N elements per row), into (scale, zero_point).

    Per row, from the codes (S = sum q, Q = sum q^2, int64):
        m  = fl32(fl32(S) / N)              mean of the codes (zero point included)
        mu = fl32(m - z)                    mean / s
        v  = max(fl32(fl32(fl32(Q) / N) - fl32(m * m)), 0)           var / s^2
        r  = fl32(double(s) / sqrt(double(fl32(fl32(v * s) * s)) + eps))   s / std   (eps in double)
        y  = fl32(fl32(fl32(fl32(q - z) - mu) * r) * gamma) + beta    (float32, no FMA)
    then element k < 32 floor(N / 32) of the row: rint(fl32(y * fl32(1 / fl32(S)))) + Z (vector), the rest
    the scalar quantize (zero point before rounding).
    """
    x = check_operand(x, "layer_norm")
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (int(normalized_shape),)
    if x.shape[x.ndim - len(shape):] != shape or x.ndim < len(shape):
        raise ValueError(f"quantized layer_norm: expected input (*, {', '.join(map(str, shape))}), got {x.shape}")
    scale, zero_point = check_qparams(scale, zero_point, x.dtype)
    n = int(np.prod(shape))
    codes = x.int_repr.reshape(-1, n)
    total = codes.astype(np.int64).sum(axis=1)
    squares = (codes.astype(np.int64) ** 2).sum(axis=1)
    m = (total.astype(f32) / f32(n)).astype(f32)
    mu = (m - f32(x.zero_point)).astype(f32)
    v = np.maximum(((squares.astype(f32) / f32(n)).astype(f32) - (m * m).astype(f32)).astype(f32), f32(0))
    s = f32(x.scale)
    r = (np.float64(s) / np.sqrt(((v * s).astype(f32) * s).astype(f32).astype(np.float64) + eps)).astype(f32)
    gamma = np.ones(n, f32) if weight is None else np.asarray(weight, f32).reshape(n)
    beta = np.zeros(n, f32) if bias is None else np.asarray(bias, f32).reshape(n)
    d = codes.astype(f32) - f32(x.zero_point)
    y = ((((d - mu[:, None]).astype(f32) * r[:, None]).astype(f32) * gamma).astype(f32) + beta).astype(f32)
    body = quantize_body(y, f32(1) / f32(scale), zero_point, x.dtype)
    tail = quantize_tail(y, scale, zero_point, x.dtype)
    out = np.where(np.arange(n) < n // ROW_STEP * ROW_STEP, body, tail)
    return QTensor(out.reshape(x.shape), scale, zero_point, None, x.dtype)
