"""Module fusion before quantization: fold BatchNorm into the preceding layer, pair layers with ReLU.

BatchNorm folding (``torch.nn.utils.fusion``, eval mode only; arithmetic in the weights' dtype)::

    r  = 1 / sqrt(running_var + eps)                         (torch.rsqrt: correctly rounded sqrt, then divide)
    W' = W * (gamma * r)[:, None, ...]                       one scale per output channel
    b' = (b - running_mean) * r * gamma + beta               b = 0 when the layer has no bias
    Linear + BatchNorm1d: bn_scale = gamma * r;  W' = W * bn_scale[:, None];  b' = (b - mean) * bn_scale + beta

so that ``bn(layer(x)) == layer'(x)`` up to float rounding. A fused layer + ReLU becomes
:class:`LinearReLU` / :class:`ConvReLU2d` (a two-child Sequential, as ``torch.ao.nn.intrinsic``), which
``convert`` turns into one quantized op with the ReLU folded into the output clamp.

``fuse_modules(model, [['conv1', 'bn1', 'relu1'], ['fc', 'relu2']])`` replaces the first module of each
group by the fused one and the others by ``Identity``; state-dict keys become ``conv1.0.weight`` etc.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np

from ..nn import BatchNorm1d, BatchNorm2d, Conv2d, Identity, Linear, ReLU
from ..nn.containers import Sequential
from ..nn.module import Module, Parameter


class LinearReLU(Sequential):
    """Fused Linear followed by ReLU (children '0' and '1')."""

    def __init__(self, linear: Linear, relu: ReLU) -> None:
        if not isinstance(linear, Linear) or not isinstance(relu, ReLU):
            raise TypeError(f"LinearReLU expects (Linear, ReLU), got ({type(linear).__name__}, {type(relu).__name__})")
        super().__init__(linear, relu)


class ConvReLU2d(Sequential):
    """Fused Conv2d followed by ReLU (children '0' and '1')."""

    def __init__(self, conv: Conv2d, relu: ReLU) -> None:
        if not isinstance(conv, Conv2d) or not isinstance(relu, ReLU):
            raise TypeError(f"ConvReLU2d expects (Conv2d, ReLU), got ({type(conv).__name__}, {type(relu).__name__})")
        super().__init__(conv, relu)


class ConvBn2d(Sequential):
    """Fused float Conv2d + BatchNorm2d for QAT (children '0', '1'), ≙ ``torch.ao.nn.intrinsic.ConvBn2d``."""

    def __init__(self, conv: Conv2d, bn: BatchNorm2d) -> None:
        if type(conv) is not Conv2d or type(bn) is not BatchNorm2d:
            raise TypeError(f"ConvBn2d expects (Conv2d, BatchNorm2d), got ({type(conv).__name__}, {type(bn).__name__})")
        super().__init__(conv, bn)


class ConvBnReLU2d(Sequential):
    """Fused float Conv2d + BatchNorm2d + ReLU for QAT, ≙ ``torch.ao.nn.intrinsic.ConvBnReLU2d``."""

    def __init__(self, conv: Conv2d, bn: BatchNorm2d, relu: ReLU) -> None:
        if type(conv) is not Conv2d or type(bn) is not BatchNorm2d or type(relu) is not ReLU:
            raise TypeError(f"ConvBnReLU2d expects (Conv2d, BatchNorm2d, ReLU), got "
                            f"({', '.join(type(m).__name__ for m in (conv, bn, relu))})")
        super().__init__(conv, bn, relu)


def _bn_arrays(bn: Module, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn._name()}: folding needs running statistics (track_running_stats=True)")
    n = bn.running_mean.shape[0]
    gamma, beta = _weight_bias(bn)
    gamma = np.ones(n, dtype) if gamma is None else gamma
    beta = np.zeros(n, dtype) if beta is None else beta
    return bn.running_mean, bn.running_var, gamma, beta


def _weight_bias(layer: Module) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The layer's weight and bias arrays; a parametrized (e.g. pruned) layer is refused, by name."""
    if layer.parametrizations():
        raise ValueError(f"fuse_modules: {layer._name()} has parametrized tensors {list(layer.parametrizations())} "
                         f"(pruned?); make them permanent first (prune.remove or prune.bake_pruning)")
    return tuple(None if p is None else p.data for p in (layer.weight, layer.bias))


def fuse_conv_bn_weights(w: np.ndarray, b: np.ndarray | None, mean: np.ndarray, var: np.ndarray, eps: float,
                         gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') of a convolution followed by an eval-mode BatchNorm (module docstring)."""
    dt = w.dtype
    b = np.zeros_like(mean) if b is None else b
    r = dt.type(1) / np.sqrt(var + dt.type(eps))
    w_fused = (w * (gamma * r).reshape((-1,) + (1,) * (w.ndim - 1))).astype(dt)
    b_fused = ((b - mean) * r * gamma + beta).astype(dt)
    return w_fused, b_fused


def fuse_linear_bn_weights(w: np.ndarray, b: np.ndarray | None, mean: np.ndarray, var: np.ndarray, eps: float,
                           gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') of a Linear followed by an eval-mode BatchNorm1d (module docstring)."""
    dt = w.dtype
    b = np.zeros_like(mean) if b is None else b
    bn_scale = gamma * (dt.type(1) / np.sqrt(var + dt.type(eps)))
    return (w * bn_scale[:, None]).astype(dt), ((b - mean) * bn_scale + beta).astype(dt)


def _check_eval(*mods: Module) -> None:
    if any(m.training for m in mods):
        raise ValueError("BatchNorm folding is only for eval mode: call model.eval() before fuse_modules")


def fuse_conv_bn_eval(conv: Conv2d, bn: BatchNorm2d) -> Conv2d:
    """A copy of ``conv`` with ``bn`` folded into its weight and bias."""
    _check_eval(conv, bn)
    fused = copy.deepcopy(conv)
    w, b = _weight_bias(conv)
    mean, var, gamma, beta = _bn_arrays(bn, w.dtype)
    w, b = fuse_conv_bn_weights(w, b, mean, var, bn.eps, gamma, beta)
    fused.weight, fused.bias = Parameter(w), Parameter(b)
    return fused


def fuse_linear_bn_eval(linear: Linear, bn: BatchNorm1d) -> Linear:
    """A copy of ``linear`` with ``bn`` folded into its weight and bias."""
    _check_eval(linear, bn)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise ValueError(f"cannot fold {bn._name()} into {linear._name()}: out_features must equal num_features")
    fused = copy.deepcopy(linear)
    w, b = _weight_bias(linear)
    mean, var, gamma, beta = _bn_arrays(bn, w.dtype)
    w, b = fuse_linear_bn_weights(w, b, mean, var, bn.eps, gamma, beta)
    fused.weight, fused.bias = Parameter(w), Parameter(b)
    return fused


def _conv_bn_relu(conv: Conv2d, bn: BatchNorm2d, relu: ReLU) -> ConvReLU2d:
    return ConvReLU2d(fuse_conv_bn_eval(conv, bn), relu)


FUSER_METHODS: dict[tuple[type, ...], Callable[..., Module]] = {
    (Conv2d, BatchNorm2d): fuse_conv_bn_eval,
    (Conv2d, BatchNorm2d, ReLU): _conv_bn_relu,
    (Conv2d, ReLU): ConvReLU2d,
    (Linear, ReLU): LinearReLU,
    (Linear, BatchNorm1d): fuse_linear_bn_eval,
}


def _get(model: Module, path: str) -> Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"fuse_modules: {type(model).__name__} has no submodule {path!r}") from None


def fuse_known_modules(mods: Sequence[Module]) -> list[Module]:
    """The fused module followed by Identity placeholders, for a supported type sequence."""
    types = tuple(type(m) for m in mods)
    method = FUSER_METHODS.get(types)
    if method is None:
        raise ValueError(f"cannot fuse {[t.__name__ for t in types]}; supported: "
                         f"{[[t.__name__ for t in k] for k in FUSER_METHODS]}")
    fused = method(*mods)
    for hook in mods[0].forward_pre_hooks():
        fused.register_forward_pre_hook(hook)
    return [fused] + [Identity() for _ in mods[1:]]


def fuse_modules(model: Module, modules_to_fuse: Sequence[Any], inplace: bool = False) -> Module:
    """Fuse each group of named submodules (a list of names, or a list of such lists); returns the model."""
    if not inplace:
        model = copy.deepcopy(model)
    groups = modules_to_fuse
    if groups and all(isinstance(n, str) for n in groups):
        groups = [groups]
    for group in groups:
        if len(group) < 2 or not all(isinstance(n, str) for n in group):
            raise ValueError(f"fuse_modules: each group must list at least two submodule names, got {group!r}")
        new = fuse_known_modules([_get(model, name) for name in group])
        for name, mod in zip(group, new):
            model.set_submodule(name, mod)
    return model
