"""Numba kernel of the SGD update: one pass over a parameter, no temporaries.

The optimizer contract is that ``step()`` updates ``p.data`` (and the momentum buffer) in place, so
this kernel writes into the arrays it is given and returns nothing. Its twin is the NumPy form in
``SGD._update_numpy``; both compute in the parameter's dtype (the caller casts lr, momentum and
dampening to it) and in the same order, without fastmath, so they agree bit for bit.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["sgd_update"]


@numba.njit(cache=True)
def sgd_update(param: np.ndarray, grad: np.ndarray, buf: np.ndarray, lr: float, momentum: float,
               undamped: float, nesterov: bool, first: bool) -> None:
    """For every element i of the flat, contiguous arrays, in place:

        b_i = g_i  (first step)   or   b_i = momentum * b_i + undamped * g_i     (momentum != 0)
        d_i = g_i + momentum * b_i  (nesterov)   or   d_i = b_i   (or g_i without momentum)
        p_i = p_i - lr * d_i

    with undamped = 1 - dampening; ``buf`` is not touched when momentum is 0.
    """
    for i in range(param.size):
        g = grad[i]
        if momentum != 0:
            b = g if first else buf[i] * momentum + undamped * g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        param[i] = param[i] - lr * g
