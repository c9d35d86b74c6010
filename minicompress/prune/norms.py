"""Per-channel norms: the importance of each slice ``t[..., c, ...]`` along one axis.

``channel_norms(t, n, dim)`` reduces every axis but ``dim`` (``torch.norm(t, p=n, dim=others)``)::

    n real, n != 0   (sum |t|^n) ^ (1/n)        n = 1: L1, n = 2 = 'fro': L2
    n = 0            number of nonzero entries
    n = inf / -inf   max |t| / min |t|
    n = 'nuc'        sum of singular values (only when exactly two axes are reduced)
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["channel_norms"]


def channel_norms(t: np.ndarray, n: Any, dim: int) -> np.ndarray:
    """L``n`` norm of each channel of ``t`` along ``dim``.  t: (..., C at dim, ...) -> (C,)"""
    dim = dim % t.ndim
    others = tuple(d for d in range(t.ndim) if d != dim)
    a = np.abs(t)
    if isinstance(n, str):
        if n == "fro":
            return np.sqrt((a * a).sum(axis=others))
        if n == "nuc":
            if len(others) != 2:
                raise ValueError(f"the nuclear norm needs exactly two reduced axes, got {len(others)} "
                                 f"(tensor of shape {t.shape}, dim={dim})")
            mats = np.moveaxis(t, dim, 0)  # (C, A, B)
            return np.linalg.svd(mats, compute_uv=False).sum(axis=-1).astype(t.dtype)
        raise ValueError(f"unknown norm {n!r}: expected a number, inf, -inf, 'fro' or 'nuc'")
    if not isinstance(n, numbers.Real):
        raise TypeError(f"norm order n must be a real number, inf, -inf, 'fro' or 'nuc', got {n!r}")
    if n == math.inf:
        return a.max(axis=others)
    if n == -math.inf:
        return a.min(axis=others)
    if n == 0:
        return (a != 0).sum(axis=others).astype(t.dtype)
    if n == 1:
        return a.sum(axis=others)
    if n == 2:
        return np.sqrt((a * a).sum(axis=others))
    return (a ** t.dtype.type(n)).sum(axis=others) ** t.dtype.type(1.0 / n)
