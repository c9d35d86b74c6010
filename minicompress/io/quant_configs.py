"""Configs for the quantized modules whose constructors take what JSON cannot hold (a QTensor, child
modules, array buffers).

Used only for classes that define no ``_config()`` of their own. The trick is the same for all:
the config records what fixes the *shapes* (features, kernel, per-channel or not, bias or not);
``from_config`` builds the module around placeholder values of those shapes, and the loader then
puts the saved state (int8 weight, scales, zero points, bias) in place exactly.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..nn.module import Module
from .layer_shapes import conv_weight_shape, linear_weight_shape

_LINEAR_ARGS = ("in_features", "out_features")
_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def _placeholder_qweight(shape: tuple[int, ...], per_channel: bool) -> Any:
    from ..quant import QTensor
    codes = np.zeros(shape, np.int8)
    if per_channel:
        return QTensor(codes, np.ones(shape[0]), np.zeros(shape[0], np.int64), 0, "qint8")
    return QTensor(codes, 1.0, 0, None, "qint8")


def _weighted(args: tuple[str, ...], weight_shape: Callable[[dict], tuple], static: bool):
    """(to_config, from_config factory) for a module built from ``args`` + qweight + bias (+ scale, zp)."""
    def to_config(m: Module) -> dict:
        config = {a: getattr(m, a) for a in args}
        config["per_channel"] = bool(np.ndim(m.weight_scale) == 1)
        config["bias"] = m.bias is not None
        if static:
            config["scale"], config["zero_point"] = float(m.scale), int(m.zero_point)
        return config

    def from_config(cls: type) -> Callable[[dict], Module]:
        def build(config: dict) -> Module:
            kwargs = dict(config)
            per_channel, has_bias = kwargs.pop("per_channel"), kwargs.pop("bias")
            shape = weight_shape(kwargs)
            bias = np.zeros(shape[0], np.float32) if has_bias else None
            return cls(qweight=_placeholder_qweight(shape, per_channel), bias=bias, **kwargs)
        return build

    return to_config, from_config


_linear = _weighted(_LINEAR_ARGS, linear_weight_shape, static=True)
_dynamic = _weighted(_LINEAR_ARGS, linear_weight_shape, static=False)
_conv = _weighted(_CONV_ARGS, conv_weight_shape, static=True)


def _quantize_config(m: Module) -> dict:
    return {"scale": float(m.scale[0]), "zero_point": int(m.zero_point[0]), "dtype": m.dtype}


def _pair(first: str) -> tuple[Callable, Callable]:
    """A fused Sequential built as ``cls(first=child0, relu=child1)``."""
    return (lambda m: {first: m[0], "relu": m[1]}), (lambda cls: (lambda config: cls(**config)))


ADAPTERS: dict[str, tuple[Callable, Callable]] = {  # class name -> (to_config, from_config(cls))
    "minicompress.quant.Quantize": (_quantize_config, lambda cls: (lambda config: cls(**config))),
    "minicompress.quant.QuantizedLinear": _linear,
    "minicompress.quant.QuantizedLinearReLU": _linear,
    "minicompress.quant.QuantizedConv2d": _conv,
    "minicompress.quant.QuantizedConvReLU2d": _conv,
    "minicompress.quant.DynamicQuantizedLinear": _dynamic,
    "minicompress.quant.DynamicQuantizedLinearReLU": _dynamic,
    "minicompress.quant.LinearReLU": _pair("linear"),
    "minicompress.quant.ConvReLU2d": _pair("conv"),
}
