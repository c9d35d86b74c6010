"""Numba kernels of the float engine (arrays in, arrays out; each has a plain twin the tests hold it to)."""
from __future__ import annotations

import math

import numba

__all__ = ["erf"]


@numba.vectorize(["float64(float64)"], cache=True)
def erf(x: float) -> float:
    """erf(x) in float64 by the C library's ``erf`` (as ``math.erf``, its twin), elementwise."""
    return math.erf(x)
