"""int8 quantization, mirroring ``torch.ao.quantization`` and reproducing PyTorch 2.13's x86 results bit for bit.

Layers of the package (each file one job):

- ``rounding``  named rounding modes ('pytorch-2.13', 'fake-quant', 'onnx', 'tflite')
- ``qtensor``   QTensor, quantize_per_tensor / quantize_per_channel / dequantize
- ``qparams``   (scale, zero_point) choosers: observers' rule, fbgemm's dynamic rule, fixed-point multipliers
- ``observer``, ``histogram``  observers with PyTorch's names, arguments and results
- ``kernels``, ``gemm``, ``vnni``  Numba kernels (quantize, im2col; int8 GEMM + fused epilogues; the VNNI
  micro-kernel); ``reference`` their NumPy twins
- ``functional``  linear_dynamic, linear, conv2d
- ``qops``, ``qactivations``, ``qpool``, ``qnorm``  add / mul / cat / scalar ops, activations, pooling / mean,
  layer norm on QTensors; ``qembedding``  weight-only int8 Embedding
  (PyTorch's vector-body / scalar-tail arithmetic, ``docs/quantized_ops.md``)
- ``modules``, ``passthrough``, ``qmerge``  quantized Modules; ``fuse``  BatchNorm folding and fused float modules
- ``qconfig``, ``flows``  QConfig, quantize_dynamic, prepare, convert; ``mappings``  every module mapping;
  ``wrapper``  QuantWrapper / add_quant_dequant (quantize chosen layers of a float model)
  ``graph_fusion``  graph_fusion_groups (the fuse_modules groups of an nn.GraphModule, e.g. an ONNX import)
- ``numeric_suite``  per-layer SQNR of int8 vs float (compare_weights, compare_model_outputs, layer_sensitivity)
- ``fake_quant_ops``, ``fake_quantize``, ``learnable``, ``qat_modules``, ``qat``  quantization-aware training;
  ``fixed_qparams``  fixed-range observers / fake-quants (sigmoid, tanh, softmax) and RecordingObserver
"""
from . import functional, qactivations, qnorm, qops, qpool
from .functional import Int32OverflowWarning
from .flows import convert, prepare, propagate_qconfig_, quantize_dynamic, swap_modules
from .mappings import (DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS, DEFAULT_QAT_MODULE_MAPPINGS,
                       DEFAULT_STATIC_QUANT_MODULE_MAPPINGS, QAT_CONVERT_MODULE_MAPPINGS, to_observed_float)
from .fuse import (ConvReLU2d, LinearReLU, fuse_conv_bn_eval, fuse_conv_bn_weights, fuse_linear_bn_eval,
                   fuse_linear_bn_weights, fuse_modules)
from .histogram import HistogramObserver
from .modules import (DeQuantize, DeQuantStub, WeightedQuantized, DynamicQuantizedLinear, DynamicQuantizedLinearReLU, Quantize,
                      QuantizedConv2d, QuantizedConvReLU2d, QuantizedLinear, QuantizedLinearReLU, QuantStub,
                      quantize_weight)
from .observer import (MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                       ObserverBase, PerChannelMinMaxObserver, PlaceholderObserver,
                       UniformQuantizationObserverBase)
from .passthrough import (QuantizedAdaptiveAvgPool2d, QuantizedDropout, QuantizedFlatten, QuantizedHardtanh,
                          QuantizedMaxPool2d, QuantizedReLU, QuantizedReLU6, QuantizedSigmoid)
from .qembedding import QuantizedEmbedding
from .qmerge import (QFunctional, QuantizedAdd, QuantizedCat, QuantizedHardswish, QuantizedLeakyReLU, QuantizedMul,
                     QuantizedLayerNorm, QuantizedPReLU)
from .qconfig import (QConfig, default_dynamic_qconfig, default_float_qparams_observer, default_float_qparams_observer_4bit,
                      float_qparams_weight_only_qconfig, default_histogram_observer, default_observer,
                      default_per_channel_qconfig, default_per_channel_weight_observer, default_qconfig,
                      default_weight_observer, get_default_qconfig, per_channel_dynamic_qconfig)
from .qparams import calculate_qmin_qmax, calculate_qparams, choose_quantization_params, quantize_multiplier
from .qtensor import QDTYPES, QTensor, dequantize, quantize_per_channel, quantize_per_tensor
from .rounding import MODES as ROUNDING_MODES
from . import qat_modules
from .fake_quantize import (FakeQuantize, FusedMovingAvgObsFakeQuantize, default_fake_quant,
                            default_fused_act_fake_quant, default_fused_per_channel_wt_fake_quant,
                            default_fused_wt_fake_quant, default_per_channel_weight_fake_quant,
                            default_weight_fake_quant, disable_fake_quant, disable_observer, enable_fake_quant,
                            enable_observer, fake_quantize_per_channel_affine,
                            fake_quantize_per_channel_affine_backward, fake_quantize_per_tensor_affine,
                            fake_quantize_per_tensor_affine_backward)
from .learnable import LearnableFakeQuantize
from .fixed_qparams import (FixedQParamsFakeQuantize, FixedQParamsObserver, RecordingObserver,
                            default_affine_fixed_qparams_fake_quant, default_affine_fixed_qparams_observer,
                            default_fixed_qparams_range_0to1_fake_quant, default_fixed_qparams_range_0to1_observer,
                            default_fixed_qparams_range_neg1to1_fake_quant,
                            default_fixed_qparams_range_neg1to1_observer,
                            default_symmetric_fixed_qparams_fake_quant, default_symmetric_fixed_qparams_observer)
from .wrapper import QuantWrapper, add_quant_dequant
from .graph_fusion import graph_fusion_groups
from . import numeric_suite
from .numeric_suite import compare_model_outputs, compare_weights, compute_sqnr, layer_sensitivity
from .fuse import ConvBn2d, ConvBnReLU2d
from .qat import (FreezeQAT, default_qat_qconfig, freeze_bn_stats, fuse_modules_qat, get_default_qat_qconfig,
                  prepare_qat, update_bn_stats)

__all__ = [
    "functional", "Int32OverflowWarning", "QTensor", "QDTYPES", "quantize_per_tensor", "quantize_per_channel", "dequantize",
    "ROUNDING_MODES", "calculate_qmin_qmax", "calculate_qparams", "choose_quantization_params",
    "quantize_multiplier", "ObserverBase", "UniformQuantizationObserverBase", "MinMaxObserver",
    "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver", "PlaceholderObserver", "QConfig", "get_default_qconfig", "default_qconfig",
    "default_per_channel_qconfig", "default_dynamic_qconfig", "per_channel_dynamic_qconfig", "default_observer",
    "default_weight_observer", "default_per_channel_weight_observer", "default_histogram_observer",
    "QuantStub", "DeQuantStub", "Quantize", "DeQuantize", "QuantizedLinear", "QuantizedLinearReLU",
    "QuantizedConv2d", "QuantizedConvReLU2d", "DynamicQuantizedLinear", "DynamicQuantizedLinearReLU",
    "WeightedQuantized", "QuantizedReLU", "QuantizedMaxPool2d", "QuantizedFlatten", "QuantizedDropout", "quantize_weight",
    "qops", "qactivations", "qpool", "QFunctional", "QuantizedAdd", "QuantizedMul", "QuantizedCat", "QuantizedHardswish",
    "QuantizedLeakyReLU", "QuantizedPReLU", "QuantizedLayerNorm", "qnorm", "QuantizedEmbedding",
    "float_qparams_weight_only_qconfig", "default_float_qparams_observer", "QuantizedReLU6", "QuantizedHardtanh", "QuantizedSigmoid", "QuantizedAdaptiveAvgPool2d",
    "LinearReLU", "ConvReLU2d", "fuse_modules", "fuse_conv_bn_eval", "fuse_linear_bn_eval",
    "fuse_conv_bn_weights", "fuse_linear_bn_weights", "prepare", "convert", "quantize_dynamic",
    "propagate_qconfig_", "DEFAULT_STATIC_QUANT_MODULE_MAPPINGS", "DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS",
    "qat_modules", "FakeQuantize", "FusedMovingAvgObsFakeQuantize", "LearnableFakeQuantize",
    "fake_quantize_per_tensor_affine", "fake_quantize_per_tensor_affine_backward",
    "fake_quantize_per_channel_affine", "fake_quantize_per_channel_affine_backward",
    "default_fake_quant", "default_weight_fake_quant", "default_per_channel_weight_fake_quant",
    "default_fused_act_fake_quant", "default_fused_wt_fake_quant", "default_fused_per_channel_wt_fake_quant",
    "enable_observer", "disable_observer", "enable_fake_quant", "disable_fake_quant",
    "prepare_qat", "get_default_qat_qconfig", "default_qat_qconfig", "fuse_modules_qat", "ConvBn2d",
    "ConvBnReLU2d", "freeze_bn_stats", "update_bn_stats", "FreezeQAT", "DEFAULT_QAT_MODULE_MAPPINGS",
    "QAT_CONVERT_MODULE_MAPPINGS", "to_observed_float", "swap_modules",
    "FixedQParamsObserver", "FixedQParamsFakeQuantize", "RecordingObserver",
    "default_fixed_qparams_range_0to1_observer", "default_fixed_qparams_range_neg1to1_observer",
    "default_symmetric_fixed_qparams_observer", "default_affine_fixed_qparams_observer",
    "default_fixed_qparams_range_0to1_fake_quant", "default_fixed_qparams_range_neg1to1_fake_quant",
    "default_symmetric_fixed_qparams_fake_quant", "default_affine_fixed_qparams_fake_quant",
    "default_float_qparams_observer_4bit", "QuantWrapper", "add_quant_dequant", "graph_fusion_groups",
    "numeric_suite", "compute_sqnr", "compare_weights", "compare_model_outputs", "layer_sensitivity",
]
