"""Quantized merges and activations with their own output (scale, zero_point), as ``torch.ao.nn.quantized``.

``from_float(observed)`` reads the output qparams from the module's calibrated
``activation_post_process`` (like ``QuantizedLinear``); ``forward`` calls the op of ``qops`` /
``qactivations``. State dict: ``scale`` float64 (), ``zero_point`` int64 () (PyTorch's keys)::

    QFunctional                 FloatFunctional's methods on QTensors  == nnq.QFunctional
    QuantizedAdd / Mul / Cat    our nn.Add / nn.Mul / nn.Cat (PyTorch has no such modules)
    QuantizedHardswish          == nnq.Hardswish
    QuantizedLeakyReLU          == nnq.LeakyReLU
    QuantizedPReLU              == nnq.PReLU; + weight (codes), weight_scale, weight_zero_point
    QuantizedLayerNorm          == nnq.LayerNorm; + weight, bias (float32, PyTorch's keys)
"""
from __future__ import annotations

import warnings

from typing import Any, Sequence

import numpy as np

from ..nn.module import Module
from . import qactivations as QA
from . import qops
from .qnorm import layer_norm
from .modules import has_observed, _act_qparams
from .qtensor import QTensor, quantize_per_tensor


class _OutputQParams(Module):
    """A quantized module with a fixed output (scale, zero_point); inference only."""

    def __init__(self, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__()
        self.register_buffer("scale", np.array(scale, np.float64))
        self.register_buffer("zero_point", np.array(zero_point, np.int64))

    @property
    def qparams(self) -> tuple[float, int]:
        return float(self.scale), int(self.zero_point)

    @classmethod
    def from_float(cls, mod: Module) -> "_OutputQParams":
        """The observed output qparams. A merge never called during calibration (a MobileNetV2 block's
        ``skip_add`` where the block has no residual) gets PyTorch's defaults, scale 1.0 and zero point 0,
        with a warning naming it, as ``QFunctional.from_float`` does with an unobserved observer."""
        if getattr(mod, "activation_post_process", None) is not None and not has_observed(mod):
            warnings.warn(f"convert: {mod._name()} was not called during calibration; it gets PyTorch's default "
                          f"qparams (scale 1.0, zero_point 0)", stacklevel=3)
            return cls()
        scale, zero_point, _ = _act_qparams(mod)
        return cls(scale, zero_point)

    def _inputs(self, xs: Sequence[Any]) -> list[QTensor]:
        bad = [type(x).__name__ for x in xs if not isinstance(x, QTensor)]
        if bad:
            raise TypeError(f"{self._name()}: expected QTensor inputs, got {[type(x).__name__ for x in xs]}; a float "
                            f"array reached a quantized merge -- quantize that branch (QuantStub) or keep the merge "
                            f"float (qconfig = None)")
        return list(xs)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{self._name()} is inference-only (use QAT to train through quantization)")

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, zero_point={int(self.zero_point)}"


class QFunctional(_OutputQParams):
    """``torch.ao.nn.quantized.QFunctional``: ``add``, ``add_relu``, ``mul``, ``cat`` requantize to the
    module's (scale, zero_point); ``add_scalar`` and ``mul_scalar`` choose their own output qparams
    (``qops``), as PyTorch's (they are not observed)."""

    OPS = ("add", "add_relu", "mul", "cat", "add_scalar", "mul_scalar")

    def forward(self, op: str, *args: Any) -> QTensor:
        s, z = self.qparams
        if op == "cat":
            xs, dim = args
            return qops.cat(self._inputs(xs), dim, s, z)
        if op in ("add_scalar", "mul_scalar"):
            x, c = args
            fn = qops.add_scalar if op == "add_scalar" else qops.mul_scalar
            return fn(self._inputs([x])[0], c)
        if op not in ("add", "add_relu", "mul"):
            raise ValueError(f"QFunctional: unknown op {op!r}; expected one of {self.OPS}")
        x, y = self._inputs(args)
        return (qops.mul if op == "mul" else qops.add)(x, y, s, z, relu=op == "add_relu")

    def add(self, x: QTensor, y: QTensor) -> QTensor:
        return self("add", x, y)

    def add_relu(self, x: QTensor, y: QTensor) -> QTensor:
        return self("add_relu", x, y)

    def mul(self, x: QTensor, y: QTensor) -> QTensor:
        return self("mul", x, y)

    def cat(self, xs: Sequence[QTensor], dim: int = 0) -> QTensor:
        return self("cat", list(xs), dim)

    def add_scalar(self, x: QTensor, y: float) -> QTensor:
        return self("add_scalar", x, y)

    def mul_scalar(self, x: QTensor, y: float) -> QTensor:
        return self("mul_scalar", x, y)


class QuantizedAdd(_OutputQParams):
    """nn.Add on QTensors: x_1 + x_2 (+ x_3 ...) with ``qops.add``, each partial sum requantized to the output qparams."""

    def forward(self, *inputs: QTensor) -> QTensor:
        xs = self._inputs(inputs)
        if len(xs) < 2:
            raise ValueError(f"{self._name()}: expected two or more inputs, got {len(xs)}")
        y = xs[0]
        for x in xs[1:]:
            y = qops.add(y, x, *self.qparams)
        return y


class QuantizedMul(_OutputQParams):
    """nn.Mul on QTensors: ``qops.mul`` (same shapes)."""

    def forward(self, x: QTensor, other: QTensor) -> QTensor:
        x, other = self._inputs((x, other))
        return qops.mul(x, other, *self.qparams)


class QuantizedCat(_OutputQParams):
    """nn.Cat(dim) on QTensors: ``qops.cat`` into the output qparams."""

    def __init__(self, dim: int = 1, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.dim = dim

    def forward(self, *inputs: QTensor) -> QTensor:
        return qops.cat(self._inputs(inputs), self.dim, *self.qparams)

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedCat":
        scale, zero_point, _ = _act_qparams(mod)
        return cls(mod.dim, scale, zero_point)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, " + super().extra_repr()


class QuantizedHardswish(_OutputQParams):
    """``nnq.Hardswish``: ``qactivations.hardswish`` into the observed output qparams."""

    def forward(self, x: QTensor) -> QTensor:
        return QA.hardswish(self._inputs([x])[0], *self.qparams)


class QuantizedLeakyReLU(_OutputQParams):
    """``nnq.LeakyReLU``: ``qactivations.leaky_relu`` into the observed output qparams."""

    def __init__(self, scale: float = 1.0, zero_point: int = 0, negative_slope: float = 0.01) -> None:
        super().__init__(scale, zero_point)
        self.negative_slope = negative_slope

    def forward(self, x: QTensor) -> QTensor:
        return QA.leaky_relu(self._inputs([x])[0], self.negative_slope, *self.qparams)

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedLeakyReLU":
        scale, zero_point, _ = _act_qparams(mod)
        return cls(scale, zero_point, mod.negative_slope)


class QuantizedPReLU(_OutputQParams):
    """``nnq.PReLU``: ``qactivations.prelu`` with the slopes quantized *to the activation dtype* (quint8) with
    the ``qconfig.weight()`` observer's (scale, zero_point), as PyTorch's ``from_float`` does (with the default
    symmetric qint8 weight observer, zp = 0: negative slopes then clamp to 0, exactly as in PyTorch)."""

    def __init__(self, weight: QTensor, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.num_parameters = weight.shape[0]
        self.register_buffer("weight", weight.int_repr.copy())
        self.register_buffer("weight_scale", np.array(weight.scale, np.float64))
        self.register_buffer("weight_zero_point", np.array(weight.zero_point, np.int64))

    def weight_qtensor(self, dtype: str) -> QTensor:
        return QTensor(self.weight, float(self.weight_scale), int(self.weight_zero_point), None, dtype)

    def forward(self, x: QTensor) -> QTensor:
        x = self._inputs([x])[0]
        return QA.prelu(x, self.weight_qtensor(x.dtype), *self.qparams)

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedPReLU":
        scale, zero_point, dtype = _act_qparams(mod)
        observer = mod.qconfig.weight()
        w = np.asarray(mod.weight.data, np.float32)
        observer(w)
        w_scale, w_zp = observer.calculate_qparams()
        return cls(quantize_per_tensor(w, float(w_scale[0]), int(w_zp[0]), dtype), scale, zero_point)


class QuantizedLayerNorm(_OutputQParams):
    """``nnq.LayerNorm``: ``qnorm.layer_norm`` with the float weight and bias, into the observed output qparams."""

    def __init__(self, normalized_shape: tuple, weight: np.ndarray | None, bias: np.ndarray | None, eps: float = 1e-5,
                 scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.register_buffer("weight", None if weight is None else np.array(weight, np.float32))
        self.register_buffer("bias", None if bias is None else np.array(bias, np.float32))

    def forward(self, x: QTensor) -> QTensor:
        return layer_norm(self._inputs([x])[0], self.normalized_shape, self.weight, self.bias, self.eps, *self.qparams)

    @classmethod
    def from_float(cls, mod: Module) -> "QuantizedLayerNorm":
        scale, zero_point, _ = _act_qparams(mod)
        weight, bias = (getattr(mod, name, None) for name in ("weight", "bias"))
        return cls(mod.normalized_shape, None if weight is None else weight.data, None if bias is None else bias.data,
                   mod.eps, scale, zero_point)
