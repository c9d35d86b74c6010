"""BatchNorm1d and BatchNorm2d: thin Modules around ``functional.norm``; they own the running statistics."""
from __future__ import annotations

import numpy as np

from ..functional.norm import (batch_norm_backward, batch_norm_forward, group_norm_backward, group_norm_forward,
                               layer_norm_backward, layer_norm_forward)
from ..module import Module, Parameter
from ._utils import check_array, check_grad


class _BatchNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta per channel, as PyTorch's BatchNorm.

    Training (or ``track_running_stats=False``): batch mean and biased batch variance normalise x,
    and the running statistics are updated with the *unbiased* variance:
        running_mean = (1 - m) running_mean + m mean,   running_var = (1 - m) running_var + m var * M/(M-1)
    with m = momentum, or m = 1 / num_batches_tracked (a cumulative average) when momentum is None.
    Evaluation: the running statistics normalise x.
    ``bias=False`` (keyword, PyTorch 2.13) keeps gamma but drops beta.
    """

    _shapes = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, bias: bool = True, dtype=None) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            if self.bias is not None:
                self.bias.data[...] = 0

    def _check_input(self, x: np.ndarray) -> None:
        ndims = (2, 3) if self._shapes == "1d" else (4,)
        c = self.num_features
        if x.ndim not in ndims or x.shape[1] != c:
            expected = f"(N, {c}) or (N, {c}, L)" if self._shapes == "1d" else f"(N, {c}, H, W)"
            raise ValueError(f"{self._name()}: expected input {expected}, got {x.shape}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight, bias = self.array("weight"), self.array("bias")
        dtype = weight.dtype if weight is not None else (None if self.running_mean is None else self.running_mean.dtype)
        check_array(self, x, dtype)
        self._check_input(x)
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats and not self.eps > 0:        # PyTorch's F.batch_norm checks (0/0 would be NaN)
            raise ValueError(f"{self._name()}: batch_norm eps must be positive during training, but got {self.eps}")
        if not self.eps >= 0:
            raise ValueError(f"{self._name()}: batch_norm eps must be non-negative, but got {self.eps}")
        per_channel = x.size // self.num_features
        if use_batch_stats and per_channel <= 1:
            raise ValueError(f"{self._name()}: expected more than 1 value per channel when training, "
                             f"got input {x.shape}")
        if use_batch_stats:
            y, cache = batch_norm_forward(x, weight, bias, self.eps)
        else:
            y, cache = batch_norm_forward(x, weight, bias, self.eps, self.running_mean, self.running_var)
        if self.training and self.track_running_stats:
            self._update_running_stats(cache.mean, cache.var, per_channel)
        self._save_for_backward((y.shape, cache))
        return y

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, per_channel: int) -> None:
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (per_channel / (per_channel - 1))
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += m * unbiased

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        dx, dgamma, dbeta = batch_norm_backward(grad_output, cache)
        if self.array("weight") is not None:
            self.accumulate_grad("weight", dgamma, fresh=True)
        if self.array("bias") is not None:
            self.accumulate_grad("bias", dbeta, fresh=True)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs per channel C, as ``torch.nn.BatchNorm1d``."""

    _shapes = "1d"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs per channel C, as ``torch.nn.BatchNorm2d``."""

    _shapes = "2d"


class _AffineNorm(Module):
    """Shared by LayerNorm and GroupNorm: optional gamma (ones) and beta (zeros) of ``shape``."""

    def _init_affine(self, shape: tuple[int, ...], affine: bool, bias: bool, dtype) -> None:
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if affine:
            self.weight = Parameter(np.ones(shape, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(shape, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def _grads(self, dgamma: np.ndarray | None, dbeta: np.ndarray) -> None:
        if self.weight is not None:
            self.accumulate_grad("weight", dgamma, fresh=True)
        if self.bias is not None:
            self.accumulate_grad("bias", dbeta, fresh=True)


class LayerNorm(_AffineNorm):
    """y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta over the last axes ``normalized_shape``,
    as ``torch.nn.LayerNorm`` (``elementwise_affine``, ``bias``; biased variance; keys weight, bias)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, dtype=None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        if not shape or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive ints, got {normalized_shape!r}")
        self.normalized_shape = tuple(int(n) for n in shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, bias, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = self.array("weight")
        check_array(self, x, None if weight is None else weight.dtype)
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim < k:
            raise ValueError(f"{self._name()}: expected input (*, {', '.join(map(str, self.normalized_shape))}), "
                             f"got {x.shape}")
        y, cache = layer_norm_forward(x, k, weight, self.array("bias"), self.eps)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        dx, dgamma, dbeta = layer_norm_backward(grad_output, cache)
        self._grads(dgamma, dbeta)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(_AffineNorm):
    """Normalise each sample over groups of ``num_channels / num_groups`` channels (and all positions),
    then gamma, beta per channel, as ``torch.nn.GroupNorm`` (input (N, C, *))."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 bias: bool = True, *, dtype=None) -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self._init_affine((num_channels,), affine, bias, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = self.array("weight")
        check_array(self, x, None if weight is None else weight.dtype)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"{self._name()}: expected input (N, {self.num_channels}, *), got {x.shape}")
        y, cache = group_norm_forward(x, self.num_groups, weight, self.array("bias"), self.eps)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        dx, dgamma, dbeta = group_norm_backward(grad_output, cache)
        self._grads(dgamma, dbeta)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")
