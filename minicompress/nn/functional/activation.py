"""Activation functions as forward/backward pairs.

Each ``*_forward(x, ...)`` returns ``(y, cache)``; each ``*_backward(dy, cache)`` returns ``dx``.
"""
from __future__ import annotations

import numpy as np


def softmax_forward(x: np.ndarray, dim: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """y_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x))   along ``dim`` (max shift for stability)."""
    z = np.exp(x - x.max(axis=dim, keepdims=True))
    y = z / z.sum(axis=dim, keepdims=True)
    return y, y


def softmax_backward(dy: np.ndarray, cache: np.ndarray, dim: int = -1) -> np.ndarray:
    """dx = y * (dy - sum_j dy_j y_j)   (Jacobian diag(y) - y y^T applied to dy)."""
    y = cache
    return y * (dy - (dy * y).sum(axis=dim, keepdims=True))


def log_softmax_forward(x: np.ndarray, dim: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """y = x - max(x) - log(sum_j exp(x_j - max(x)))   along ``dim``; cache is y."""
    shifted = x - x.max(axis=dim, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
    return y, y


def log_softmax_backward(dy: np.ndarray, cache: np.ndarray, dim: int = -1) -> np.ndarray:
    """dx = dy - softmax(x) * sum_j dy_j,  with softmax(x) = exp(y)."""
    y = cache
    return dy - np.exp(y) * dy.sum(axis=dim, keepdims=True)
