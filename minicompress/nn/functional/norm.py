"""Batch normalisation as a forward/backward pair (derivation: docs/batchnorm_backward.md).

Statistics are taken per channel (axis 1) over every other axis: the batch and, for (N, C, L) and
(N, C, H, W) inputs, the positions. M below is the number of values per channel.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class BatchNormCache(NamedTuple):
    xhat: np.ndarray            # normalised input, same shape as x
    inv_std: np.ndarray         # (C,) 1 / sqrt(var + eps)
    weight: np.ndarray | None   # gamma (C,) or None
    mean: np.ndarray            # (C,) the mean used (batch mean, or running mean)
    var: np.ndarray             # (C,) the variance used (biased batch variance, or running variance)
    batch_stats: bool           # True: mean and var were computed from x (they depend on x)


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))  # (C,) -> (1, C, 1, ...) for broadcasting


def batch_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5,
                       running_mean: np.ndarray | None = None,
                       running_var: np.ndarray | None = None) -> tuple[np.ndarray, BatchNormCache]:
    """xhat = (x - mu) / sqrt(var + eps)        y = gamma * xhat + beta        (per channel c)

    Batch statistics (training, or no running statistics given):
        mu = (1/M) sum x,   var = (1/M) sum (x - mu)^2   (biased; the caller updates running stats with
        the unbiased var * M / (M - 1)).
    Otherwise (evaluation): mu, var = running_mean, running_var.

    x: (N, C) or (N, C, L) or (N, C, H, W)   gamma, beta: (C,) or None   ->   y: same shape as x
    """
    axes = (0,) + tuple(range(2, x.ndim))
    batch_stats = running_mean is None
    if batch_stats:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - _per_channel(mean, x.ndim)) * _per_channel(inv_std, x.ndim)
    y = xhat if weight is None else xhat * _per_channel(weight, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim)
    return y, BatchNormCache(xhat, inv_std, weight, mean, var, batch_stats)


def batch_norm_backward(dy: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dbeta = sum dy        dgamma = sum dy * xhat        (sums over everything but the channel axis)

    Batch statistics:  dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)
    Running statistics (constants):  dx = gamma * inv_std * dy

    dy: shape of x  ->  dx: shape of x,  dgamma: (C,),  dbeta: (C,)
    """
    xhat, inv_std, weight, _, _, batch_stats = cache
    axes = (0,) + tuple(range(2, dy.ndim))
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    scale = inv_std if weight is None else weight * inv_std
    if not batch_stats:
        return dy * _per_channel(scale, dy.ndim), dgamma, dbeta
    M = dy.size // dy.shape[1]
    dx = dy - _per_channel(dbeta / M, dy.ndim) - xhat * _per_channel(dgamma / M, dy.ndim)
    dx *= _per_channel(scale, dy.ndim)
    return dx, dgamma, dbeta
