"""Eager-mode quantization flows, as ``torch.ao.quantization.quantize``.

Dynamic:  ``qmodel = quantize_dynamic(model, {Linear}, dtype='qint8')``  (weights int8 now, activations
quantized per call). Static PTQ::

    model.eval(); model = fuse_modules(model, [['conv', 'bn', 'relu']])
    model.qconfig = get_default_qconfig('x86')
    prepared = prepare(model)          # observers on QuantStub and on every Linear / Conv2d (fused or not)
    for xb in calibration: prepared(xb)
    qmodel = convert(prepared)         # float layers swapped for quantized ones

``prepare`` propagates ``qconfig`` down the tree (a child keeps its own ``qconfig``; ``None`` opts out),
adds an ``activation_post_process`` child to each observed layer and makes it observe the layer's
output. (PyTorch does this with a forward hook; the engine has only pre-hooks, so the layer's bound
``forward``/``backward`` are wrapped per instance -- state-dict keys are PyTorch's, e.g.
``fc1.activation_post_process.min_val``.) ``convert`` swaps every module whose type is in the mapping
and removes the ``qconfig`` attributes. All three take ``inplace=False`` and return the model.
"""
from __future__ import annotations

import copy
import types
from typing import Any

import numpy as np

from ..nn import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from ..nn.module import Module
from .fuse import ConvReLU2d, LinearReLU
from .modules import (DeQuantize, DeQuantStub, DynamicQuantizedLinear, DynamicQuantizedLinearReLU, Quantize,
                      QuantizedConv2d, QuantizedConvReLU2d, QuantizedLinear, QuantizedLinearReLU, QuantStub)
from .passthrough import QuantizedDropout, QuantizedFlatten, QuantizedMaxPool2d, QuantizedReLU
from .qconfig import QConfig, default_dynamic_qconfig

DEFAULT_STATIC_QUANT_MODULE_MAPPINGS: dict[type, type] = {
    QuantStub: Quantize, DeQuantStub: DeQuantize,
    Linear: QuantizedLinear, LinearReLU: QuantizedLinearReLU,
    Conv2d: QuantizedConv2d, ConvReLU2d: QuantizedConvReLU2d,
    ReLU: QuantizedReLU, MaxPool2d: QuantizedMaxPool2d, Flatten: QuantizedFlatten, Dropout: QuantizedDropout,
}
from .qat import QAT_CONVERT_MODULE_MAPPINGS  # noqa: E402  (QAT modules convert too; qat imports flows lazily)

DEFAULT_STATIC_QUANT_MODULE_MAPPINGS.update(QAT_CONVERT_MODULE_MAPPINGS)
DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS: dict[type, type] = {
    Linear: DynamicQuantizedLinear, LinearReLU: DynamicQuantizedLinearReLU,
}
# layers whose output prepare() observes (their quantized versions need an output scale)
OBSERVED_TYPES = (QuantStub, Linear, LinearReLU, Conv2d, ConvReLU2d)
FUSED_TYPES = (LinearReLU, ConvReLU2d)


def propagate_qconfig_(module: Module, qconfig_dict: dict | None = None, _parent: Any = None,
                       _prefix: str = "") -> None:
    """Give every module a ``qconfig``: its own, else ``qconfig_dict[name]``, ``[type]``, or the parent's."""
    qconfig_dict = qconfig_dict or {}
    qconfig = qconfig_dict.get(type(module), _parent)
    qconfig = qconfig_dict.get(_prefix, qconfig)
    qconfig = module.__dict__.get("qconfig", qconfig)
    if qconfig is not None and not isinstance(qconfig, QConfig):
        raise TypeError(f"{module._name()}: qconfig must be a QConfig or None, got {qconfig!r}")
    object.__setattr__(module, "qconfig", qconfig)
    for name, child in module.named_children():
        propagate_qconfig_(child, qconfig_dict, qconfig, f"{_prefix}.{name}" if _prefix else name)


def _observed_forward(self: Module, *inputs: Any) -> Any:
    return self.activation_post_process(type(self).forward(self, *inputs))


def _observed_backward(self: Module, grad_output: np.ndarray) -> Any:
    return type(self).backward(self, self.activation_post_process.backward(grad_output))


def _add_observer(module: Module) -> None:
    """Attach ``activation_post_process`` and observe the module's output."""
    module.add_module("activation_post_process", module.qconfig.activation())
    object.__setattr__(module, "forward", types.MethodType(_observed_forward, module))
    object.__setattr__(module, "backward", types.MethodType(_observed_backward, module))


def _add_observers(module: Module) -> None:
    for child in module.children():
        if isinstance(child, FUSED_TYPES):
            if child.qconfig is not None:
                _add_observer(child)
        else:
            _add_observers(child)
    if isinstance(module, OBSERVED_TYPES) and not isinstance(module, (DeQuantStub, *FUSED_TYPES)) \
            and module.qconfig is not None:
        _add_observer(module)


def prepare(model: Module, inplace: bool = False) -> Module:
    """Insert observers (per ``qconfig``) so that calibration batches record activation ranges."""
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    if not any(m.qconfig is not None for m in model.modules()):
        raise ValueError("prepare: no module has a qconfig; set model.qconfig = get_default_qconfig('x86') first")
    _add_observers(model)
    return model


def _remove_qconfig(module: Module) -> None:
    for m in module.modules():
        m.__dict__.pop("qconfig", None)


def _swap(module: Module, mapping: dict[type, type]) -> None:
    for name, child in list(module.named_children()):
        if not isinstance(child, FUSED_TYPES):
            _swap(child, mapping)
        qcls = mapping.get(type(child))
        if qcls is not None and child.__dict__.get("qconfig") is not None:
            new = qcls.from_float(child)
            for hook in child._forward_pre_hooks.values():
                new.register_forward_pre_hook(hook)
            new.train(child.training)
            module.add_module(name, new)


def convert(model: Module, mapping: dict[type, type] | None = None, inplace: bool = False) -> Module:
    """Swap observed float modules for their quantized versions (default: the static mapping)."""
    if not inplace:
        model = copy.deepcopy(model)
    _swap(model, DEFAULT_STATIC_QUANT_MODULE_MAPPINGS if mapping is None else mapping)
    _remove_qconfig(model)
    return model


def quantize_dynamic(model: Module, qconfig_spec: Any = None, dtype: str = "qint8",
                     mapping: dict[type, type] | None = None, inplace: bool = False) -> Module:
    """Replace Linear layers by int8-weight dynamic versions (default: per-tensor symmetric weights).

    ``qconfig_spec``: None (every Linear), a set of types, or a dict {type or submodule name: QConfig}.
    """
    if dtype != "qint8":
        raise ValueError(f"quantize_dynamic supports dtype='qint8' only, got {dtype!r}")
    if qconfig_spec is None:
        qconfig_spec = {Linear: default_dynamic_qconfig}
    elif isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        qconfig_spec = {t: default_dynamic_qconfig for t in qconfig_spec}
    elif not isinstance(qconfig_spec, dict):
        raise TypeError(f"qconfig_spec must be None, a set of module types or a dict, got {qconfig_spec!r}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    propagate_qconfig_(model, qconfig_spec)
    return convert(model, DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS if mapping is None else mapping, inplace=True)
