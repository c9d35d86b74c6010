"""Depthwise int8 convolution (groups = in channels = out channels): one kernel for all channels.

``functional.conv2d`` runs one GEMM per group; with a depthwise convolution (MobileNetV2's 3x3 layers) that is
C tiny GEMMs of K = KH*KW columns and one output column each, and the per-group Python work dominates
(hundreds of groups per layer). Here, with ``cols`` from ``kernels.im2col`` (rows = output positions, columns
(g, p, q) since C/groups = 1) and the weight codes w (C, K):

    raw[m, c] = sum_k (cols[m, c*K + k] - z_a) * (w[c, k] - z_w[c])                                  (1)
    out[m, c] = requant_epilogue(raw[m, c], bias_term[c], mult[c], z_o, lo)                           (2)

(1) is the zero-point-corrected sum of ``quantization.md`` (5) written out, the same integer (int32,
wrapping alike) as the per-group GEMM's ``acc - z_a c_j - r_i z_w[j]``; (2) is the same epilogue with the same
per-channel ``requant_params``. So the codes are the per-group path's, bit for bit; the NumPy twin is
``reference.depthwise_requant`` (both held to each other and to the per-group path in the tests).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import requant_epilogue


@njit(cache=True, parallel=True)
def depthwise_requant(cols, w, a_zp, w_zp, bias_term, mult, out_zp, relu, out):
    """Eqs. (1)-(2): cols uint8 (M, C*K), w int8 (C, K), w_zp int64 (C,), bias_term / mult float32 (C,)
    -> out uint8 (M, C). lo = out_zp for a fused ReLU, else 0."""
    m_rows = cols.shape[0]
    channels, k = w.shape
    lo = np.int32(out_zp) if relu else np.int32(0)
    for m in prange(m_rows):
        for c in range(channels):
            acc = np.int64(0)
            zw = np.int64(w_zp[c])
            for j in range(k):
                acc += (np.int64(cols[m, c * k + j]) - np.int64(a_zp)) * (np.int64(w[c, j]) - zw)
            out[m, c] = requant_epilogue(np.int32(acc), bias_term[c], mult[c], out_zp, lo)
    return out
