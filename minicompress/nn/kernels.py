"""Numba kernels of the float engine (arrays in, arrays out; each has a plain twin the tests hold it to)."""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["erf", "col2im", "channel_mean_var", "batch_norm_apply", "batch_norm_grad"]


@numba.vectorize(["float64(float64)"], cache=True)
def erf(x: float) -> float:
    """erf(x) in float64 by the C library's ``erf`` (as ``math.erf``, its twin), elementwise."""
    return math.erf(x)


def _valid_range(size: int, out: int, stride: int, offset: int) -> tuple[int, int]:
    """The outputs i in [lo, hi) whose input index i*stride + offset lies in [0, size)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = 0 if offset >= size else min(out, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


_valid = numba.njit(cache=True, inline="always")(_valid_range)


@numba.njit(cache=True)
def col2im(dcols: np.ndarray, n_: int, c_: int, h_: int, w_: int, kh: int, kw: int, sh: int, sw: int,
           ph: int, pw: int, dh: int, dw: int, oh: int, ow: int) -> np.ndarray:
    """Adjoint of ``functional.conv.im2col_batch``, terms that fall in the padding dropped:

        dx[n, c, i*sh + p*dh - ph, j*sw + q*dw - pw] += dcols[(c*KH + p)*KW + q, (n*OH + i)*OW + j]


    dcols: (C*KH*KW, N*OH*OW)  ->  dx: (N, C, H, W). Every element of dx receives its terms in (p, q)
    order, starting from 0, as the NumPy twin ``functional.conv.col2im`` adds its strided slices, so the
    two agree bit for bit.
    """
    dx = np.zeros((n_, c_, h_, w_), dtype=dcols.dtype)
    for c in range(c_):
        for p in range(kh):
            i_lo, i_hi = _valid(h_, oh, sh, p * dh - ph)
            for q in range(kw):
                row = (c * kh + p) * kw + q
                j_lo, j_hi = _valid(w_, ow, sw, q * dw - pw)
                for n in range(n_):
                    for i in range(i_lo, i_hi):
                        base = (n * oh + i) * ow
                        r = i * sh + p * dh - ph
                        for j in range(j_lo, j_hi):
                            dx[n, c, r, j * sw + q * dw - pw] += dcols[row, base + j]
    return dx


@numba.njit(cache=True)
def channel_mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel c of x (N, C, M), over its N*M values, accumulated in float64 (two passes):

        mean[c] = (1/(N*M)) sum x[:, c, :]        var[c] = (1/(N*M)) sum (x[:, c, :] - mean[c])^2   (biased)

    Returns float64 arrays (C,); the caller rounds them to x's dtype. Twin: NumPy's mean / var of x in float64.
    """
    n_, c_, m_ = x.shape
    mean = np.empty(c_, dtype=np.float64)
    var = np.empty(c_, dtype=np.float64)
    for c in range(c_):
        s = 0.0
        for n in range(n_):
            for k in range(m_):
                s += x[n, c, k]
        mu = s / (n_ * m_)
        s = 0.0
        for n in range(n_):
            for k in range(m_):
                d = x[n, c, k] - mu
                s += d * d
        mean[c], var[c] = mu, s / (n_ * m_)
    return mean, var


@numba.njit(cache=True)
def batch_norm_apply(x: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, weight: np.ndarray,
                     bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xhat = (x - mean[c]) * inv_std[c],  y = xhat * weight[c] + bias[c]   in x's dtype, in one pass.

    x: (N, C, M); mean, inv_std, weight, bias: (C,) of x's dtype  ->  (xhat, y), both (N, C, M). The same
    operations in the same order as the NumPy expressions, so the two agree bit for bit.
    """
    n_, c_, m_ = x.shape
    xhat = np.empty_like(x)
    y = np.empty_like(x)
    if m_ == 1:                                   # (N, C): the channel loop innermost, so that it vectorises
        for n in range(n_):
            for c in range(c_):
                h = (x[n, c, 0] - mean[c]) * inv_std[c]
                xhat[n, c, 0] = h
                y[n, c, 0] = h * weight[c] + bias[c]
        return xhat, y
    for n in range(n_):
        for c in range(c_):
            mu, s, w, b = mean[c], inv_std[c], weight[c], bias[c]
            for k in range(m_):
                h = (x[n, c, k] - mu) * s
                xhat[n, c, k] = h
                y[n, c, k] = h * w + b
    return xhat, y


@numba.njit(cache=True)
def batch_norm_grad(dy: np.ndarray, xhat: np.ndarray, scale: np.ndarray, count: float,
                    batch_stats: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel c (sums over n and k, accumulated in float64, rounded to dy's dtype):

        dbeta[c] = sum dy[:, c, :]        dgamma[c] = sum dy[:, c, :] * xhat[:, c, :]
        dx = scale[c] * (dy - dbeta[c] / M - xhat * dgamma[c] / M)     (batch statistics, M = count)
        dx = scale[c] * dy                                              (running statistics)

    dy, xhat: (N, C, M); scale: (C,) = gamma * inv_std; ``count`` (M) in dy's dtype -> (dx, dgamma, dbeta).
    """
    n_, c_, m_ = dy.shape
    dgamma = np.empty(c_, dtype=dy.dtype)
    dbeta = np.empty(c_, dtype=dy.dtype)
    for c in range(c_):
        sb, sg = 0.0, 0.0
        for n in range(n_):
            for k in range(m_):
                sb += dy[n, c, k]
                sg += dy[n, c, k] * xhat[n, c, k]
        dbeta[c], dgamma[c] = sb, sg
    dx = np.empty_like(dy)
    for n in range(n_):
        for c in range(c_):
            s = scale[c]
            if batch_stats:
                mb, mg = dbeta[c] / count, dgamma[c] / count
                for k in range(m_):
                    dx[n, c, k] = (dy[n, c, k] - mb - xhat[n, c, k] * mg) * s
            else:
                for k in range(m_):
                    dx[n, c, k] = dy[n, c, k] * s
    return dx, dgamma, dbeta
