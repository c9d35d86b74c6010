"""Layer kinds, decided in one place by ``isinstance`` (as Torch-Pruning's ``module2type``).

A user's ``class MyLinear(nn.Linear)`` is a Linear to every tool: pruning's dependency groups, MAC
counting, quantization's mappings. The kinds::

    'linear'       y = x W^T + b                   weight (out, in)
    'conv'         Conv1d / Conv2d                 weight (out, in/groups, *kernel)
    'batchnorm'    per-channel affine normalisation
    'elementwise'  y[i] = f(x[i]) (activations, dropout, identity): keeps every axis and element
    'pool'         pooling over spatial axes: keeps the channel axis, changes the spatial ones
    'flatten'      merges axes (a reshape)
    'merge'        several inputs, one output (Add, Mul, Cat)
    'features'     keeps the last axis feature by feature: output[..., c] reads inputs[..., c] only (a ViT's
                   class-token concatenation and token selection)

A class outside ``nn`` declares its kind with a class attribute, ``declared_kind = 'features'`` (the ViT's
token modules) or ``'elementwise'`` (QuantStub / DeQuantStub, identities in float).
    'other'        anything else (a tool that needs to see through it must refuse it by name)
"""
from __future__ import annotations

from .layers import (GELU, Erf, AdaptiveAvgPool2d, Add, AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Cat, Conv1d,
                     Conv2d, Dropout, Flatten, Hardsigmoid, Hardswish, Hardtanh, Identity, LeakyReLU, Linear,
                     MaxPool1d, MaxPool2d, Mul, ReLU, Sigmoid, SiLU, Tanh)
from .layers import FloatFunctional, MultiheadAttention
from .module import Module

__all__ = ["KINDS", "layer_kind", "is_weighted", "TRACE_UNITS", "is_trace_unit"]

KINDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("linear", (Linear,)),
    ("conv", (Conv1d, Conv2d)),
    ("batchnorm", (BatchNorm1d, BatchNorm2d)),
    ("elementwise", (ReLU, LeakyReLU, Erf, Hardtanh, Hardswish, Hardsigmoid, SiLU, Tanh, Sigmoid, GELU, Dropout,
                     Identity)),
    ("pool", (MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, AdaptiveAvgPool2d)),
    ("flatten", (Flatten,)),
    ("merge", (Add, Mul, Cat)),
)


def layer_kind(module: Module) -> str:
    """The kind of ``module`` (module docstring): its class's ``declared_kind``, else the first entry of
    ``KINDS`` it is an instance of."""
    declared = getattr(type(module), "declared_kind", None)
    if declared is not None:
        return declared
    for kind, types in KINDS:
        if isinstance(module, types):
            return kind
    return "other"


def is_weighted(module: Module) -> bool:
    """A Linear or a convolution: the layers whose weight carries the model's multiply-accumulates."""
    return layer_kind(module) in ("linear", "conv")


# Modules with children that tracing treats as one unit (their children are called on arrays made inside).
TRACE_UNITS: tuple[type, ...] = (FloatFunctional, MultiheadAttention)


def is_trace_unit(module: Module) -> bool:
    """A module ``trace_graph`` records as one node: no children, or one of ``TRACE_UNITS``."""
    return isinstance(module, TRACE_UNITS) or not any(True for _ in module.children())
