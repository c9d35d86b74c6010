"""Fully connected layer as a forward/backward pair."""
from __future__ import annotations

import numpy as np


def linear_forward(x: np.ndarray, weight: np.ndarray,
                   bias: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
    """y = x W^T + b

    x: (*, in)   W: (out, in)   b: (out,) or None   ->   y: (*, out)

    Returns ``(y, cache)``; the cache is ``(x, W)``.
    """
    y = np.matmul(x, weight.T)  # (*, out)
    if bias is not None:
        y += bias
    return y, (x, weight)


def linear_backward(dy: np.ndarray, cache: tuple,
                    needs_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dx = dy W      dW = dy^T x      db = sum_rows dy

    The leading axes ``*`` of x and dy are flattened into one axis of rows before the sums.
    dy: (*, out)  ->  dx: (*, in) (None unless ``needs_input_grad``),  dW: (out, in),  db: (out,)
    """
    x, weight = cache
    dy2 = dy.reshape(-1, dy.shape[-1])  # (rows, out)
    x2 = x.reshape(-1, x.shape[-1])     # (rows, in)
    dW = np.matmul(dy2.T, x2)
    db = dy2.sum(axis=0)
    dx = np.matmul(dy, weight) if needs_input_grad else None
    return dx, dW, db
