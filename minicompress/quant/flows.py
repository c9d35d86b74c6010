"""Eager-mode quantization flows, as ``torch.ao.quantization.quantize``.

Dynamic:  ``qmodel = quantize_dynamic(model, {Linear}, dtype='qint8')``  (weights int8 now, activations
quantized per call). Static PTQ::

    model.eval(); model = fuse_modules(model, [['conv', 'bn', 'relu']])
    model.qconfig = get_default_qconfig('x86')
    prepared = prepare(model)          # observers on QuantStub, Linear / Conv2d (fused or not), merges, ...
    for xb in calibration: prepared(xb)
    qmodel = convert(prepared)         # float layers swapped for quantized ones

``prepare`` propagates ``qconfig`` down the tree (a child keeps its own ``qconfig``; ``None`` opts out),
adds an ``activation_post_process`` child to each observed layer and a forward hook that passes the
layer's output through it, as PyTorch does (its backward: the child's, the STE of a fake-quant in QAT;
state-dict keys are PyTorch's, e.g. ``fc1.activation_post_process.min_val``). ``convert`` swaps every
module whose type is in the mapping and removes the ``qconfig`` attributes. All three take
``inplace=False`` and return the model.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..nn import GRU, LSTM, Embedding, GRUCell, Linear, LSTMCell, RNNCell
from ..nn.module import Module
from .mappings import (DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS, DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, FUSED_TYPES,
                       OBSERVED_TYPES, SELF_OBSERVING_TYPES)
from .modules import DeQuantStub
from .qconfig import QConfig, default_dynamic_qconfig, float16_dynamic_qconfig, float_qparams_weight_only_qconfig

def propagate_qconfig_(module: Module, qconfig_dict: dict | None = None, _parent: Any = None,
                       _prefix: str = "") -> None:
    """Give every module a ``qconfig``: its own, else ``qconfig_dict[name]``, ``[type]``, or the parent's."""
    qconfig_dict = qconfig_dict or {}
    qconfig = qconfig_dict.get(type(module), _parent)
    qconfig = qconfig_dict.get(_prefix, qconfig)
    qconfig = getattr(module, "qconfig", qconfig)
    if qconfig is not None and not isinstance(qconfig, QConfig):
        raise TypeError(f"{module._name()}: qconfig must be a QConfig or None, got {qconfig!r}")
    module.qconfig = qconfig
    for name, child in module.named_children():
        propagate_qconfig_(child, qconfig_dict, qconfig, f"{_prefix}.{name}" if _prefix else name)


def observe_output(module: Module, inputs: tuple, output: Any) -> Any:
    """Forward hook of an observed layer: ``activation_post_process(output)`` (PyTorch's _observer_forward_hook)."""
    return module.activation_post_process(output)


def observe_output_backward(module: Module, grad_output: np.ndarray) -> np.ndarray:
    """Its reverse: identity for an observer, the straight-through mask for a fake-quant."""
    return module.activation_post_process.backward(grad_output)


def _add_observer(module: Module) -> None:
    """Attach ``activation_post_process`` and observe the module's output (a FloatFunctional calls its own
    ``activation_post_process`` child in each op, so it only gets the observer, as in PyTorch)."""
    module.add_module("activation_post_process", module.qconfig.activation())
    if not isinstance(module, SELF_OBSERVING_TYPES):
        module.register_forward_hook(observe_output, backward=observe_output_backward)


def _add_observers(module: Module) -> None:
    for child in module.children():
        if isinstance(child, FUSED_TYPES):
            if child.qconfig is not None:
                _add_observer(child)
        else:
            _add_observers(child)
    if isinstance(module, (*OBSERVED_TYPES, *SELF_OBSERVING_TYPES)) \
            and not isinstance(module, (DeQuantStub, *FUSED_TYPES)) and module.qconfig is not None:
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
        if hasattr(m, "qconfig"):
            del m.qconfig


def swap_modules(module: Module, mapping: dict[type, Any], keep_whole: tuple[type, ...] = FUSED_TYPES) -> None:
    """Replace (depth first) every child with a qconfig and a type in ``mapping`` by ``mapping[type].from_float``.

    The one swap routine of ``convert``, ``quantize_dynamic`` and ``prepare_qat`` (PyTorch's ``swap_module``):
    the new module keeps the old one's training mode and forward pre-hooks (not its observer hooks);
    children of ``keep_whole`` types (fused modules) are swapped whole, never entered.
    """
    for name, child in list(module.named_children()):
        if not isinstance(child, keep_whole):
            swap_modules(child, mapping, keep_whole)
        qcls = mapping.get(type(child))
        if qcls is not None and getattr(child, "qconfig", None) is not None:
            new = qcls.from_float(child)
            for hook in child.forward_pre_hooks():
                new.register_forward_pre_hook(hook)
            new.train(child.training)
            module.add_module(name, new)


def convert(model: Module, mapping: dict[type, type] | None = None, inplace: bool = False) -> Module:
    """Swap observed float modules for their quantized versions (default: the static mapping)."""
    if not inplace:
        model = copy.deepcopy(model)
    swap_modules(model, DEFAULT_STATIC_QUANT_MODULE_MAPPINGS if mapping is None else mapping)
    _remove_qconfig(model)
    return model


def quantize_dynamic(model: Module, qconfig_spec: Any = None, dtype: str = "qint8",
                     mapping: dict[type, type] | None = None, inplace: bool = False) -> Module:
    """Replace layers by dynamically quantized versions, as ``torch.ao.quantization.quantize_dynamic``.

    ``qconfig_spec``: None (PyTorch's default set for ``dtype``), a set of types (each gets ``dtype``'s
    default qconfig), or a dict {type or submodule name: QConfig}. ``dtype``:

    - ``'qint8'``: int8 weights (per-tensor symmetric by default), activations quantized per call;
      default set Linear, LSTM, GRU, LSTMCell, RNNCell, GRUCell (``quant.qrnn``);
    - ``'float16'``: float16 weights, float32 compute (``quant.fp16``); the same default set;
    - ``'quint8'``: weight-only int8 Embedding (``float_qparams_weight_only_qconfig``).
    """
    defaults = {"qint8": default_dynamic_qconfig, "float16": float16_dynamic_qconfig,
                "quint8": float_qparams_weight_only_qconfig}
    if dtype not in defaults:
        raise ValueError(f"quantize_dynamic: dtype must be one of {sorted(defaults)}, got {dtype!r} "
                         f"(PyTorch's 'quint4x2' 4-bit EmbeddingBag is not implemented)")
    if qconfig_spec is None:
        types = (Embedding,) if dtype == "quint8" else (Linear, LSTM, GRU, LSTMCell, RNNCell, GRUCell)
        qconfig_spec = {t: defaults[dtype] for t in types}
    elif isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        qconfig_spec = {t: defaults[dtype] for t in qconfig_spec}
    elif not isinstance(qconfig_spec, dict):
        raise TypeError(f"qconfig_spec must be None, a set of module types or a dict, got {qconfig_spec!r}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    propagate_qconfig_(model, qconfig_spec)
    return convert(model, DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS if mapping is None else mapping, inplace=True)
