"""Every module mapping of the eager flows in one place, as PyTorch's ``quantization_mappings.py``.

    float          --prepare_qat-->  QAT          (DEFAULT_QAT_MODULE_MAPPINGS)
    float / QAT    --convert------>  quantized    (DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, incl. QAT_CONVERT_...)
    float          --quantize_dynamic-->  dynamic (DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS)

plus where ``prepare`` puts observers (``OBSERVED_TYPES``) and which modules are swapped whole
(``FUSED_TYPES``). A mapping value is anything with ``from_float(module)``.
"""
from __future__ import annotations

from .. import nn
from ..nn.layers.attention import NonDynamicallyQuantizableLinear
from ..nn.module import Module
from . import qat_modules as qat
from . import qrnn
from .fuse import ConvBn2d, ConvBnReLU2d, ConvReLU2d, LinearReLU
from .modules import (DeQuantize, DeQuantStub, DynamicQuantizedLinear, DynamicQuantizedLinearReLU, Quantize,
                      QuantizedConv2d, QuantizedConvReLU2d, QuantizedLinear, QuantizedLinearReLU, QuantStub)
from .passthrough import (QuantizedAdaptiveAvgPool2d, QuantizedDropout, QuantizedFlatten, QuantizedHardtanh,
                          QuantizedMaxPool2d, QuantizedReLU, QuantizedReLU6, QuantizedSigmoid)
from .qmerge import (QFunctional, QuantizedAdd, QuantizedCat, QuantizedHardswish, QuantizedLeakyReLU, QuantizedMul,
                     QuantizedLayerNorm, QuantizedPReLU)
from .qconfig import QConfig
from .qembedding import QuantizedEmbedding

__all__ = ["DEFAULT_QAT_MODULE_MAPPINGS", "QAT_CONVERT_MODULE_MAPPINGS", "DEFAULT_STATIC_QUANT_MODULE_MAPPINGS",
           "DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS", "OBSERVED_TYPES", "SELF_OBSERVING_TYPES", "FUSED_TYPES", "to_observed_float", "FromQAT"]


def to_observed_float(mod: Module) -> Module:
    """A trained QAT module as the observed float module that ``convert`` quantizes, ≙ what PyTorch's
    ``nnq.*.from_float`` reads from a QAT module: ``to_float()`` (BN folded with the running statistics),
    with the *trained* ``weight_fake_quant`` as weight observer (it observes the final weight once more, then
    ``calculate_qparams``) and the trained ``activation_post_process`` for the output scale / zero point."""
    float_mod = mod.to_float()
    weight_fake_quant = mod.weight_fake_quant
    qconfig = QConfig(activation=mod.qconfig.activation, weight=lambda: weight_fake_quant)
    for m in float_mod.modules():
        m.qconfig = qconfig
    apq = getattr(mod, "activation_post_process", None)
    if apq is None:
        raise ValueError(f"{mod._name()} has no activation_post_process: run prepare_qat before convert")
    float_mod.add_module("activation_post_process", apq)
    return float_mod


class FromQAT:
    """A ``convert`` mapping value: ``from_float(qat_mod) = quantized_cls.from_float(to_observed_float(qat_mod))``."""

    def __init__(self, quantized_cls: type) -> None:
        self.quantized_cls = quantized_cls

    def from_float(self, mod: Module) -> Module:
        return self.quantized_cls.from_float(to_observed_float(mod))

    def __repr__(self) -> str:
        return f"FromQAT({self.quantized_cls.__name__})"


DEFAULT_QAT_MODULE_MAPPINGS: dict[type, type] = {
    nn.Linear: qat.Linear,
    nn.Conv2d: qat.Conv2d,
    LinearReLU: qat.LinearReLU,
    ConvReLU2d: qat.ConvReLU2d,
    ConvBn2d: qat.ConvBn2d,
    ConvBnReLU2d: qat.ConvBnReLU2d,
}

QAT_CONVERT_MODULE_MAPPINGS: dict[type, FromQAT] = {
    qat.Linear: FromQAT(QuantizedLinear), qat.LinearReLU: FromQAT(QuantizedLinearReLU),
    qat.Conv2d: FromQAT(QuantizedConv2d), qat.ConvReLU2d: FromQAT(QuantizedConvReLU2d),
    qat.ConvBn2d: FromQAT(QuantizedConv2d), qat.ConvBnReLU2d: FromQAT(QuantizedConvReLU2d),
}

DEFAULT_STATIC_QUANT_MODULE_MAPPINGS: dict[type, type | FromQAT] = {
    QuantStub: Quantize, DeQuantStub: DeQuantize,
    nn.Linear: QuantizedLinear, LinearReLU: QuantizedLinearReLU,
    # MultiheadAttention's out_proj: statically quantizable (PyTorch's static mapping lists it), never dynamically
    NonDynamicallyQuantizableLinear: QuantizedLinear,
    nn.Conv2d: QuantizedConv2d, ConvReLU2d: QuantizedConvReLU2d,
    nn.ReLU: QuantizedReLU, nn.MaxPool2d: QuantizedMaxPool2d, nn.Flatten: QuantizedFlatten,
    nn.Dropout: QuantizedDropout,
    nn.FloatFunctional: QFunctional, nn.Add: QuantizedAdd, nn.Mul: QuantizedMul, nn.Cat: QuantizedCat,
    nn.Hardswish: QuantizedHardswish, nn.LeakyReLU: QuantizedLeakyReLU, nn.PReLU: QuantizedPReLU, nn.ReLU6: QuantizedReLU6,
    nn.LayerNorm: QuantizedLayerNorm, nn.Embedding: QuantizedEmbedding,
    nn.Hardtanh: QuantizedHardtanh, nn.Sigmoid: QuantizedSigmoid, nn.AdaptiveAvgPool2d: QuantizedAdaptiveAvgPool2d,
    **QAT_CONVERT_MODULE_MAPPINGS,
}

DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS: dict[type, type] = {
    nn.Linear: DynamicQuantizedLinear, LinearReLU: DynamicQuantizedLinearReLU,
    nn.LSTM: qrnn.DynamicQuantizedLSTM, nn.GRU: qrnn.DynamicQuantizedGRU, nn.LSTMCell: qrnn.DynamicQuantizedLSTMCell,
    nn.GRUCell: qrnn.DynamicQuantizedGRUCell, nn.RNNCell: qrnn.DynamicQuantizedRNNCell,
    nn.Embedding: QuantizedEmbedding,
}

# layers whose output prepare() observes (their quantized versions need an output scale; ReLU6 and Embedding
# -- a PlaceholderObserver with float_qparams_weight_only_qconfig -- as PyTorch, which observes every module
# of its mapping). Not observed, as in PyTorch: Sigmoid (fixed output qparams),
# ReLU / Hardtanh / pooling / Flatten (output qparams = input's).
OBSERVED_TYPES = (QuantStub, nn.Linear, LinearReLU, nn.Conv2d, ConvReLU2d, nn.Add, nn.Mul, nn.Cat, nn.Hardswish,
                  nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.LayerNorm, nn.Embedding)
# modules that call their own ``activation_post_process`` child (prepare replaces it by the observer)
SELF_OBSERVING_TYPES = (nn.FloatFunctional,)
# modules that are swapped whole (their children are not entered)
FUSED_TYPES = (LinearReLU, ConvReLU2d)
