"""Numba kernels of the inference plans: channels-last (N, H, W, C) arrays in, arrays out."""
from __future__ import annotations

import numpy as np

from numba import njit

from ..quant.kernels import fma32, pad_nhwc_into


@njit(cache=True)
def max_pool_nhwc(x, kh, kw, sh, sw, ph, pw, dh, dw, out):
    """out[b, y, xo, c] = max over the window taps inside x of x[b, y*sh - ph + i*dh, xo*sw - pw + j*dw, c].

    x (N, H, W, C), any strides; out (N, OH, OW, C). Padding never wins (it is -inf, as in PyTorch's
    max pooling); a NaN tap wins and stays (``val > max or isnan(val)``, PyTorch's rule). Every window
    holds at least one tap of x (``pool_output_size`` guarantees it).
    """
    n, h, w, c = x.shape
    _, oh, ow, _ = out.shape
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                first = True
                for i in range(kh):
                    yi = y * sh - ph + i * dh
                    if yi < 0 or yi >= h:
                        continue
                    for j in range(kw):
                        xi = xo * sw - pw + j * dw
                        if xi < 0 or xi >= w:
                            continue
                        if first:
                            for ch in range(c):
                                out[b, y, xo, ch] = x[b, yi, xi, ch]
                            first = False
                        else:
                            for ch in range(c):
                                v = x[b, yi, xi, ch]
                                if v > out[b, y, xo, ch] or v != v:
                                    out[b, y, xo, ch] = v


@njit(cache=True, inline="always")
def clamp(v, lo, hi):
    """min(max(v, lo), hi), NaN staying NaN (np.clip's rule): ReLU is (0, inf), ReLU6 (0, 6), none (-inf, inf)."""
    return lo if v < lo else (hi if v > hi else v)


@njit(cache=True)
def add_bias_clamp(y, bias, lo, hi):
    """y[m, o] = clamp(y[m, o] + bias[o], lo, hi), in place, one pass."""
    for m in range(y.shape[0]):
        for o in range(y.shape[1]):
            y[m, o] = clamp(y[m, o] + bias[o], lo, hi)


@njit(cache=True)
def batch_norm_rows(x, mean, inv_std, weight, bias, relu, out):
    """out[n, c] = ((x[n, c] - mean[c]) * inv_std[c]) * weight[c] + bias[c] (the engine's eval BatchNorm, the
    same operations in the same order), then max(., 0) if ``relu``; x, out (N, C)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            v = ((x[n, c] - mean[c]) * inv_std[c]) * weight[c] + bias[c]
            out[n, c] = v if not relu or v >= 0 or v != v else 0


@njit(cache=True)
def global_avg_pool_nhwc(x, zero_point, inv, vector_channels, out):
    """PyTorch's channels-last quantized global average pooling (``quant.qpool.adaptive_avg_pool2d`` with output
    size 1): per sample and channel, A = sum of the H*W codes - z*H*W (int32), then
    q = clamp(rint(fma(A, inv, z))) for channels c < vector_channels (fbgemm's vector loop), else
    q = clamp(rint(fl32(fl32(A * inv) + z))) (its scalar tail); x (N, H, W, C) uint8, out (N, C)."""
    n, h, w, c = x.shape
    k = h * w
    zf = np.float32(zero_point)
    total = np.empty(c, np.int64)
    for b in range(n):
        total[:] = 0
        for y in range(h):
            for xi in range(w):
                for ch in range(c):
                    total[ch] += x[b, y, xi, ch]
        for ch in range(c):
            acc = np.float32(np.int32(total[ch] - zero_point * k))
            if ch < vector_channels:
                q = np.rint(fma32(acc, inv, zf))
            else:
                q = np.rint(np.float32(np.float32(acc * inv) + zf))
            q = np.float32(0) if q < 0 else q
            out[b, ch] = np.int32(np.float32(255) if q > 255 else q)


@njit(cache=True)
def depthwise_conv_nhwc(xp, kh, kw, sh, sw, dh, dw, oh, ow, w_t, bias, lo, hi, out):
    """A float depthwise convolution (one channel per group) on the zero-padded NHWC input xp (N, Hp, Wp, C):
    out[(b, y, xo), c] = bias[c] + sum_t xp[b, y*sh + i*dh, xo*sw + j*dw, c] * w_t[t, c] over the taps
    t = i*KW + j (in that order), then ``clamp(., lo, hi)``; w_t (KH*KW, C), out (N*OH*OW, C)."""
    n, _, _, c = xp.shape
    k = w_t.shape[0]
    tap_y, tap_x = np.empty(k, np.int64), np.empty(k, np.int64)
    for t in range(k):
        tap_y[t], tap_x[t] = (t // kw) * dh, (t % kw) * dw
    acc = np.empty(c, out.dtype)
    for b in range(n):
        xb = xp[b]
        for y in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    acc[ch] = bias[ch]
                for t in range(k):
                    yi, xi = y * sh + tap_y[t], xo * sw + tap_x[t]
                    for ch in range(c):
                        acc[ch] += xb[yi, xi, ch] * w_t[t, ch]
                row = (b * oh + y) * ow + xo
                for ch in range(c):
                    out[row, ch] = clamp(acc[ch], lo, hi)


@njit(cache=True)
def add_clamp_flat(a, b, lo, hi, out):
    """out[i] = clamp(a[i] + b[i], lo, hi); a, b, out flat (n,): FloatFunctional's ``add`` (-inf, inf) / ``add_relu``
    (0, inf), the same operations, so the same bits."""
    for i in range(out.shape[0]):
        out[i] = clamp(a[i] + b[i], lo, hi)


@njit(cache=True)
def global_avg_pool_float_nhwc(x, out):
    """out[b, c] = (sum over the H*W positions of x[b, :, :, c]) / (H*W), summed in row order in x's dtype;
    x (N, H, W, C), out (N, C)."""
    n, h, w, c = x.shape
    inv = 1.0 / (h * w)
    for b in range(n):
        for ch in range(c):
            out[b, ch] = 0
        for y in range(h):
            for xi in range(w):
                for ch in range(c):
                    out[b, ch] += x[b, y, xi, ch]
        for ch in range(c):
            out[b, ch] = out[b, ch] * inv


@njit(cache=True)
def depthwise_step(x, geometry, padded, w_t, bias, lo, hi, out):
    """A float plan's depthwise convolution in one call: x (N, H, W, C) C-contiguous; geometry int64
    (KH, KW, sh, sw, dh, dw, ph, pw, OH, OW); with padding, x is first copied into the interior of ``padded``
    (its zero border written once by the caller); then ``depthwise_conv_nhwc``."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geometry
    xp = x
    if ph or pw:
        pad_nhwc_into(x, ph, pw, padded.reshape(-1))
        xp = padded
    depthwise_conv_nhwc(xp, kh, kw, sh, sw, dh, dw, oh, ow, w_t, bias, lo, hi, out)
