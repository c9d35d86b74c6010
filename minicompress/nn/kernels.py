"""Numba kernels of the float engine (arrays in, arrays out; each has a plain twin the tests hold it to)."""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["erf", "col2im_add"]


@numba.vectorize(["float64(float64)"], cache=True)
def erf(x: float) -> float:
    """erf(x) in float64 by the C library's ``erf`` (as ``math.erf``, its twin), elementwise."""
    return math.erf(x)


@numba.njit(cache=True, parallel=True)
def col2im_add(dcols: np.ndarray, dxp: np.ndarray, stride_h: int, stride_w: int, dil_h: int, dil_w: int) -> None:
    """dxp[n, c, i*sh + p*dh, j*sw + q*dw] += dcols[n, c, p, q, i, j], offsets (p, q) in order.

    dcols: (N, C, KH, KW, OH, OW); dxp: (N, C, Hp, Wp), zero-filled by the caller. Each element of dxp
    receives its terms in the (p, q) order of ``functional.conv.col2im``'s loop, so the two agree bit
    for bit; parallel over samples and channels (each (n, c) plane is written by one thread only).
    """
    n_, c_, kh, kw, oh, ow = dcols.shape
    for nc in numba.prange(n_ * c_):
        n, c = nc // c_, nc % c_
        for p in range(kh):
            for q in range(kw):
                for i in range(oh):
                    row = i * stride_h + p * dil_h
                    for j in range(ow):
                        dxp[n, c, row, j * stride_w + q * dil_w] += dcols[n, c, p, q, i, j]
