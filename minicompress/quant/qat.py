"""Quantization-aware training flow ≙ ``torch.ao.quantization`` eager mode QAT (PyTorch 2.13).

    model.train()
    model = fuse_modules_qat(model, [["0", "1", "2"], ...])   # Conv-BN-ReLU kept trainable (BN not folded yet)
    model.qconfig = get_default_qat_qconfig("x86")
    model = prepare_qat(model)          # Linear/Conv/fused -> QAT twins (weight_fake_quant) + activation fake-quants
    fit(model, ..., callbacks=[FreezeQAT(disable_observer_after=3, freeze_bn_after=2)])
                                        # ordinary training; ranges and BN statistics frozen for the last epochs
    model.eval(); qmodel = convert(model, {**DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, **QAT_CONVERT_MODULE_MAPPINGS})
                                        # the real int8 modules (BN folded with the running statistics)

``prepare_qat`` = propagate qconfig, swap modules with :data:`DEFAULT_QAT_MODULE_MAPPINGS` (``from_float``
shares the float Parameters), then ``prepare`` attaches ``activation_post_process`` fake-quants.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

from .. import nn
from ..nn.module import Module, Sequential
from . import qat_modules as qat
from .fake_quantize import (FakeQuantize, FusedMovingAvgObsFakeQuantize, default_fake_quant,
                            default_fused_per_channel_wt_fake_quant, default_fused_wt_fake_quant,
                            default_per_channel_weight_fake_quant, default_weight_fake_quant,
                            disable_fake_quant, disable_observer, enable_fake_quant, enable_observer)
from .fuse import ConvReLU2d, LinearReLU, _get, _set
from .observer import MovingAverageMinMaxObserver
from .qconfig import QConfig
from .qat_modules import freeze_bn_stats, update_bn_stats

__all__ = ["ConvBn2d", "ConvBnReLU2d", "fuse_modules_qat", "get_default_qat_qconfig", "default_qat_qconfig",
           "DEFAULT_QAT_MODULE_MAPPINGS", "prepare_qat", "freeze_bn_stats", "update_bn_stats",
           "disable_observer", "enable_observer", "disable_fake_quant", "enable_fake_quant",
           "to_observed_float", "QAT_CONVERT_MODULE_MAPPINGS", "FreezeQAT"]


# ==================================================================================== qconfigs
default_qat_qconfig = QConfig(activation=default_fake_quant, weight=default_weight_fake_quant)


def get_default_qat_qconfig(backend: str = "x86", version: int = 1) -> QConfig:
    """PyTorch 2.13's default QAT QConfig of a backend.

    version 1 (default): fused observer + fake-quant (``FusedMovingAvgObsFakeQuantize``);
    activations quint8 0..127 on x86/fbgemm (reduce_range), 0..255 on qnnpack/onednn; weights qint8
    symmetric, per channel except on qnnpack. version 0: the unfused ``FakeQuantize`` equivalents.
    """
    if backend not in ("fbgemm", "x86", "qnnpack", "onednn"):
        raise ValueError(f"get_default_qat_qconfig: backend {backend!r} not supported; "
                         f"expected 'x86', 'fbgemm', 'qnnpack' or 'onednn'")
    if version not in (0, 1):
        raise ValueError(f"get_default_qat_qconfig: version must be 0 or 1, got {version!r}")
    reduce_range = backend in ("fbgemm", "x86")
    act_kwargs = dict(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255)
    if backend != "onednn":
        act_kwargs["reduce_range"] = reduce_range
    if version == 1:
        weight = default_fused_wt_fake_quant if backend == "qnnpack" else default_fused_per_channel_wt_fake_quant
        return QConfig(activation=FusedMovingAvgObsFakeQuantize.with_args(**act_kwargs), weight=weight)
    weight = default_weight_fake_quant if backend == "qnnpack" else default_per_channel_weight_fake_quant
    return QConfig(activation=FakeQuantize.with_args(**act_kwargs), weight=weight)


# ==================================================================================== fusion for QAT
class ConvBn2d(Sequential):
    """Fused float Conv2d + BatchNorm2d for QAT (children '0', '1'), ≙ ``torch.ao.nn.intrinsic.ConvBn2d``."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d:
            raise TypeError(f"ConvBn2d expects (Conv2d, BatchNorm2d), got ({type(conv).__name__}, {type(bn).__name__})")
        super().__init__(conv, bn)


class ConvBnReLU2d(Sequential):
    """Fused float Conv2d + BatchNorm2d + ReLU for QAT, ≙ ``torch.ao.nn.intrinsic.ConvBnReLU2d``."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: nn.ReLU) -> None:
        if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d or type(relu) is not nn.ReLU:
            raise TypeError(f"ConvBnReLU2d expects (Conv2d, BatchNorm2d, ReLU), got "
                            f"({', '.join(type(m).__name__ for m in (conv, bn, relu))})")
        super().__init__(conv, bn, relu)


QAT_FUSER_METHODS: dict[tuple[type, ...], Callable[..., Module]] = {
    (nn.Conv2d, nn.BatchNorm2d): ConvBn2d,
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU): ConvBnReLU2d,
    (nn.Conv2d, nn.ReLU): ConvReLU2d,
    (nn.Linear, nn.ReLU): LinearReLU,
}


def fuse_modules_qat(model: Module, modules_to_fuse: Sequence[Any], inplace: bool = False) -> Module:
    """As ``fuse_modules`` but for training: Conv-BN(-ReLU) keep their BN (folded later, during QAT and
    at ``convert``), ≙ ``torch.ao.quantization.fuse_modules_qat``. The first module of each group becomes
    the fused one, the others ``Identity``; the model must be in training mode."""
    if not model.training:
        raise ValueError("fuse_modules_qat: the model must be in training mode (call model.train())")
    model = model if inplace else copy.deepcopy(model)
    groups = [modules_to_fuse] if modules_to_fuse and all(isinstance(n, str) for n in modules_to_fuse) \
        else modules_to_fuse
    for group in groups:
        mods = [_get(model, name) for name in group]
        method = QAT_FUSER_METHODS.get(tuple(type(m) for m in mods))
        if method is None:
            raise ValueError(f"fuse_modules_qat: cannot fuse {[type(m).__name__ for m in mods]}; supported: "
                             f"{[[t.__name__ for t in k] for k in QAT_FUSER_METHODS]}")
        for name, new in zip(group, [method(*mods)] + [nn.Identity() for _ in mods[1:]]):
            _set(model, name, new)
    return model


qat.ConvBn2d._FLOAT_MODULE = ConvBn2d
qat.ConvBnReLU2d._FLOAT_MODULE = ConvBnReLU2d

DEFAULT_QAT_MODULE_MAPPINGS: dict[type, type] = {
    nn.Linear: qat.Linear,
    nn.Conv2d: qat.Conv2d,
    LinearReLU: qat.LinearReLU,
    ConvReLU2d: qat.ConvReLU2d,
    ConvBn2d: qat.ConvBn2d,
    ConvBnReLU2d: qat.ConvBnReLU2d,
}


# ==================================================================================== prepare_qat
def _swap_qat(module: Module, mapping: dict[type, type]) -> None:
    """Replace (depth first) every child with a qconfig and a type in ``mapping`` by ``from_float(child)``."""
    for name, child in list(module.named_children()):
        if type(child) not in (LinearReLU, ConvReLU2d, ConvBn2d, ConvBnReLU2d):
            _swap_qat(child, mapping)
        qat_cls = mapping.get(type(child))
        if qat_cls is not None and child.__dict__.get("qconfig") is not None:
            new = qat_cls.from_float(child)
            for hook in child._forward_pre_hooks.values():
                new.register_forward_pre_hook(hook)
            module.add_module(name, new)


def prepare_qat(model: Module, mapping: dict[type, type] | None = None, inplace: bool = False) -> Module:
    """Swap Linear / Conv2d / fused modules for their QAT twins and attach activation fake-quants.

    ≙ ``torch.ao.quantization.prepare_qat``: ``propagate_qconfig_``, the module swap (``from_float`` reuses the
    float Parameter objects: with ``inplace=True`` an optimizer built before keeps working), then ``prepare``
    (an ``activation_post_process`` = ``qconfig.activation()`` on QuantStub and every QAT layer, applied to
    its output in forward and backward). The model must be in training mode.
    """
    from .flows import prepare, propagate_qconfig_
    if not model.training:
        raise ValueError("prepare_qat only works on models in training mode (call model.train())")
    model = model if inplace else copy.deepcopy(model)
    propagate_qconfig_(model)
    if not any(m.__dict__.get("qconfig") is not None for m in model.modules()):
        raise ValueError("prepare_qat: no module has a qconfig; set model.qconfig = get_default_qat_qconfig('x86')")
    _swap_qat(model, DEFAULT_QAT_MODULE_MAPPINGS if mapping is None else mapping)
    return prepare(model, inplace=True)


# ==================================================================================== convert support
def to_observed_float(mod: Module) -> Module:
    """A trained QAT module as the observed float module that ``convert`` quantizes, ≙ what PyTorch's
    ``nnq.*.from_float`` reads from a QAT module: ``to_float()`` (BN folded with the running statistics),
    with the *trained* ``weight_fake_quant`` as weight observer (it observes the final weight once more, then
    ``calculate_qparams``) and the trained ``activation_post_process`` for the output scale / zero point."""
    float_mod = mod.to_float()
    weight_fake_quant = mod.weight_fake_quant
    qconfig = QConfig(activation=mod.qconfig.activation, weight=lambda: weight_fake_quant)
    for m in float_mod.modules():
        object.__setattr__(m, "qconfig", qconfig)
    apq = mod._modules.get("activation_post_process")
    if apq is None:
        raise ValueError(f"{mod._name()} has no activation_post_process: run prepare_qat before convert")
    float_mod.add_module("activation_post_process", apq)
    return float_mod


class _FromQAT:
    """A ``convert`` mapping value: ``from_float(qat_mod) = quantized_cls.from_float(to_observed_float(qat_mod))``."""

    def __init__(self, quantized_cls: type) -> None:
        self.quantized_cls = quantized_cls

    def from_float(self, mod: Module) -> Module:
        return self.quantized_cls.from_float(to_observed_float(mod))

    def __repr__(self) -> str:
        return f"_FromQAT({self.quantized_cls.__name__})"


def _qat_convert_mappings() -> dict[type, Any]:
    from .modules import QuantizedConv2d, QuantizedConvReLU2d, QuantizedLinear, QuantizedLinearReLU
    return {qat.Linear: _FromQAT(QuantizedLinear), qat.LinearReLU: _FromQAT(QuantizedLinearReLU),
            qat.Conv2d: _FromQAT(QuantizedConv2d), qat.ConvReLU2d: _FromQAT(QuantizedConvReLU2d),
            qat.ConvBn2d: _FromQAT(QuantizedConv2d), qat.ConvBnReLU2d: _FromQAT(QuantizedConvReLU2d)}


QAT_CONVERT_MODULE_MAPPINGS: dict[type, Any] = _qat_convert_mappings()


class FreezeQAT:
    """``train.fit`` callback for the usual QAT schedule: after ``disable_observer_after`` epochs the
    fake-quant ranges stop moving (``disable_observer``); after ``freeze_bn_after`` epochs Conv-BN layers
    switch BN to its running statistics (``freeze_bn_stats``), so the last epochs train the folded weights
    that ``convert`` will quantize. ``None`` never freezes."""

    def __init__(self, disable_observer_after: int | None = None, freeze_bn_after: int | None = None) -> None:
        for name, value in (("disable_observer_after", disable_observer_after), ("freeze_bn_after", freeze_bn_after)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"FreezeQAT: {name} must be a non-negative int or None, got {value!r}")
        self.disable_observer_after, self.freeze_bn_after = disable_observer_after, freeze_bn_after

    def _apply(self, model: Module, epochs_done: int) -> None:
        if self.disable_observer_after is not None and epochs_done >= self.disable_observer_after:
            model.apply(disable_observer)
        if self.freeze_bn_after is not None and epochs_done >= self.freeze_bn_after:
            model.apply(freeze_bn_stats)

    def on_fit_begin(self, model: Module, optimizer: Any) -> None:
        self._apply(model, 0)

    def on_epoch_end(self, epoch: int, model: Module, optimizer: Any, logs: dict) -> None:
        self._apply(model, epoch + 1)
