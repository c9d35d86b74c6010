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
from ..nn.module import Module
from .fake_quantize import (FakeQuantize, FusedMovingAvgObsFakeQuantize, default_fake_quant,
                            default_fused_per_channel_wt_fake_quant, default_fused_wt_fake_quant,
                            default_per_channel_weight_fake_quant, default_weight_fake_quant,
                            disable_fake_quant, disable_observer, enable_fake_quant, enable_observer)
from .flows import prepare, propagate_qconfig_, swap_modules
from .fuse import ConvBn2d, ConvBnReLU2d, ConvReLU2d, LinearReLU, _get
from .mappings import DEFAULT_QAT_MODULE_MAPPINGS, QAT_CONVERT_MODULE_MAPPINGS, to_observed_float
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
            model.set_submodule(name, new)
    return model


# ==================================================================================== prepare_qat
def prepare_qat(model: Module, mapping: dict[type, type] | None = None, inplace: bool = False) -> Module:
    """Swap Linear / Conv2d / fused modules for their QAT twins and attach activation fake-quants.

    ≙ ``torch.ao.quantization.prepare_qat``: ``propagate_qconfig_``, the module swap (``from_float`` reuses the
    float Parameter objects: with ``inplace=True`` an optimizer built before keeps working), then ``prepare``
    (an ``activation_post_process`` = ``qconfig.activation()`` on QuantStub and every QAT layer, applied to
    its output in forward and backward). The model must be in training mode.
    """
    if not model.training:
        raise ValueError("prepare_qat only works on models in training mode (call model.train())")
    model = model if inplace else copy.deepcopy(model)
    propagate_qconfig_(model)
    if not any(getattr(m, "qconfig", None) is not None for m in model.modules()):
        raise ValueError("prepare_qat: no module has a qconfig; set model.qconfig = get_default_qat_qconfig('x86')")
    swap_modules(model, DEFAULT_QAT_MODULE_MAPPINGS if mapping is None else mapping,
                 keep_whole=(LinearReLU, ConvReLU2d, ConvBn2d, ConvBnReLU2d))
    return prepare(model, inplace=True)


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
