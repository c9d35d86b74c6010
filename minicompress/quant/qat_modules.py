"""Quantization-aware-training modules ≙ ``torch.ao.nn.qat`` and ``torch.ao.nn.intrinsic.qat``.

Each is its float layer whose weight is parametrized by its fake-quant (``Module.register_parametrization``
with :data:`WEIGHT_FAKE_QUANT`): the float layer's own forward computes with ``weight_fake_quant(weight)``
(built from ``qconfig.weight()``), so training sees the int8 weight grid, and the gradient it reports
for the weight flows back through the straight-through estimator to the float Parameter. No QAT
class repeats a float layer's arithmetic; the ReLU variants add the ReLU after it. A pruned weight
stacks: the mask comes first in the chain, ``fq(weight_orig * weight_mask)``. Attribute and
state-dict names are PyTorch's (``weight``, ``bias``, ``weight_fake_quant.*``, ``bn.*``,
``activation_post_process.*``), so ``convert`` and PyTorch checkpoints see the same layout.

The output fake-quant ``activation_post_process`` is attached by ``prepare_qat`` (through ``prepare``,
a forward hook as in PyTorch), not by these classes.

Conv + BatchNorm (``ConvBn2d``, ``ConvBnReLU2d``) fold BN into the weight *before* fake-quant, as
PyTorch's ``_ConvBnNd._forward_approximate`` does (sigma = sqrt(running_var + eps))::

    f  = gamma / sigma                                  (C_out,)
    y  = BN( conv(x, FQ(W * f)) / f + b )               BN in train mode uses batch statistics      (1)

so the weight that is fake-quantized is the folded weight the int8 model will use, while BN still
normalises with batch statistics during training. ``freeze_bn_stats`` puts BN in eval mode (running
statistics; ``model.train()`` no longer changes it).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..nn.functional import activation as A
from ..nn.layers._utils import check_grad
from ..nn.random import get_rng
from .fuse import ConvBn2d as FusedConvBn2d
from .fuse import ConvBnReLU2d as FusedConvBnReLU2d
from .fuse import ConvReLU2d as FusedConvReLU2d
from .fuse import LinearReLU as FusedLinearReLU
from .fuse import fuse_conv_bn_weights

__all__ = ["WEIGHT_FAKE_QUANT", "float_weight", "Linear", "LinearReLU", "Conv2d", "ConvReLU2d", "ConvBn2d",
           "ConvBnReLU2d", "freeze_bn_stats", "update_bn_stats"]


class WeightFakeQuant:
    """The parametrization ``value(module, w) = module.weight_fake_quant(w)``; its backward is the STE.

    Stateless (the fake-quant and its cache live in the module's ``weight_fake_quant`` child), so the
    one instance :data:`WEIGHT_FAKE_QUANT` serves every QAT module -- and stays the one instance through
    ``copy.deepcopy`` and pickling (``float_weight`` finds the chain's end by identity: a copied model, as
    ``convert(inplace=False)`` makes, must not fake-quantize the weight it hands to ``to_float``).
    """

    def __deepcopy__(self, memo: dict) -> "WeightFakeQuant":
        return self

    def __copy__(self) -> "WeightFakeQuant":
        return self

    def __reduce__(self) -> str:
        return "WEIGHT_FAKE_QUANT"

    def value(self, module: nn.Module, w: np.ndarray) -> np.ndarray:
        return module.weight_fake_quant(w)

    def backward(self, module: nn.Module, grad: np.ndarray) -> np.ndarray:
        return module.weight_fake_quant.backward(grad)

    def __repr__(self) -> str:
        return "WeightFakeQuant()"


WEIGHT_FAKE_QUANT = WeightFakeQuant()


def float_weight(mod: nn.Module) -> np.ndarray:
    """The weight before its fake-quant: the Parameter, or ``mask * orig`` if pruned (what ``to_float`` keeps)."""
    return mod.array("weight", before=WEIGHT_FAKE_QUANT)


class _QATMixin:
    """qconfig / weight_fake_quant set-up and the float copy for ``to_float``."""

    def _init_qat(self, qconfig: Any, parametrize: bool = True) -> None:
        if not qconfig:
            raise ValueError(f"{type(self).__name__}: qconfig must be provided for a QAT module")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight()
        if parametrize:
            self.register_parametrization("weight", WEIGHT_FAKE_QUANT)

    def _float_copy(self, mod: nn.Module) -> nn.Module:
        """Copy weight (before fake-quant) / bias into a float module and match the training mode."""
        mod.weight.data = float_weight(self).copy()
        if self.bias is not None:
            mod.bias.data = self.bias.data.copy()
        return mod.train(self.training)


class _ReLUOutput:
    """y = relu(float layer(x)): the fused QAT variants; backward undoes the ReLU, then the layer."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, cache = A.relu_forward(super().forward(x))
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        return super().backward(A.relu_backward(grad_output, cache))


def _share_params(cls: type, qat: nn.Module, mod: nn.Module) -> None:
    """As PyTorch's from_float: the QAT module reuses the float module's Parameter objects."""
    if mod.parametrizations():
        raise ValueError(f"qat.{cls.__name__}.from_float: {mod._name()} has parametrized tensors "
                         f"{list(mod.parametrizations())} (pruned?); make them permanent first "
                         f"(prune.remove), and prune the QAT model again after prepare_qat if the masks "
                         f"must hold during training (prune.custom_from_mask)")
    qat.weight = mod.weight
    if mod.bias is not None:
        qat.bias = mod.bias
    else:
        qat.register_parameter("bias", None)


def _check_from_float(cls: type, mod: nn.Module, expected: type) -> Any:
    if type(mod) is not expected:
        raise TypeError(f"qat.{cls.__name__}.from_float only works for {expected.__name__}, "
                        f"got {type(mod).__name__}")
    qconfig = getattr(mod, "qconfig", None)
    if not qconfig:
        raise ValueError(f"qat.{cls.__name__}.from_float: the float module must have a qconfig")
    return qconfig


# ==================================================================================== Linear
class Linear(_QATMixin, nn.Linear):
    """y = x FQ(W)^T + b  ≙ ``torch.ao.nn.qat.Linear``: ``nn.Linear`` with its weight parametrized by FQ."""

    _FLOAT_MODULE: type = nn.Linear
    _relu = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, qconfig: Any = None,
                 *, dtype=None, rng=None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, dtype=dtype, rng=rng)
        self._init_qat(qconfig)

    @classmethod
    def from_float(cls, mod: nn.Module) -> "Linear":
        qconfig = _check_from_float(cls, mod, cls._FLOAT_MODULE)
        lin = mod[0] if cls._relu else mod
        qat = cls(lin.in_features, lin.out_features, lin.bias is not None, qconfig=qconfig,
                  dtype=lin.weight.dtype)
        _share_params(cls, qat, lin)
        return qat.train(mod.training)

    def to_float(self) -> nn.Module:
        lin = self._float_copy(nn.Linear(self.in_features, self.out_features, self.bias is not None,
                                         dtype=float_weight(self).dtype))
        return self._FLOAT_MODULE(lin, nn.ReLU()).train(self.training) if self._relu else lin


class LinearReLU(_ReLUOutput, Linear):
    """y = relu(x FQ(W)^T + b) ≙ ``torch.ao.nn.intrinsic.qat.LinearReLU``."""

    _FLOAT_MODULE = FusedLinearReLU
    _relu = True


# ==================================================================================== Conv2d
def _conv_args(conv: nn.Conv2d) -> dict:
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode)


class Conv2d(_QATMixin, nn.Conv2d):
    """y = conv(x, FQ(W)) + b  ≙ ``torch.ao.nn.qat.Conv2d``: ``nn.Conv2d`` with its weight parametrized by FQ."""

    _FLOAT_MODULE: type = nn.Conv2d
    _relu = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", qconfig: Any = None, *, dtype=None, rng=None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                           bias, padding_mode, dtype=dtype, rng=rng)
        self._init_qat(qconfig)

    @classmethod
    def from_float(cls, mod: nn.Module) -> "Conv2d":
        qconfig = _check_from_float(cls, mod, cls._FLOAT_MODULE)
        conv = mod[0] if cls._relu else mod
        qat = cls(**_conv_args(conv), qconfig=qconfig, dtype=conv.weight.dtype)
        _share_params(cls, qat, conv)
        return qat.train(mod.training)

    def to_float(self) -> nn.Module:
        conv = self._float_copy(nn.Conv2d(**_conv_args(self), dtype=float_weight(self).dtype))
        return self._FLOAT_MODULE(conv, nn.ReLU()).train(self.training) if self._relu else conv


class ConvReLU2d(_ReLUOutput, Conv2d):
    """y = relu(conv(x, FQ(W)) + b) ≙ ``torch.ao.nn.intrinsic.qat.ConvReLU2d``."""

    _FLOAT_MODULE = FusedConvReLU2d
    _relu = True


# ==================================================================================== Conv + BN
class ConvBn2d(_QATMixin, nn.Conv2d):
    """Conv2d + BatchNorm2d with BN folded into the fake-quantized weight, eq. (1).

    The one QAT module with a forward of its own: it fake-quantizes the *folded* weight W * f, so its
    weight is not parametrized by the fake-quant; the convolution itself is ``nn.Conv2d``'s
    ``_conv_forward`` / ``_conv_backward`` (same checks, same arithmetic).
    """

    _FLOAT_MODULE: type = FusedConvBn2d
    _relu = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool | None = None,
                 padding_mode: str = "zeros", eps: float = 1e-5, momentum: float | None = 0.1,
                 freeze_bn: bool = False, qconfig: Any = None, *, dtype=None, rng=None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                           bool(bias), padding_mode, dtype=dtype, rng=rng)
        if not qconfig:
            raise ValueError(f"{type(self).__name__}: qconfig must be provided for a QAT module")
        self.bn = nn.BatchNorm2d(out_channels, eps, momentum, dtype=dtype)   # before weight_fake_quant,
        self.bn.weight.data[...] = get_rng(rng).uniform(0, 1, out_channels)   # as PyTorch (state-dict order)
        self._init_qat(qconfig, parametrize=False)
        self.freeze_bn = bool(freeze_bn) if self.training else True
        self.freeze_bn_stats() if self.freeze_bn else self.update_bn_stats()

    def update_bn_stats(self) -> "ConvBn2d":
        self.freeze_bn = False
        self.bn.train(True)
        return self

    def freeze_bn_stats(self) -> "ConvBn2d":
        self.freeze_bn = True
        self.bn.train(False)
        return self

    def train(self, mode: bool = True) -> "ConvBn2d":
        """As PyTorch: a frozen BN (and the fake-quants) keep their mode when the model's changes."""
        self.training = bool(mode)
        if not self.freeze_bn:
            for module in self.children():
                module.train(mode)
        return self

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"{self._name()}: expected input (N, {self.in_channels}, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        w, gamma = self.array("weight"), self.bn.array("weight")
        sigma = np.sqrt(self.bn.running_var + self.bn.eps)          # running std, read before BN updates it
        f = gamma / sigma                                            # (C_out,)
        conv = self._conv_forward(x, self.weight_fake_quant(w * f.reshape(-1, 1, 1, 1)), None)
        y = conv / f.reshape(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.data.reshape(1, -1, 1, 1)
        y = self.bn(y)
        self._save_for_backward((y.shape, conv, f, sigma, w))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        """Through BN, the 1/f un-scaling, the conv, the STE and the W * f scaling. gamma gets its BN
        gradient plus (d loss / d f) / sigma, d loss / d f = -sum dy' conv / f^2 + sum dW_f * W."""
        shape, conv, f, sigma, w = self._saved()
        check_grad(self, grad_output, shape)
        dy = self.bn.backward(grad_output)                           # d loss / d (conv / f + b)
        if self.bias is not None:
            self.accumulate_grad("bias", dy.sum(axis=(0, 2, 3)))
        df = -(dy * conv).sum(axis=(0, 2, 3)) / (f * f)
        dx, dw_q, _ = self._conv_backward(dy / f.reshape(1, -1, 1, 1))
        dw_f = self.weight_fake_quant.backward(dw_q)                 # STE
        self.accumulate_grad("weight", dw_f * f.reshape(-1, 1, 1, 1))
        self.bn.accumulate_grad("weight", (df + (dw_f * w).sum(axis=(1, 2, 3))) / sigma)
        return dx

    @classmethod
    def from_float(cls, mod: nn.Module) -> "ConvBn2d":
        qconfig = _check_from_float(cls, mod, cls._FLOAT_MODULE)
        conv, bn = mod[0], mod[1]
        new = cls(**_conv_args(conv), eps=bn.eps, momentum=bn.momentum, freeze_bn=False, qconfig=qconfig,
                  dtype=conv.weight.dtype)
        _share_params(cls, new, conv)
        new.bn.weight, new.bn.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(new.bn, name, getattr(bn, name))
        return new.train(mod.training)

    def to_float(self) -> nn.Module:
        """The float Conv2d with BN folded in with the running statistics (PYTORCH_SEMANTICS §2.7)."""
        weight = float_weight(self)
        conv = nn.Conv2d(**{**_conv_args(self), "bias": True}, dtype=weight.dtype)
        conv.weight.data, conv.bias.data = fuse_conv_bn_weights(
            weight, None if self.bias is None else self.bias.data, self.bn.running_mean, self.bn.running_var,
            self.bn.eps, self.bn.weight.data, None if self.bn.bias is None else self.bn.bias.data)
        conv.train(self.training)
        return FusedConvReLU2d(conv, nn.ReLU()).train(self.training) if self._relu else conv


class ConvBnReLU2d(_ReLUOutput, ConvBn2d):
    """relu(ConvBn2d(x)) ≙ ``torch.ao.nn.intrinsic.qat.ConvBnReLU2d``."""

    _FLOAT_MODULE = FusedConvBnReLU2d
    _relu = True


def freeze_bn_stats(mod: nn.Module) -> None:
    """``model.apply(freeze_bn_stats)``: BN of every QAT Conv-BN switches to its running statistics."""
    if isinstance(mod, ConvBn2d):
        mod.freeze_bn_stats()


def update_bn_stats(mod: nn.Module) -> None:
    """``model.apply(update_bn_stats)``: BN of every QAT Conv-BN uses and updates batch statistics again."""
    if isinstance(mod, ConvBn2d):
        mod.update_bn_stats()
