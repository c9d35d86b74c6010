"""Activation functions as forward/backward pairs.

Each ``*_forward(x, ...)`` returns ``(y, cache)``; each ``*_backward(dy, cache)`` returns ``dx``.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import erf


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


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 (libm's, through a Numba ufunc; NumPy has no erf)."""
    return erf(np.asarray(x, dtype=np.float64))
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


def hardtanh_forward(x: np.ndarray, min_val: float = -1.0, max_val: float = 1.0,
                     inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y = clamp(x, min_val, max_val); cache is the pass-through mask min_val < x < max_val (strict, as PyTorch)."""
    inside = (x > min_val) & (x < max_val)
    y = np.clip(x, x.dtype.type(min_val), x.dtype.type(max_val), out=x if inplace else None)
    return y, inside


def hardtanh_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * [min_val < x < max_val]   (ReLU6 is hardtanh(x, 0, 6))."""
    return dy * cache


def hardsigmoid_forward(x: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y = relu6(x + 3) / 6 = clamp(x / 6 + 1/2, 0, 1); cache is x (a copy when in place)."""
    cache = x.copy() if inplace else x
    y = np.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)
    if inplace:
        x[...] = y
        y = x
    return y, cache


def hardsigmoid_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy / 6 where -3 < x < 3, else 0."""
    x = cache
    return np.where((x > -3) & (x < 3), dy / dy.dtype.type(6), 0).astype(dy.dtype)


def hardswish_forward(x: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y = x * relu6(x + 3) / 6; cache is x (a copy when in place)."""
    cache = x.copy() if inplace else x
    y = x * np.clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)
    if inplace:
        x[...] = y
        y = x
    return y, cache


def hardswish_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = 0 for x <= -3,  dy * (x / 3 + 1/2) for -3 < x < 3,  dy for x >= 3.

    The open middle interval is what PyTorch 2.13's CPU kernel computes (measured: gradient 0 at
    x = -3 and dy at x = 3, although its scalar source reads ``x < -3`` / ``x <= 3``).
    """
    x = cache
    t = x.dtype.type
    return np.where(x <= -3, t(0), np.where(x < 3, dy * (x / t(3) + t(0.5)), dy)).astype(dy.dtype)


def silu_forward(x: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, tuple]:
    """y = x * sigmoid(x) (the swish); cache is (x, sigmoid(x))."""
    s, _ = sigmoid_forward(x)
    cache = (x.copy() if inplace else x, s)
    y = np.multiply(x, s, out=x if inplace else None)
    return y, cache


def silu_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = dy * s * (1 + x * (1 - s)),  s = sigmoid(x)."""
    x, s = cache
    return dy * s * (1 + x * (1 - s))


def prelu_forward(x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x if x > 0 else a_c * x, with a = ``weight`` (1,) shared or (C,) per channel on axis 1.

    x: any shape (axis 1 is the channel axis when there are C parameters)   ->   y: shape of x
    """
    a = _prelu_broadcast(weight, x.ndim)
    positive = x > 0
    return np.where(positive, x, a * x), (x, a, positive, weight.shape)


def prelu_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """dx = dy if x > 0 else a * dy;   da_c = sum over all but the channel axis of dy * x * [x <= 0]."""
    x, a, positive, weight_shape = cache
    dx = np.where(positive, dy, a * dy)
    contrib = np.where(positive, 0, dy * x)
    if weight_shape[0] == 1:
        return dx, np.array([contrib.sum()], dtype=dy.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    return dx, contrib.sum(axis=axes).astype(dy.dtype)


def _prelu_broadcast(weight: np.ndarray, ndim: int) -> np.ndarray:
    """(1,) -> a scalar; (C,) -> (1, C, 1, ...) against an input of ``ndim`` >= 2 axes."""
    if weight.shape[0] == 1:
        return weight.reshape(())
    return weight.reshape((1, -1) + (1,) * (ndim - 2))
