"""Shape and regularisation ops as forward/backward pairs: flatten, dropout."""
from __future__ import annotations

import numpy as np


def flatten_forward(x: np.ndarray, start_dim: int = 1, end_dim: int = -1) -> tuple[np.ndarray, tuple]:
    """y = x with axes start_dim..end_dim merged into one (a reshape); cache is x's shape.

    x: (d0, ..., d_start, ..., d_end, ...)  ->  y: (d0, ..., d_start * ... * d_end, ...)
    """
    start, end = start_dim % max(x.ndim, 1), end_dim % max(x.ndim, 1)
    shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
    return x.reshape(shape), x.shape


def flatten_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = dy reshaped back to x's shape."""
    return dy.reshape(cache)


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator,
                    inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout:  y = x * m / (1 - p),   m ~ Bernoulli(1 - p) drawn independently per element.

    Kept elements are scaled so that E[y] = x; p = 1 drops everything (y = 0).
    The cache is the scaled mask m / (1 - p) in x's dtype.
    """
    keep = rng.random(x.shape, dtype=np.float32) >= p
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    mask = keep.astype(x.dtype)
    mask *= x.dtype.type(scale)
    y = np.multiply(x, mask, out=x if inplace else None)
    return y, mask


def dropout_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * m / (1 - p)."""
    return dy * cache


def embedding_forward(indices: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y[..., :] = weight[indices[...], :]   (a row look-up).   indices: (*) ints  ->  y: (*, D)"""
    return weight[indices], (indices, weight.shape)


def embedding_backward(dy: np.ndarray, cache: tuple, padding_idx: int | None = None) -> np.ndarray:
    """dW[k] = sum of dy[...] over every position whose index is k (repeats add up); dW[padding_idx] = 0."""
    indices, shape = cache
    dweight = np.zeros(shape, dtype=dy.dtype)
    np.add.at(dweight, indices.reshape(-1), dy.reshape(-1, shape[1]))
    if padding_idx is not None:
        dweight[padding_idx] = 0
    return dweight
