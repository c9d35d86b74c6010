"""Quantization-aware-training modules ≙ ``torch.ao.nn.qat`` and ``torch.ao.nn.intrinsic.qat``.

Each is its float layer with the weight passed through ``weight_fake_quant`` (built from
``qconfig.weight()``) on every forward, so training sees the int8 weight grid, and the
straight-through gradient flowing back to the float weight. Attribute and state-dict names are
PyTorch's (``weight``, ``bias``, ``weight_fake_quant.*``, ``bn.*``, ``activation_post_process.*``),
so ``convert`` and PyTorch checkpoints see the same layout.

The output fake-quant ``activation_post_process`` is attached by ``prepare_qat`` (through ``prepare``,
which wraps the instance's forward / backward, as PyTorch's forward hook would), not by these classes.

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
from ..nn.functional import conv as C
from ..nn.functional.linear import linear_backward, linear_forward
from ..nn.layers._utils import batched, check_array, check_grad
from ..nn.random import get_rng
from .fuse import ConvReLU2d as FusedConvReLU2d
from .fuse import LinearReLU as FusedLinearReLU

__all__ = ["Linear", "LinearReLU", "Conv2d", "ConvReLU2d", "ConvBn2d", "ConvBnReLU2d",
           "freeze_bn_stats", "update_bn_stats"]


class _QATMixin:
    """qconfig / weight_fake_quant set-up and the float copy for ``to_float``."""

    def _init_qat(self, qconfig: Any) -> None:
        if not qconfig:
            raise ValueError(f"{type(self).__name__}: qconfig must be provided for a QAT module")
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight()

    def _float_copy(self, mod: nn.Module) -> nn.Module:
        """Copy weight / bias (detached) into a float module and match the training mode."""
        mod.weight.data = self.array("weight").copy()
        if self.array("bias") is not None:
            mod.bias.data = self.array("bias").copy()
        return mod.train(self.training)


def _share_params(qat: nn.Module, mod: nn.Module) -> None:
    """As PyTorch's from_float: the QAT module reuses the float module's Parameter objects."""
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
    """y = x FQ(W)^T + b  ≙ ``torch.ao.nn.qat.Linear``."""

    _FLOAT_MODULE: type = nn.Linear
    _relu = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, qconfig: Any = None,
                 *, dtype=None, rng=None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, dtype=dtype, rng=rng)
        self._init_qat(qconfig)

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = self.weight_fake_quant(self.array("weight"))
        check_array(self, x, weight.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self._name()}: expected input (*, {self.in_features}), got {x.shape}")
        y, cache = linear_forward(x, weight, self.array("bias"))
        relu_cache = None
        if self._relu:
            y, relu_cache = A.relu_forward(y)
        self._save_for_backward((y.shape, cache, relu_cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        dy = grad_output
        shape, cache, relu_cache = self._saved()
        check_grad(self, dy, shape)
        if self._relu:
            dy = A.relu_backward(dy, relu_cache)
        dx, dw_q, db = linear_backward(dy, cache, self.needs_input_grad)
        self.accumulate_grad("weight", self.weight_fake_quant.backward(dw_q))
        if self.array("bias") is not None:
            self.accumulate_grad("bias", db)
        return dx

    @classmethod
    def _float_linear(cls, mod: nn.Module) -> nn.Linear:
        return mod[0] if cls._relu else mod

    @classmethod
    def from_float(cls, mod: nn.Module) -> "Linear":
        qconfig = _check_from_float(cls, mod, cls._FLOAT_MODULE)
        lin = cls._float_linear(mod)
        qat = cls(lin.in_features, lin.out_features, lin.bias is not None, qconfig=qconfig,
                  dtype=lin.weight.dtype)
        _share_params(qat, lin)
        return qat.train(mod.training)

    def to_float(self) -> nn.Module:
        lin = self._float_copy(nn.Linear(self.in_features, self.out_features, self.bias is not None,
                                         dtype=self.weight.dtype))
        return self._FLOAT_MODULE(lin, nn.ReLU()).train(self.training) if self._relu else lin


class LinearReLU(Linear):
    """y = relu(x FQ(W)^T + b) ≙ ``torch.ao.nn.intrinsic.qat.LinearReLU``."""

    _FLOAT_MODULE = FusedLinearReLU
    _relu = True


# ==================================================================================== Conv2d
def _conv(conv: nn.Conv2d, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple:
    """conv2d(x, weight, bias) with conv's hyper-parameters and checks; returns (y, cache)."""
    check_array(conv, x, weight.dtype)
    x, unbatched = batched(conv, x, 2, conv.in_channels)
    y, cache = C.conv2d_forward(x, weight, bias, conv.stride, conv._pads(), conv.dilation, conv.groups)
    return (y[0] if unbatched else y), (unbatched, cache)


def _conv_backward(conv: nn.Conv2d, dy: np.ndarray, saved: tuple) -> tuple:
    unbatched, cache = saved
    dx, dw, db = C.conv2d_backward(dy[None] if unbatched else dy, cache, conv.needs_input_grad)
    return (dx[0] if unbatched and dx is not None else dx), dw, db


def _conv_args(conv: nn.Conv2d) -> dict:
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode)


class Conv2d(_QATMixin, nn.Conv2d):
    """y = conv(x, FQ(W)) + b  ≙ ``torch.ao.nn.qat.Conv2d``."""

    _FLOAT_MODULE: type = nn.Conv2d
    _relu = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", qconfig: Any = None, *, dtype=None, rng=None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                           bias, padding_mode, dtype=dtype, rng=rng)
        self._init_qat(qconfig)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, saved = _conv(self, x, self.weight_fake_quant(self.array("weight")), self.array("bias"))
        relu_cache = None
        if self._relu:
            y, relu_cache = A.relu_forward(y)
        self._save_for_backward((y.shape, saved, relu_cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        dy = grad_output
        shape, saved, relu_cache = self._saved()
        check_grad(self, dy, shape)
        if self._relu:
            dy = A.relu_backward(dy, relu_cache)
        dx, dw_q, db = _conv_backward(self, dy, saved)
        self.accumulate_grad("weight", self.weight_fake_quant.backward(dw_q))
        if self.array("bias") is not None:
            self.accumulate_grad("bias", db)
        return dx

    @classmethod
    def from_float(cls, mod: nn.Module) -> "Conv2d":
        qconfig = _check_from_float(cls, mod, cls._FLOAT_MODULE)
        conv = mod[0] if cls._relu else mod
        qat = cls(**_conv_args(conv), qconfig=qconfig, dtype=conv.weight.dtype)
        _share_params(qat, conv)
        return qat.train(mod.training)

    def to_float(self) -> nn.Module:
        conv = self._float_copy(nn.Conv2d(**_conv_args(self), dtype=self.weight.dtype))
        return self._FLOAT_MODULE(conv, nn.ReLU()).train(self.training) if self._relu else conv


class ConvReLU2d(Conv2d):
    """y = relu(conv(x, FQ(W)) + b) ≙ ``torch.ao.nn.intrinsic.qat.ConvReLU2d``."""

    _FLOAT_MODULE = FusedConvReLU2d
    _relu = True


# ==================================================================================== Conv + BN
class ConvBn2d(_QATMixin, nn.Conv2d):
    """Conv2d + BatchNorm2d with BN folded into the fake-quantized weight, eq. (1)."""

    _FLOAT_MODULE: type | None = None       # the fused float ConvBn2d / ConvBnReLU2d (defined in qat.py)
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
        self._init_qat(qconfig)
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
        object.__setattr__(self, "training", bool(mode))
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
        conv, saved = _conv(self, x, self.weight_fake_quant(w * f.reshape(-1, 1, 1, 1)), None)
        y = conv / f.reshape(1, -1, 1, 1)
        if self.array("bias") is not None:
            y = y + self.array("bias").reshape(1, -1, 1, 1)
        y = self.bn(y)
        relu_cache = None
        if self._relu:
            y, relu_cache = A.relu_forward(y)
        self._save_for_backward((y.shape, saved, conv, f, sigma, w, relu_cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        """Through BN, the 1/f un-scaling, the conv, the STE and the W * f scaling. gamma gets its BN
        gradient plus (d loss / d f) / sigma, d loss / d f = -sum dy' conv / f^2 + sum dW_f * W."""
        dy = grad_output
        shape, saved, conv, f, sigma, w, relu_cache = self._saved()
        check_grad(self, dy, shape)
        if self._relu:
            dy = A.relu_backward(dy, relu_cache)
        dy = self.bn.backward(dy)                                    # d loss / d (conv / f + b)
        if self.array("bias") is not None:
            self.accumulate_grad("bias", dy.sum(axis=(0, 2, 3)))
        df = -(dy * conv).sum(axis=(0, 2, 3)) / (f * f)
        dx, dw_q, _ = _conv_backward(self, dy / f.reshape(1, -1, 1, 1), saved)
        dw_f = self.weight_fake_quant.backward(dw_q)                 # STE
        self.accumulate_grad("weight", dw_f * f.reshape(-1, 1, 1, 1))
        self.bn.accumulate_grad("weight", (df + (dw_f * w).sum(axis=(1, 2, 3))) / sigma)
        return dx

    @classmethod
    def from_float(cls, mod: nn.Module) -> "ConvBn2d":
        from . import qat as _flow  # noqa: F401  (defines the fused float ConvBn2d / ConvBnReLU2d)
        qconfig = _check_from_float(cls, mod, cls._FLOAT_MODULE)
        conv, bn = mod[0], mod[1]
        new = cls(**_conv_args(conv), eps=bn.eps, momentum=bn.momentum, freeze_bn=False, qconfig=qconfig,
                  dtype=conv.weight.dtype)
        _share_params(new, conv)
        new.bn.weight, new.bn.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(new.bn, name, getattr(bn, name))
        return new.train(mod.training)

    def to_float(self) -> nn.Module:
        """The float Conv2d with BN folded in with the running statistics (PYTORCH_SEMANTICS §2.7)."""
        from .fuse import fuse_conv_bn_weights
        conv = nn.Conv2d(**{**_conv_args(self), "bias": True}, dtype=self.weight.dtype)
        bias = self.array("bias")
        conv.weight.data, conv.bias.data = fuse_conv_bn_weights(
            self.array("weight"), bias, self.bn.running_mean, self.bn.running_var, self.bn.eps,
            self.bn.array("weight"), self.bn.array("bias"))
        conv.train(self.training)
        return FusedConvReLU2d(conv, nn.ReLU()).train(self.training) if self._relu else conv


class ConvBnReLU2d(ConvBn2d):
    """relu(ConvBn2d(x)) ≙ ``torch.ao.nn.intrinsic.qat.ConvBnReLU2d``."""

    _relu = True


def freeze_bn_stats(mod: nn.Module) -> None:
    """``model.apply(freeze_bn_stats)``: BN of every QAT Conv-BN switches to its running statistics."""
    if isinstance(mod, ConvBn2d):
        mod.freeze_bn_stats()


def update_bn_stats(mod: nn.Module) -> None:
    """``model.apply(update_bn_stats)``: BN of every QAT Conv-BN uses and updates batch statistics again."""
    if isinstance(mod, ConvBn2d):
        mod.update_bn_stats()
