"""Depthwise int8 convolution (groups = in channels, one or more output channels per group): one kernel.

``functional.conv2d`` runs one GEMM per group; with a depthwise convolution (MobileNetV2's 3x3 layers) that is
C tiny GEMMs of K = KH*KW columns and one output column each, and the per-group Python work dominates
(hundreds of groups per layer). Here, with ``cols`` from ``kernels.im2col`` (rows = output positions, columns
(g, p, q) since C/groups = 1; padding = z_a) and the weight codes w (OC, K), output channel o reading input
channel g = o // (OC / C):

    raw[m, o] = sum_k (cols[m, gK + k] - z_a) * (w[o, k] - z_w[o])                                  (1)
    out[m, o] = requant_epilogue(raw[m, o], bias_term[o], mult[o], z_o, lo)                           (2)

(1) is the zero-point-corrected sum of ``quantization.md`` (5) written out, the same integer (int32,
wrapping alike) as the per-group GEMM's ``acc - z_a c_j - r_i z_w[j]``; (2) is the same epilogue with the same
per-channel ``requant_params``. The NumPy twin is ``reference.depthwise_requant``.

fbgemm's depthwise fast path (``fbgemm_fast_path``: what PyTorch 2.13 runs for such layers) multiplies uint8
activations by int8 weights with ``vpmaddubsw``, which adds two neighbouring products into a *saturating* int16,
then sums those in int32. With ``saturate=True`` the kernel computes what fbgemm computes::

    raw'[m, o] = sum_pairs sat16(x_k w_k + x_k+1 w_k+1) - z_a sum_k w_k - z_w[o] sum_k x_k + K z_a z_w[o]   (1')

pairs (0, 1), (2, 3), ... of the taps in (kh, kw) order, the last one alone when K is odd; x = cols (raw
codes), sat16 clamps to [-32768, 32767]. (1') equals (1) unless a pair leaves int16 -- |x w| > 16383 on both
taps, i.e. activation codes above 127 next to weight codes near -128 (PyTorch's ``reduce_range`` keeps
calibrated activations at 0..127 to avoid it; values beyond the calibrated range still reach 255). Measured
against torch 2.13 on adversarial codes: 0 mismatches with (1'), thousands with (1), for 3x3 / 5x5 / 7x7,
stride 1 and 2, any z_a, channel multiplier 1 and 2; exact (1) outside the fast path.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import requant_epilogue

INT16_MIN, INT16_MAX = -32768, 32767


def fbgemm_fast_path(in_channels: int, out_channels: int, groups: int, kernel: tuple[int, int],
                     stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> bool:
    """fbgemm's ``takeDepthWiseFastPath`` for 2-D convolutions: groups = C, OC in {C, 2C}, C % 8 == 0, strides
    1 or 2, a square odd kernel, no dilation, 'same' padding (K - 1) / 2 (measured, module docstring)."""
    kh, kw = kernel
    return (groups == in_channels and out_channels in (groups, 2 * groups) and groups % 8 == 0
            and all(s in (1, 2) for s in stride) and kh == kw and kh % 2 == 1 and dilation == (1, 1)
            and padding == ((kh - 1) // 2, (kw - 1) // 2))


@njit(cache=True, parallel=True)
def depthwise_requant(cols, w, a_zp, w_zp, bias_term, mult, out_zp, relu, saturate, out):
    """Eqs. (1)-(2), or (1')-(2) with ``saturate``: cols uint8 (M, C*K), w int8 (OC, K), w_zp int64 (OC,),
    bias_term / mult float32 (OC,) -> out uint8 (M, OC). lo = out_zp for a fused ReLU, else 0.
    Returns how many int16 pair sums saturated."""
    m_rows = cols.shape[0]
    out_channels, k = w.shape
    per_group = out_channels // (cols.shape[1] // k)
    lo = np.int32(out_zp) if relu else np.int32(0)
    za = np.int64(a_zp)
    sum_w = np.zeros(out_channels, np.int64)          # (1')'s weight sums: once per channel, not per output
    for o in range(out_channels):
        for j in range(k):
            sum_w[o] += np.int64(w[o, j])
    clipped = np.zeros(m_rows, np.int64)
    for m in prange(m_rows):
        for o in range(out_channels):
            base = (o // per_group) * k
            zw = np.int64(w_zp[o])
            acc = np.int64(0)
            if saturate:
                for j in range(0, k, 2):
                    pair = np.int64(cols[m, base + j]) * np.int64(w[o, j])
                    if j + 1 < k:
                        pair += np.int64(cols[m, base + j + 1]) * np.int64(w[o, j + 1])
                    if pair > INT16_MAX:
                        pair = np.int64(INT16_MAX)
                        clipped[m] += 1
                    elif pair < INT16_MIN:
                        pair = np.int64(INT16_MIN)
                        clipped[m] += 1
                    acc += pair
                acc += -za * sum_w[o] + np.int64(k) * za * zw
                if zw != 0:                           # symmetric weights (z_w = 0) need no activation sum
                    sum_x = np.int64(0)
                    for j in range(k):
                        sum_x += np.int64(cols[m, base + j])
                    acc -= zw * sum_x
            else:
                for j in range(k):
                    acc += (np.int64(cols[m, base + j]) - za) * (np.int64(w[o, j]) - zw)
            out[m, o] = requant_epilogue(np.int32(acc), bias_term[o], mult[o], out_zp, lo)
    return clipped.sum()
