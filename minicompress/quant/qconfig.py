"""QConfig: which observers (hence which qparams) a module's activations and weights get.

Defaults are PyTorch 2.13's (``torch/ao/quantization/{observer,qconfig}.py``)::

    default_observer                     MinMaxObserver(quant_min=0, quant_max=127)       quint8 affine
    default_weight_observer              MinMaxObserver(qint8, per_tensor_symmetric)      s = max|w| / 127.5
    default_per_channel_weight_observer  PerChannelMinMaxObserver(qint8, per_channel_symmetric)
    default_histogram_observer           HistogramObserver(quant_min=0, quant_max=127)
    default_dynamic_quant_observer       PlaceholderObserver(quint8, 0..255, is_dynamic=True)

    get_default_qconfig('x86' | 'fbgemm')  HistogramObserver(reduce_range=True) -> 0..127, per-channel weights
    get_default_qconfig('qnnpack')         HistogramObserver(reduce_range=False) -> 0..255, per-tensor weights
    get_default_qconfig('onednn')          HistogramObserver(reduce_range=False), per-channel weights
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any

from ..nn.module import Module
from .histogram import HistogramObserver
from .observer import MinMaxObserver, PerChannelMinMaxObserver, PlaceholderObserver


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """``activation`` and ``weight``: zero-argument factories of observers (``Observer.with_args(...)``)."""

    __slots__ = ()

    def __new__(cls, activation: Any, weight: Any) -> "QConfig":
        for what, factory in (("activation", activation), ("weight", weight)):
            if isinstance(factory, Module):
                raise ValueError(f"QConfig received an observer instance for {what}; pass a factory instead, "
                                 f"e.g. MinMaxObserver.with_args(dtype='qint8')")
            if not callable(factory):
                raise TypeError(f"QConfig {what} must be a zero-argument callable, got {factory!r}")
        return super().__new__(cls, activation, weight)


default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_weight_observer = MinMaxObserver.with_args(dtype="qint8", qscheme="per_tensor_symmetric")
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(dtype="qint8",
                                                                          qscheme="per_channel_symmetric")
weight_observer_range_neg_127_to_127 = MinMaxObserver.with_args(
    dtype="qint8", qscheme="per_tensor_symmetric", quant_min=-127, quant_max=127, eps=2 ** -12)
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
default_dynamic_quant_observer = PlaceholderObserver.with_args(dtype="quint8", quant_min=0, quant_max=255,
                                                               is_dynamic=True)

default_placeholder_observer = PlaceholderObserver
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(dtype="quint8",
                                                                     qscheme="per_channel_affine_float_qparams", ch_axis=0)
default_float_qparams_observer_4bit = PerChannelMinMaxObserver.with_args(
    dtype="quint4x2", qscheme="per_channel_affine_float_qparams", ch_axis=0)

default_qconfig = QConfig(activation=default_observer, weight=default_weight_observer)
# weight-only quantization of nn.Embedding (the only qconfig QuantizedEmbedding accepts, as PyTorch)
float_qparams_weight_only_qconfig = QConfig(activation=default_placeholder_observer, weight=default_float_qparams_observer)
default_per_channel_qconfig = QConfig(activation=default_observer, weight=default_per_channel_weight_observer)
default_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer, weight=default_weight_observer)
per_channel_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer,
                                      weight=default_per_channel_weight_observer)
# float16 weights, float32 compute (``quantize_dynamic(..., dtype='float16')``; ``quant.fp16``)
float16_dynamic_qconfig = QConfig(activation=PlaceholderObserver.with_args(dtype="float16", is_dynamic=True),
                                  weight=PlaceholderObserver.with_args(dtype="float16"))

BACKENDS = ("fbgemm", "x86", "qnnpack", "onednn")


def get_default_qconfig(backend: str = "x86", version: int = 0) -> QConfig:
    """The default post-training-quantization QConfig of a backend (PyTorch 2.13's choices)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} not supported; expected one of {BACKENDS}")
    if version != 0:
        raise ValueError(f"get_default_qconfig version {version} is not supported (only 0)")
    if backend in ("fbgemm", "x86"):
        return QConfig(activation=HistogramObserver.with_args(reduce_range=True),
                       weight=default_per_channel_weight_observer)
    if backend == "qnnpack":
        return QConfig(activation=HistogramObserver.with_args(reduce_range=False), weight=default_weight_observer)
    return QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                   weight=default_per_channel_weight_observer)
