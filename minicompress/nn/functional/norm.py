"""Normalisations as forward/backward pairs (derivation: docs/batchnorm_backward.md).

Batch norm takes statistics per channel (axis 1) over every other axis: the batch and, for (N, C, L)
and (N, C, H, W) inputs, the positions (M below: values per channel). Layer norm takes them per
sample over the last axes, group norm per sample and group of channels; both share one
normalise-over-axes pair, ``_normalize_forward`` / ``_normalize_backward``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels


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
        the unbiased var * M / (M - 1)); both summed in float64 (``kernels.channel_mean_var``).
    Otherwise (evaluation): mu, var = running_mean, running_var.
    xhat and y are written in one pass (``kernels.batch_norm_apply``).

    x: (N, C) or (N, C, L) or (N, C, H, W)   gamma, beta: (C,) or None   ->   y: same shape as x
    """
    x3 = x.reshape(x.shape[0], x.shape[1], -1)                      # (N, C, M)
    batch_stats = running_mean is None
    if batch_stats:
        mean, var = (v.astype(x.dtype) for v in kernels.channel_mean_var(x3))
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    C = x.shape[1]
    gamma = np.ones(C, x.dtype) if weight is None else weight.astype(x.dtype, copy=False)
    beta = np.zeros(C, x.dtype) if bias is None else bias.astype(x.dtype, copy=False)
    xhat, y = kernels.batch_norm_apply(x3, mean.astype(x.dtype, copy=False), inv_std, gamma, beta)
    return y.reshape(x.shape), BatchNormCache(xhat.reshape(x.shape), inv_std, weight, mean, var, batch_stats)


def batch_norm_backward(dy: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dbeta = sum dy        dgamma = sum dy * xhat        (sums over everything but the channel axis)

    Batch statistics:  dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)
    Running statistics (constants):  dx = gamma * inv_std * dy
    (``kernels.batch_norm_grad``: the sums in float64, dx in one pass.)

    dy: shape of x  ->  dx: shape of x,  dgamma: (C,),  dbeta: (C,)
    """
    xhat, inv_std, weight, _, _, batch_stats = cache
    scale = (inv_std if weight is None else weight * inv_std).astype(dy.dtype, copy=False)
    M = dy.size // dy.shape[1]
    dy3 = dy.reshape(dy.shape[0], dy.shape[1], -1)
    dx, dgamma, dbeta = kernels.batch_norm_grad(dy3, xhat.reshape(dy3.shape), scale, dy.dtype.type(M), batch_stats)
    return dx.reshape(dy.shape), dgamma, dbeta


def _normalize_forward(x: np.ndarray, axes: tuple[int, ...], eps: float) -> tuple[np.ndarray, tuple]:
    """xhat = (x - mean) / sqrt(var + eps) over ``axes`` (biased variance); cache (xhat, inv_std)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))
    xhat = (x - mean) * inv_std
    return xhat, (xhat, inv_std)


def _normalize_backward(dxhat: np.ndarray, cache: tuple, axes: tuple[int, ...]) -> np.ndarray:
    """dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (means over ``axes``)."""
    xhat, inv_std = cache
    return inv_std * (dxhat - dxhat.mean(axis=axes, keepdims=True)
                      - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))


def layer_norm_forward(x: np.ndarray, normalized_ndim: int, weight: np.ndarray | None, bias: np.ndarray | None,
                       eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """y = (x - mean) / sqrt(var + eps) * gamma + beta,  statistics over the last ``normalized_ndim`` axes.

    x: (*, *normalized_shape)   gamma, beta: normalized_shape or None   ->   y: shape of x
    """
    axes = tuple(range(x.ndim - normalized_ndim, x.ndim))
    xhat, cache = _normalize_forward(x, axes, eps)
    y = xhat if weight is None else xhat * weight
    if bias is not None:
        y = y + bias
    return y, (cache, axes, weight)


def layer_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """dgamma = sum dy * xhat,  dbeta = sum dy (over the leading axes);  dx through dxhat = dy * gamma."""
    norm_cache, axes, weight = cache
    lead = tuple(range(dy.ndim - len(axes)))
    dgamma = (dy * norm_cache[0]).sum(axis=lead) if weight is not None else None
    dbeta = dy.sum(axis=lead)
    dx = _normalize_backward(dy if weight is None else dy * weight, norm_cache, axes)
    return dx, dgamma, dbeta


def group_norm_forward(x: np.ndarray, num_groups: int, weight: np.ndarray | None, bias: np.ndarray | None,
                       eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """Statistics per sample and group of C / G consecutive channels; then gamma, beta per channel.

    x: (N, C, *)   gamma, beta: (C,) or None   ->   y: shape of x
    """
    grouped = x.reshape(x.shape[0], num_groups, -1)              # (N, G, C/G * prod(*))
    xhat, cache = _normalize_forward(grouped, (2,), eps)
    xhat = xhat.reshape(x.shape)
    y = xhat if weight is None else xhat * _per_channel(weight, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim)
    return y, (cache, weight, num_groups)


def group_norm_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """dgamma_c = sum dy * xhat,  dbeta_c = sum dy (over all but axis 1);  dx per group as layer norm's."""
    norm_cache, weight, num_groups = cache
    axes = (0,) + tuple(range(2, dy.ndim))
    xhat = norm_cache[0].reshape(dy.shape)
    dgamma = (dy * xhat).sum(axis=axes) if weight is not None else None
    dbeta = dy.sum(axis=axes)
    dxhat = dy if weight is None else dy * _per_channel(weight, dy.ndim)
    dx = _normalize_backward(dxhat.reshape(dy.shape[0], num_groups, -1), norm_cache, (2,))
    return dx.reshape(dy.shape), dgamma, dbeta
