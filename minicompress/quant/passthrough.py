"""Layers that act on quantized codes directly, keeping the input's (scale, zero_point).

PyTorch runs ``nn.ReLU``, ``nn.MaxPool2d`` and ``nn.Flatten`` on quantized tensors natively; our
float layers take ndarrays only, so ``convert`` swaps them for these subclasses, which accept either a
QTensor (exact integer op) or a float array (the float layer, unchanged)::

    ReLU:       q' = max(q, z)                  (the code of real 0 is z)
    MaxPool2d:  q' = max over the window of q   (dequantization is monotone since s > 0)
    Flatten:    a reshape of the codes
    Dropout:    identity (eval); (nn.Identity passes QTensors already)
    ReLU6, Hardtanh:    codes clamped to quantized bounds (``qactivations.clamp``)
    AdaptiveAvgPool2d:  ``qpool.adaptive_avg_pool2d`` (input qparams kept)
    Sigmoid:    ``qactivations.sigmoid``, fixed output qparams (1/256, 0) quint8 -- PyTorch's eager
                ``convert`` leaves ``nn.Sigmoid`` float and not observed; torch.sigmoid of a quantized
                tensor then picks these qparams itself
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn import AdaptiveAvgPool2d, Dropout, Flatten, Hardtanh, MaxPool2d, ReLU, ReLU6, Sigmoid
from ..nn.grad_mode import no_grad
from ..nn.module import Module
from . import qactivations as QA
from .qpool import adaptive_avg_pool2d
from .qtensor import QTensor


def _like(q: QTensor, codes: np.ndarray) -> QTensor:
    """New codes with q's qparams; an NHWC layout survives ops that keep the 4-D shape (as in PyTorch)."""
    return QTensor(np.ascontiguousarray(codes.astype(q.int_repr.dtype)), q.scale, q.zero_point, None, q.dtype,
                   channels_last=q.channels_last and codes.ndim == 4)


def _per_tensor(q: QTensor, who: Module) -> QTensor:
    if q.axis is not None:
        raise TypeError(f"{who._name()}: expected a per-tensor quantized input, got {q!r}")
    return q


class QuantizedReLU(ReLU):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            q = _per_tensor(x, self)
            return _like(q, np.maximum(q.int_repr, np.array(q.zero_point).astype(q.int_repr.dtype)))
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: ReLU) -> "QuantizedReLU":
        return cls()


class QuantizedMaxPool2d(MaxPool2d):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            q = _per_tensor(x, self)
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self._args
            if q.ndim == 4 and (kh, kw) == (sh, sw) and ph == pw == 0 and dh == dw == 1 and not self.ceil_mode:
                h, w = q.shape[2] // kh * kh, q.shape[3] // kw * kw    # non-overlapping windows
                out = q.int_repr[:, :, 0:h:kh, 0:w:kw].copy()
                for i in range(kh):
                    for j in range(kw):
                        np.maximum(out, q.int_repr[:, :, i:h:kh, j:w:kw], out=out)
                return _like(q, out)
            with no_grad():
                pooled = super().forward(q.int_repr.astype(np.float32))     # codes <= 2^24: exact in float32
            return _like(q, pooled)
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: MaxPool2d) -> "QuantizedMaxPool2d":
        return cls(mod.kernel_size, mod.stride, mod.padding, mod.dilation, ceil_mode=mod.ceil_mode)


class QuantizedFlatten(Flatten):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            q = _per_tensor(x, self)
            n = max(q.ndim, 1)
            if not (-n <= self.start_dim < n and -n <= self.end_dim < n) or self.start_dim % n > self.end_dim % n:
                raise ValueError(f"{self._name()}: cannot flatten dims {self.start_dim}..{self.end_dim} "
                                 f"of an input of shape {q.shape}")
            s, e = self.start_dim % n, self.end_dim % n
            shape = q.shape[:s] + (int(np.prod(q.shape[s:e + 1])),) + q.shape[e + 1:]
            return _like(q, q.int_repr.reshape(shape))
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: Flatten) -> "QuantizedFlatten":
        return cls(mod.start_dim, mod.end_dim)


class QuantizedDropout(Dropout):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            return x
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: Dropout) -> "QuantizedDropout":
        return cls(mod.p)


class QuantizedHardtanh(Hardtanh):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            return QA.hardtanh(_per_tensor(x, self), self.min_val, self.max_val)
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: Hardtanh) -> "QuantizedHardtanh":
        return cls(mod.min_val, mod.max_val)


class QuantizedReLU6(ReLU6):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            return QA.relu6(_per_tensor(x, self))
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: ReLU6) -> "QuantizedReLU6":
        return cls()


class QuantizedSigmoid(Sigmoid):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            return QA.sigmoid(_per_tensor(x, self))
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: Sigmoid) -> "QuantizedSigmoid":
        return cls()


class QuantizedAdaptiveAvgPool2d(AdaptiveAvgPool2d):
    def forward(self, x: Any) -> Any:
        if isinstance(x, QTensor):
            return adaptive_avg_pool2d(_per_tensor(x, self), self.output_size)
        return super().forward(x)

    @classmethod
    def from_float(cls, mod: AdaptiveAvgPool2d) -> "QuantizedAdaptiveAvgPool2d":
        return cls(mod.output_size)
