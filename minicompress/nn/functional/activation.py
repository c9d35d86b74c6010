"""Activation functions as forward/backward pairs.

Each ``*_forward(x, ...)`` returns ``(y, cache)``; each ``*_backward(dy, cache)`` returns ``dx``.
"""
from __future__ import annotations

import math

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


def relu_forward(x: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y = max(x, 0); cache is y. ``inplace`` overwrites x with y."""
    y = np.maximum(x, 0, out=x if inplace else None)
    return y, y


def relu_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * [y > 0]   (zero gradient at x = 0, as PyTorch's threshold_backward)."""
    y = cache
    return dy * (y > 0)


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01,
                       inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y = x * a,  a = 1 if x > 0 else negative_slope;  cache is a. ``inplace`` overwrites x with y."""
    a = np.array([negative_slope, 1], dtype=x.dtype)[(x > 0).view(np.uint8)]  # table look-up: exact 1 or slope
    y = np.multiply(x, a, out=x if inplace else None)
    return y, a


def leaky_relu_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * a   (a = 1 where x > 0, negative_slope elsewhere)."""
    return dy * cache


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = tanh(x); cache is y."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * (1 - y^2)."""
    y = cache
    return dy * (1 - y * y)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = 1 / (1 + exp(-x)), evaluated as e / (1 + e) with e = exp(x) for x < 0 (no overflow); cache is y."""
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1, e) / (1 + e)
    return y, y


def sigmoid_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * y * (1 - y)."""
    y = cache
    return dy * y * (1 - y)


_erf = np.vectorize(math.erf, otypes=[np.float64])  # exact to float64 rounding (libm); NumPy has no erf
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


def gelu_forward(x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray, tuple]:
    """approximate='none':  y = x * Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2   (the normal CDF)
    approximate='tanh':  y = x * (1 + tanh(u)) / 2,   u = sqrt(2/pi) * (x + 0.044715 x^3)

    erf is evaluated in float64 and the result rounded back to x's dtype.
    """
    if approximate == "none":
        cdf = (0.5 * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))).astype(x.dtype)
        return x * cdf, (x, approximate, cdf)
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_C * x * x * x))
        return 0.5 * x * (1 + t), (x, approximate, t)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """approximate='none':  dx = dy * (Phi(x) + x * phi(x)),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    approximate='tanh':  dx = dy * ((1 + t) / 2 + x/2 * (1 - t^2) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)),  t = tanh(u)
    """
    x, approximate, aux = cache
    if approximate == "none":
        pdf = np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return dy * (aux + x * pdf)
    t = aux
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * x * x)
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
