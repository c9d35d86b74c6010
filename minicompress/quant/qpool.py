"""Quantized average pooling and mean on QTensors, bit-exact with PyTorch 2.13 on x86 (``mean`` over
non-innermost dims: see its docstring).

PyTorch has two kernels for ``adaptive_avg_pool2d`` and picks one by memory layout: NCHW tensors go
through a plain loop over code sums, channels-last tensors (what its quantized conv returns) through
an NHWC kernel that subtracts the zero point and requantizes with fbgemm's quantize. Both keep the
input's (scale, zero_point).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.layers._utils import ntuple
from . import kernels
from .qops import check_operand, saturate, channels_last_contiguous, f32
from .qtensor import QTensor, dequantize, quantize_per_tensor


def _windows(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """Adaptive windows [floor(fl32(o * in) / out), ceil(fl32((o + 1) * in) / out)) (float32 division)."""
    return [(int(np.floor(f32(o * n_in) / f32(n_out))), int(np.ceil(f32((o + 1) * n_in) / f32(n_out))))
            for o in range(n_out)]


def adaptive_avg_pool2d(x: QTensor, output_size: Any) -> QTensor:
    """Quantized ``adaptive_avg_pool2d`` (output_size 1 is a ResNet's global average pooling).

    Per window of k = kh * kw codes with sum S = sum q:
    NCHW:          q' = nearbyint(fl32(S * fl32(fl32(1.0 / kh) / kw)))
    channels-last: A = S - z k (int32), m = fl32(fl32(fl32(s) / fl32(s)) / k), t = fl32(1 / m);
                   channels c < 8 * floor(C / 8): q' = clamp(rint(fma(A, fl32(1 / t), z)))   (fbgemm vector)
                   the other channels:          q' = clamp(rint(fl32(fl32(A * fl32(1 / t)) + z)))   (scalar)
    x: (N, C, H, W) or (C, H, W). The channels-last path is taken when ``qops.channels_last_contiguous``;
    for a 1x1 input pooled to a larger output PyTorch writes NHWC bytes into an NCHW tensor (reproduced).
    """
    x = check_operand(x, "adaptive_avg_pool2d")
    if x.ndim not in (3, 4) or 0 in x.shape:
        raise ValueError(f"quantized adaptive_avg_pool2d: expected a non-empty (N, C, H, W) or (C, H, W) input, "
                         f"got {x.shape}")
    oh, ow = ntuple(output_size, 2, "output_size", "quantized adaptive_avg_pool2d")
    codes = x.int_repr if x.ndim == 4 else x.int_repr[None]
    n, c, h, w = codes.shape
    out = np.empty((n, c, oh, ow), codes.dtype)
    s32, z = f32(x.scale), x.zero_point
    nhwc = channels_last_contiguous(x)                  # 4-D only: a (C, H, W) input is never channels-last
    vector = (np.arange(c) < c // 8 * 8)[None, :]
    for i, (h0, h1) in enumerate(_windows(h, oh)):
        for j, (w0, w1) in enumerate(_windows(w, ow)):
            kh, kw = h1 - h0, w1 - w0
            total = codes[:, :, h0:h1, w0:w1].astype(np.int64).sum(axis=(2, 3))        # (N, C)
            if not nhwc:
                r = f32(f32(1.0 / kh) / f32(kw))
                out[:, :, i, j] = np.rint((total.astype(f32) * r).astype(f32)).astype(codes.dtype)
                continue
            k = kh * kw
            inv = f32(1) / (f32(1) / f32(f32(s32 / s32) / f32(k)))
            acc = (total - z * k).astype(np.int32).astype(f32)
            fused = np.rint(kernels.fma32_elementwise(acc, np.full(acc.shape, inv), np.full(acc.shape, f32(z))))
            scalar = np.rint((acc * inv).astype(f32) + f32(z))
            out[:, :, i, j] = saturate(np.where(vector, fused, scalar), x.dtype)
    if nhwc and h * w == 1 and c > 1 and oh * ow > 1:
        # PyTorch allocates this output NCHW (1x1 inputs suggest no layout) but writes it in NHWC order
        out = np.ascontiguousarray(out.transpose(0, 2, 3, 1)).reshape(n, c, oh, ow)
    out = out if x.ndim == 4 else out[0]
    return QTensor(out, x.scale, x.zero_point, None, x.dtype, channels_last=x.channels_last)


def mean(x: QTensor, dim: Any = None, keepdim: bool = False) -> QTensor:
    """``torch.mean`` of a quantized tensor; the output keeps the input's (scale, zero_point).

    Innermost dims of a contiguous tensor (PyTorch's ``qmean_inner_dim`` kernel, exact):
        q' = nearbyint(fl32(fl32(S) / n)),  S = sum of the codes (int64), n = elements averaged.
    Any other dims (or a channels-last input): quantize_per_tensor(mean(dequantize(x)), s, z). PyTorch's
    float32 mean sums in its own order, so a code can differ by one where the float mean lands within
    rounding of a half-way point (126 of 35 823 codes in a random sweep); bit-exact whenever the float sums
    are exact.
    """
    x = check_operand(x, "mean")
    dims = tuple(range(x.ndim)) if dim is None or dim == () else \
        tuple(sorted(d % x.ndim for d in (dim if isinstance(dim, (tuple, list)) else (dim,))))
    contiguous = not x.channels_last or (x.ndim == 4 and (x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1))
    if contiguous and dims == tuple(range(x.ndim - len(dims), x.ndim)):
        n = int(np.prod([x.shape[d] for d in dims]))
        total = x.int_repr.astype(np.int64).sum(axis=dims, keepdims=keepdim)
        codes = np.rint((total.astype(f32) / f32(n)).astype(f32)).astype(x.int_repr.dtype)
        return QTensor(codes, x.scale, x.zero_point, None, x.dtype)
    y = dequantize(x).mean(axis=dims, keepdims=keepdim, dtype=np.float32)
    return quantize_per_tensor(np.asarray(y, np.float32), x.scale, x.zero_point, x.dtype)
