"""Quantize chosen layers of a float model one by one, as ``torch.ao.quantization.QuantWrapper`` /
``add_quant_dequant``.

Eager-mode static quantization needs a ``QuantStub`` where float activations enter the quantized region and
a ``DeQuantStub`` where they leave it. A model that keeps most of its operations in float (a transformer:
LayerNorm, softmax attention and GELU stay float) gets one small quantized region per chosen layer::

    QuantWrapper(layer):   y = dequant(layer(quant(x)))                                       (1)

After ``prepare`` the ``quant`` stub observes x and the layer observes its output; after ``convert``

    y = DeQuantize(QuantizedLinear(Quantize(x)))    = s_o (q_o - z_o),  q_o from functional.linear   (2)

Recipe (PyTorch's)::

    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.qconfig = get_default_qconfig('x86')     # only these layers; everything else has no qconfig
    add_quant_dequant(model)                           # each Linear with a qconfig -> QuantWrapper(Linear)
    prepared = prepare(model); calibrate; qmodel = convert(prepared)

Mixed precision: ``layer.qconfig = None`` (or no qconfig) leaves that layer float, unwrapped.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.module import Module
from .modules import DeQuantStub, QuantStub

__all__ = ["QuantWrapper", "add_quant_dequant"]


class QuantWrapper(Module):
    """``quant`` -> ``module`` -> ``dequant`` (eq. 1), children named as PyTorch's (``quant``, ``dequant``,
    ``module``: state-dict keys ``module.weight``, ``quant.scale``, ...). The stubs take the wrapped module's
    ``qconfig`` (set when wrapping, as PyTorch's), so the region is observed exactly when the module is.
    Training mode follows the wrapped module. ``backward`` runs the three in reverse (for QAT)."""

    def __init__(self, module: Module) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"QuantWrapper: expected a Module, got {type(module).__name__}")
        qconfig = getattr(module, "qconfig", None)
        self.add_module("quant", QuantStub())
        self.add_module("dequant", DeQuantStub())
        self.add_module("module", module)
        if qconfig is not None:
            self.quant.qconfig = self.dequant.qconfig = qconfig
        self.train(module.training)

    def forward(self, x: Any) -> Any:
        return self.dequant(self.module(self.quant(x)))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self.quant.backward(self.module.backward(self.dequant.backward(grad_output)))


def add_quant_dequant(module: Module) -> Module:
    """Wrap every leaf module that has a (non-None) ``qconfig`` attribute in a :class:`QuantWrapper`, in place,
    ≙ ``torch.ao.quantization.add_quant_dequant``; returns ``module`` (or a new QuantWrapper when ``module``
    itself is such a leaf).

    Only the modules' own ``qconfig`` attributes count: put the qconfig on the layers to quantize (do not
    call ``propagate_qconfig_`` first, which would give every leaf -- GELU, Dropout -- its parent's qconfig).
    A leaf is a module without children; a layer called through its parent's code (MultiheadAttention's
    ``out_proj`` is called as a module here, unlike PyTorch, which reads ``out_proj.weight`` directly) works
    wrapped, a layer whose weight its parent reads directly would not.

    Unlike PyTorch's, a second call changes nothing: existing QuantWrappers are not entered (PyTorch's would
    wrap their stubs, which are leaves with a qconfig, once more).
    """
    if isinstance(module, QuantWrapper):
        return module
    if not list(module.children()) and getattr(module, "qconfig", None) is not None:
        return QuantWrapper(module)
    for name, child in list(module.named_children()):
        wrapped = add_quant_dequant(child)
        if wrapped is not child:
            module.add_module(name, wrapped)
    return module
