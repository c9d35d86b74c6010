"""Quantized Modules (inference only), as ``torch.ao.nn.quantized`` and ``torch.ao.quantization.stubs``.

Between a ``Quantize`` and a ``DeQuantize``, activations are :class:`QTensor` (quint8, per tensor).
``from_float(observed_module)`` builds each one from a prepared-and-calibrated float module: the
weight is observed with ``qconfig.weight()`` and quantized to qint8 (then clamped to the observer's
range, as ``_quantize_weight``); the output (scale, zero_point) comes from the module's
``activation_post_process`` observer.

State-dict keys (PyTorch's where it has plain tensors; its packed ``_packed_params`` become plain keys)::

    Quantize            scale float32 (1,), zero_point int64 (1,)                      == nnq.Quantize
    QuantizedLinear /   weight int8 (out, in) or (out, in/groups, kh, kw),              PyTorch: weight
    QuantizedConv2d     weight_scale float64 () or (out,), weight_zero_point int64 ()   (a qint8 tensor;
    (+ ReLU variants)   or (out,), bias float32 (out,), scale float64 (), zero_point     linear: inside
                        int64 ()                                                        _packed_params)
    DynamicQuantizedLinear  weight, weight_scale, weight_zero_point, bias              (no scale/zero_point)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn import Conv2d, Linear
from ..nn.module import Module
from . import functional as QF
from .fp16 import DynamicFloat16Linear
from .fuse import ConvReLU2d, LinearReLU
from .qconfig import default_dynamic_qconfig
from .qtensor import QTensor, dequantize, quantize_per_channel, quantize_per_tensor


class QuantStub(Module):
    """Marks where float activations become quantized; identity until ``convert`` swaps it for Quantize."""

    declared_kind = "elementwise"     # nn.kinds: an identity to tracing and pruning

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output


class DeQuantStub(QuantStub):
    """Marks where quantized activations become float again; ``convert`` swaps it for DeQuantize."""


def has_observed(mod: Module) -> bool:
    """Whether ``mod``'s ``activation_post_process`` observer has seen data (False without an observer)."""
    obs = getattr(mod, "activation_post_process", None)
    if obs is None:
        return False
    inner = getattr(obs, "activation_post_process", obs)    # a FakeQuantize holds its observer inside
    return not (np.any(np.isinf(getattr(inner, "min_val", np.zeros(1)))) or np.size(getattr(inner, "min_val", 1)) == 0)


def _act_qparams(mod: Module) -> tuple[float, int, str]:
    """(scale, zero_point, dtype) from a calibrated ``activation_post_process`` observer."""
    obs = getattr(mod, "activation_post_process", None)
    if obs is None:
        raise ValueError(f"{mod._name()} has no activation_post_process observer: call prepare() before convert()")
    if not has_observed(mod):
        raise ValueError(f"{mod._name()}: its observer has not seen any data; run calibration batches through "
                         f"the prepared model before convert()")
    scale, zp = obs.calculate_qparams()
    return float(scale[0]), int(zp[0]), obs.dtype


def quantize_weight(w: np.ndarray, observer: Module) -> QTensor:
    """qint8 weight with the observer's qparams, clamped to [quant_min, quant_max] (``_quantize_weight``)."""
    if observer.dtype != "qint8":
        raise ValueError(f"weight observer must have dtype 'qint8', got {observer.dtype!r}")
    observer(w)
    scale, zp = observer.calculate_qparams()
    w = np.asarray(w, np.float32)
    if observer.qscheme.startswith("per_tensor"):
        q = quantize_per_tensor(w, float(scale[0]), int(zp[0]), "qint8")
    else:
        q = quantize_per_channel(w, scale.astype(np.float64), zp, observer.ch_axis, "qint8")
    q.int_repr = np.clip(q.int_repr, observer.quant_min, observer.quant_max).astype(np.int8)
    return q


class Quantize(Module):
    """float -> QTensor with fixed (scale, zero_point): ``quantize_per_tensor(x, float(scale), zp, dtype)``."""

    def __init__(self, scale: float, zero_point: int, dtype: str = "quint8") -> None:
        super().__init__()
        self.register_buffer("scale", np.array([scale], np.float32))
        self.register_buffer("zero_point", np.array([zero_point], np.int64))
        self.dtype = dtype

    def forward(self, x: np.ndarray) -> QTensor:
        return quantize_per_tensor(x, float(self.scale[0]), int(self.zero_point[0]), self.dtype)

    @classmethod
    def from_float(cls, mod: Module) -> "Quantize":
        return cls(*_act_qparams(mod))

    def extra_repr(self) -> str:
        return f"scale={float(self.scale[0])}, zero_point={int(self.zero_point[0])}, dtype={self.dtype!r}"


class DeQuantize(Module):
    """QTensor -> float32."""

    def forward(self, x: QTensor) -> np.ndarray:
        if not isinstance(x, QTensor):
            raise TypeError(f"DeQuantize: expected a QTensor, got {type(x).__name__}")
        return dequantize(x)

    @classmethod
    def from_float(cls, mod: Module) -> "DeQuantize":
        return cls()


class WeightedQuantized(Module):
    """Shared storage of an int8 weight (+ float bias), packed lazily for the GEMM."""

    def _set_weight_bias(self, qweight: QTensor, bias: np.ndarray | None) -> None:
        self.register_buffer("weight", qweight.int_repr.copy())
        self.register_buffer("weight_scale", np.array(qweight.scale, np.float64))
        self.register_buffer("weight_zero_point", np.array(qweight.zero_point, np.int64))
        self.register_buffer("bias", None if bias is None else np.array(bias, np.float32))

    def weight_qtensor(self) -> QTensor:
        per_channel = self.weight_scale.ndim == 1
        s = self.weight_scale if per_channel else float(self.weight_scale)
        z = self.weight_zero_point if per_channel else int(self.weight_zero_point)
        return QTensor(self.weight, s, z, 0 if per_channel else None, "qint8")

    def _packed(self) -> Any:
        """PackedWeight(s) for the current buffers; rebuilt when a buffer is replaced (load_state_dict)."""
        arrays = (self.weight, self.weight_scale, self.weight_zero_point)
        cache = getattr(self, "_pack_cache", None)
        if cache is None or any(old is not new for old, new in zip(cache[0], arrays)):
            cache = (arrays, QF.pack_weight(self.weight_qtensor(), getattr(self, "groups", 1)))
            self._pack_cache = cache
        return cache[1]

    def _set_output_qparams(self, scale: float, zero_point: int) -> None:
        self.register_buffer("scale", np.array(scale, np.float64))
        self.register_buffer("zero_point", np.array(zero_point, np.int64))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self._name()} is inference-only (use QAT to train through quantization)")


def _data(param: Any) -> np.ndarray | None:
    return None if param is None else param.data


def _inner(mod: Module, float_types: tuple) -> Module:
    """The weighted layer of a (possibly fused) float module; checks its type."""
    if not isinstance(mod, float_types):
        raise TypeError(f"cannot convert {type(mod).__name__}; expected one of {[t.__name__ for t in float_types]}")
    return mod[0] if hasattr(mod, "__getitem__") else mod


class QuantizedLinear(WeightedQuantized):
    """quint8 (..., in) -> quint8 (..., out): ``functional.linear`` with the module's output qparams."""

    _relu = False

    def __init__(self, in_features: int, out_features: int, qweight: QTensor, bias: np.ndarray | None = None,
                 scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if qweight.shape != (out_features, in_features):
            raise ValueError(f"{self._name()}: weight shape {qweight.shape} != ({out_features}, {in_features})")
        self._set_weight_bias(qweight, bias)
        self._set_output_qparams(scale, zero_point)

    def forward(self, x: QTensor) -> QTensor:
        return QF.linear(x, self._packed(), self.bias, float(self.scale), int(self.zero_point), relu=self._relu)

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedLinear":
        lin = _inner(mod, (LinearReLU,) if cls._relu else (Linear,))
        scale, zp, _ = _act_qparams(mod)
        qweight = quantize_weight(lin.weight.data, lin.qconfig.weight())
        return cls(lin.in_features, lin.out_features, qweight, _data(lin.bias), scale, zp)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={float(self.scale)}, zero_point={int(self.zero_point)}")


class QuantizedLinearReLU(QuantizedLinear):
    """Fused Linear + ReLU: the output clamp starts at the zero point."""

    _relu = True


def _conv_padding(conv: Module) -> tuple[int, int]:
    if getattr(conv, "padding_mode", "zeros") != "zeros":
        raise ValueError(f"{conv._name()}: only padding_mode='zeros' can be quantized")
    pads = conv._pads()
    if any(a != b for a, b in pads):
        raise ValueError(f"{conv._name()}: asymmetric padding {pads} cannot be quantized")
    return tuple(a for a, _ in pads)


class QuantizedConv2d(WeightedQuantized):
    """quint8 (N, C, H, W) -> quint8 (N, OC, OH, OW): ``functional.conv2d`` with the module's output qparams."""

    _relu = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple, stride: tuple, padding: tuple,
                 dilation: tuple, groups: int, qweight: QTensor, bias: np.ndarray | None = None,
                 scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self._set_weight_bias(qweight, bias)
        self._set_output_qparams(scale, zero_point)

    def forward(self, x: QTensor) -> QTensor:
        return QF.conv2d(x, self._packed(), self.bias, self.stride, self.padding, self.dilation, self.groups,
                         float(self.scale), int(self.zero_point), relu=self._relu)

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedConv2d":
        conv = _inner(mod, (ConvReLU2d,) if cls._relu else (Conv2d,))
        scale, zp, _ = _act_qparams(mod)
        qweight = quantize_weight(conv.weight.data, conv.qconfig.weight())
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, _conv_padding(conv),
                   conv.dilation, conv.groups, qweight, _data(conv.bias), scale, zp)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, scale={float(self.scale)}, zero_point={int(self.zero_point)}")


class QuantizedConvReLU2d(QuantizedConv2d):
    """Fused Conv2d + ReLU."""

    _relu = True


class DynamicQuantizedLinear(WeightedQuantized):
    """float (..., in) -> float (..., out) with an int8 weight; activations quantized per call (reduce_range)."""

    _relu = False

    def __init__(self, in_features: int, out_features: int, qweight: QTensor, bias: np.ndarray | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._set_weight_bias(qweight, bias)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        y = QF.linear_dynamic(x.astype(np.float32, copy=False), self._packed(), self.bias,
                              reduce_range=True, relu=self._relu)
        return y.astype(x.dtype, copy=False)

    @classmethod
    def from_float(cls, mod: Module) -> "DynamicQuantizedLinear":
        lin = _inner(mod, (LinearReLU,) if cls._relu else (Linear,))
        qconfig = getattr(lin, "qconfig", None) or getattr(mod, "qconfig", None) or default_dynamic_qconfig
        observer = qconfig.weight()
        if observer.dtype == "float16" and cls._relu:
            raise ValueError(f"{mod._name()}: float16 dynamic quantization of a fused LinearReLU is not "
                             f"supported; quantize the Linear before fusing")
        return dynamic_linear(lin.weight.data, _data(lin.bias), observer, lin._name(), cls)

    def extra_repr(self) -> str:
        qs = "per_channel" if self.weight_scale.ndim else "per_tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, qscheme={qs}"


def dynamic_linear(weight: np.ndarray, bias: np.ndarray | None, observer: Module, who: str,
                   int8_cls: type | None = None) -> Module:
    """y = x W^T + b as a dynamic module: ``int8_cls`` (default ``DynamicQuantizedLinear``) with an int8 weight of
    ``observer``'s qparams, or ``DynamicFloat16Linear`` when the observer's dtype is float16
    (``nnqd.Linear(dtype=torch.float16)``); ``who`` names the weight in the float16 saturation warning."""
    if observer.dtype == "float16":
        return DynamicFloat16Linear.from_weight(weight, bias, who)
    int8_cls = DynamicQuantizedLinear if int8_cls is None else int8_cls
    return int8_cls(weight.shape[1], weight.shape[0], quantize_weight(weight, observer), bias)


class DynamicQuantizedLinearReLU(DynamicQuantizedLinear):
    """Dynamic Linear + ReLU (``linear_relu_dynamic``)."""

    _relu = True
