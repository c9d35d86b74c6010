"""Bring a student feature and a teacher feature to comparable shapes, and the gradient back.

Two kinds of feature are tapped: a map (N, C, H, W) (a CNN stage) and tokens (N, S, D) (a
transformer block). Tokens are read the ViT way: with ``class_token=True`` token 0 is the class
token and the other S - 1 tokens are the patches of a square g x g grid, row by row (the order
``flatten(2)`` then ``permute`` gives them in ``models.VisionTransformer``)::

    tokens -> map      m[n, d, i, j] = z[n, 1 + i*g + j, d]       (class token dropped; its gradient is 0)   (1)
    map -> tokens      z[n, i*W + j, c] = m[n, c, i, j]                                                     (2)
    common size        (H, W) = (min(H_s, H_t), min(W_s, W_t)); a larger map is adaptive-average-pooled    (3)
                       to it (PyTorch's adaptive_avg_pool2d bins: equal blocks when the sides divide,
                       overlapping bins otherwise)

Teacher features are constants: only the student side keeps a cache for the backward.
"""
from __future__ import annotations

import math

import numpy as np

from ..nn.functional.pool import adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward


def token_grid(num_tokens: int, class_token: bool, name: str) -> int:
    """The side g of the patch grid of S tokens (S = g*g + 1 with a class token, else g*g)."""
    patches = num_tokens - 1 if class_token else num_tokens
    g = math.isqrt(max(patches, 0))
    if patches < 1 or g * g != patches:
        what = "S - 1 patch tokens after the class token" if class_token else "S patch tokens"
        raise ValueError(f"{name}: cannot lay {num_tokens} tokens on a square grid: expected {what} to be a "
                         f"square number (class_token={class_token})")
    return g


def tokens_to_map_forward(z: np.ndarray, class_token: bool, name: str) -> tuple[np.ndarray, tuple]:
    """Eq. (1):  z (N, S, D)  ->  m (N, D, g, g)."""
    n, s, d = z.shape
    g = token_grid(s, class_token, name)
    patches = z[:, 1:] if class_token else z                            # (N, g*g, D)
    return patches.transpose(0, 2, 1).reshape(n, d, g, g), (z.shape, class_token)


def tokens_to_map_backward(dm: np.ndarray, cache: tuple) -> np.ndarray:
    """dz[:, patches] = dm laid back as tokens; dz[:, 0] = 0 for the class token."""
    shape, class_token = cache
    n, d = dm.shape[:2]
    dz = np.zeros(shape, dm.dtype)
    dz[:, 1 if class_token else 0:] = dm.reshape(n, d, -1).transpose(0, 2, 1)
    return dz


def as_map_forward(f: np.ndarray, class_token: bool, name: str, which: str) -> tuple[np.ndarray, tuple | None]:
    """A map stays a map; tokens become one by eq. (1); anything else is a ValueError naming ``which``."""
    if f.ndim == 4:
        return f, None
    if f.ndim == 3:
        return tokens_to_map_forward(f, class_token, name)
    raise ValueError(f"{name}: expected the {which} feature as a map (N, C, H, W) or tokens (N, S, D), got {f.shape}")


def as_map_backward(dm: np.ndarray, cache: tuple | None) -> np.ndarray:
    return dm if cache is None else tokens_to_map_backward(dm, cache)


def pool_to_forward(m: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple | None]:
    """Eq. (3) for one map: adaptive average pooling to ``size`` (nothing when it already has it)."""
    if m.shape[2:] == tuple(size):
        return m, None
    return adaptive_avg_pool2d_forward(m, size)


def pool_to_backward(dm: np.ndarray, cache: tuple | None) -> np.ndarray:
    return dm if cache is None else adaptive_avg_pool2d_backward(dm, cache)


def common_maps(f_s: np.ndarray, f_t: np.ndarray, class_token: bool,
                name: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Both features as maps of one spatial size (eqs. 1, 3): (m_s, m_t, cache for ``common_maps_backward``).

    f_s, f_t: maps or tokens with the same N; channel counts may differ.
    """
    if len(f_s) != len(f_t):
        raise ValueError(f"{name}: student and teacher features have different batch sizes: student {f_s.shape}, "
                         f"teacher {f_t.shape}")
    m_s, token_cache = as_map_forward(f_s, class_token, name, "student")
    m_t, _ = as_map_forward(f_t, class_token, name, "teacher")
    size = (min(m_s.shape[2], m_t.shape[2]), min(m_s.shape[3], m_t.shape[3]))
    m_s, pool_cache = pool_to_forward(m_s, size)
    m_t, _ = pool_to_forward(m_t, size)
    return m_s, m_t, (token_cache, pool_cache)


def common_maps_backward(dm_s: np.ndarray, cache: tuple) -> np.ndarray:
    """d f_s from d m_s: through the pooling, then back to tokens if the student gave tokens."""
    token_cache, pool_cache = cache
    return as_map_backward(pool_to_backward(dm_s, pool_cache), token_cache)


def channels_last(m: np.ndarray) -> np.ndarray:
    """Eq. (2) without the flattening: (N, C, H, W) -> (N, H, W, C), for a Linear over channels."""
    return m.transpose(0, 2, 3, 1)
