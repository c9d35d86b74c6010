"""Numba kernels of the float engine (arrays in, arrays out; each has a plain twin the tests hold it to)."""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["erf", "col2im"]


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
