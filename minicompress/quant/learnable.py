"""Learnable fake quantization (LSQ, Esser et al. 2020), as PyTorch's ``_LearnableFakeQuantize``.

Scale s and zero point z are Parameters trained with the rest of the network. The forward is the
ordinary fake-quant with z rounded; the backward treats round() as the identity (straight-through)
and differentiates the clamp, then multiplies the scale/zero-point gradients by the LSQ factor
g = 1 / sqrt(numel(x) * quant_max) (or 1). Per element, with xq = rint(z_b + x / s)::

    in range  (qmin <= xq <= qmax):  dx = dy    ds = dy * (xfq - x) / s * g    dz = 0          (1)
    below     (xq < qmin):           dx = 0     ds = dy * (qmin - z_b) * g     dz = -dy * s * g (2)
    above     (xq > qmax):           dx = 0     ds = dy * (qmax - z_b) * g     dz = -dy * s * g (3)

with xfq = (clamp(xq, qmin, qmax) - z_b) * s, and ds, dz summed over the tensor (per tensor) or over
every axis but ``axis`` (per channel). PyTorch 2.13 quirks reproduced (FakeQuantPerTensorAffine.cpp):

- per tensor, the forward rounds z with nearbyint (half to even) but the backward uses
  z_b = int(clamp(z + 0.5)) (truncation toward zero: 2.5 -> 3, -3.7 -> -3 and even the integer
  -6 -> -5, where the forward has 2, -4 and -6); per channel both use round-half-even;
- the forward is the plain fake-quant op (``fake_quant_forward``: z added *after* rounding, NaN -> qmin,
  per channel +inf -> qmin), the backward adds z *before* rounding (``xq`` above) and casts xq to
  int64 (inf and NaN become INT64_MIN: "below");
- the CPU build contracts ``z + x * inv`` and ``xfq - x`` into FMAs (emulated here in double: exact
  product, one rounding to float32).

PyTorch runs this in float32 only; here float64 inputs compute everything in float64 (for finite
differences), float32 inputs reproduce PyTorch bit for bit (except ds/dz sums: summation order).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..nn.module import Module, Parameter
from .fake_quant_ops import (_check_axis, _check_input, check_qparams, fake_quant_codes, fake_quant_forward,
                            int64_cast)
from .observer import _Factory
from .qparams import is_per_channel, is_symmetric

__all__ = [
    "fake_quantize_learnable_per_tensor_affine_forward", "fake_quantize_learnable_per_tensor_affine_backward",
    "fake_quantize_learnable_per_channel_affine_forward", "fake_quantize_learnable_per_channel_affine_backward",
    "LearnableFakeQuantize", "_LearnableFakeQuantize",
]


def _grads(dy: np.ndarray, x: np.ndarray, s: np.ndarray, zp_b: np.ndarray, qmin: int, qmax: int,
           g: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-element (dx, ds, dz) of eqs. (1)-(3); s and zp_b (float) broadcast against x, in x's dtype."""
    inv = 1 / s
    xq = int64_cast(fake_quant_codes(x, inv, zp_b, x.dtype))   # int64(rint(z_b + x * inv)), FMA
    below, above = xq < qmin, xq > qmax
    inside = ~(below | above)
    dx = dy * inside
    if x.dtype == np.float32:  # xfq - x = fma(clamp(xq) - z, s, -x): the build contracts it too
        err = ((np.clip(xq, qmin, qmax) - zp_b).astype(np.float64) * s - x).astype(np.float32)
    else:
        err = (np.clip(xq, qmin, qmax) - zp_b) * s - x     # xfq - x
    ds_in = dy * err * inv * g
    ds_out = np.where(below, dy * (qmin - zp_b), dy * (qmax - zp_b)) * g
    ds = np.where(inside, ds_in, ds_out)
    dz = np.where(inside, 0, dy * -1 * s * g).astype(x.dtype)
    return dx, ds, dz


def _check(x: np.ndarray, quant_min: int, quant_max: int, who: str) -> None:
    _check_input(x, who)
    if not quant_min <= 0 <= quant_max:
        raise ValueError(f"{who}: the quantization range must include 0, got [{quant_min}, {quant_max}]")


def fake_quantize_learnable_per_tensor_affine_forward(
        x: np.ndarray, scale: Any, zero_point: Any, quant_min: int, quant_max: int,
        grad_factor: float = 1.0) -> tuple[np.ndarray, tuple]:
    """y = (clamp(z_f + rint(x / s), qmin, qmax) - z_f) * s, z_f = clamp(nearbyint(z)).

    PyTorch's ``fake_quantize_per_tensor_affine`` with the rounded zero point (``fake_quant_forward``).
    x: any shape; scale, zero_point: (1,) float arrays (Parameters' data). Returns (y, cache).
    """
    who = "fake_quantize_learnable_per_tensor_affine"
    _check(x, quant_min, quant_max, who)
    s = np.asarray(scale, dtype=x.dtype).reshape(-1)
    z = np.asarray(zero_point, dtype=np.float32).reshape(-1)
    if s.size != 1 or z.size != 1:
        raise ValueError(f"{who}: scale and zero_point must have one element, got {s.shape}, {z.shape}")
    zp_f = np.clip(np.rint(z), quant_min, quant_max)
    check_qparams(s, zp_f, quant_min, quant_max, who)
    y, _ = fake_quant_forward(x, s.reshape(()), zp_f.astype(np.int64).reshape(()), quant_min, quant_max)
    return y, (x, s, z, quant_min, quant_max, grad_factor)


def fake_quantize_learnable_per_tensor_affine_backward(
        dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dscale (1,), dzero_point (1,)) by eqs. (1)-(3), z_b = int(clamp(z + 0.5))."""
    x, s, z, qmin, qmax, grad_factor = cache
    zp_b = np.trunc(np.clip(z + np.float32(0.5), qmin, qmax))  # PyTorch: static_cast<int64>(z + 0.5f)
    t = x.dtype.type
    dx, ds, dz = _grads(dy, x, s[0], t(zp_b[0]), qmin, qmax, t(grad_factor))
    dscale = np.array([ds.sum(dtype=np.float64)], dtype=x.dtype)
    dzp = np.array([dz.sum(dtype=np.float64)], dtype=x.dtype)
    return dx, dscale, dzp


def _channel_view(x: np.ndarray, v: np.ndarray, axis: int, who: str) -> np.ndarray:
    if v.ndim != 1 or v.shape[0] != x.shape[axis]:
        raise ValueError(f"{who}: scale and zero_point must be 1-D of length x.shape[{axis}] = "
                         f"{x.shape[axis]}, got {v.shape} for input {x.shape}")
    shape = [1] * x.ndim
    shape[axis] = -1
    return v.reshape(shape)


def fake_quantize_learnable_per_channel_affine_forward(
        x: np.ndarray, scale: Any, zero_point: Any, axis: int, quant_min: int, quant_max: int,
        grad_factor: float = 1.0) -> tuple[np.ndarray, tuple]:
    """Per-channel twin: scale[c], z_f[c] = clamp(round_half_even(z[c])) along ``axis``
    (PyTorch's ``fake_quantize_per_channel_affine`` with integer zero points)."""
    who = "fake_quantize_learnable_per_channel_affine"
    _check(x, quant_min, quant_max, who)
    _check_axis(x, axis, who)
    s = _channel_view(x, np.asarray(scale, dtype=x.dtype), axis, who)
    zp_r = np.clip(np.rint(np.asarray(zero_point, dtype=np.float32)), quant_min, quant_max)
    check_qparams(s, zp_r, quant_min, quant_max, who)
    zp_r = _channel_view(x, zp_r.astype(x.dtype), axis, who)
    y, _ = fake_quant_forward(x, s, zp_r.astype(np.int64), quant_min, quant_max, axis)
    return y, (x, s, zp_r, axis, quant_min, quant_max, grad_factor)


def fake_quantize_learnable_per_channel_affine_backward(
        dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dscale (C,), dzero_point (C,)) by eqs. (1)-(3), summed over all axes but ``axis``."""
    x, s, zp_r, axis, qmin, qmax, grad_factor = cache
    dx, ds, dz = _grads(dy, x, s, zp_r, qmin, qmax, x.dtype.type(grad_factor))
    others = tuple(i for i in range(x.ndim) if i != axis)
    dscale = ds.sum(axis=others, dtype=np.float64).astype(x.dtype)
    dzp = dz.sum(axis=others, dtype=np.float64).astype(x.dtype)
    return dx, dscale, dzp


class LearnableFakeQuantize(Module):
    """LSQ fake-quant module ≙ ``torch.ao.quantization._LearnableFakeQuantize``.

    ``scale`` and ``zero_point`` are Parameters ((1,) per tensor, (channel_len,) per channel).
    While ``static_enabled`` the observer's qparams are copied into them every forward; after
    ``enable_param_learning()`` they are learned (scale clamped to >= eps before each forward).
    Symmetric qschemes force the zero point to 0.
    """

    def __init__(self, observer: Callable[..., Module], quant_min: int = 0, quant_max: int = 255,
                 scale: float = 1.0, zero_point: float = 0.0, channel_len: int = -1,
                 use_grad_scaling: bool = False, **observer_kwargs: Any) -> None:
        super().__init__()
        if quant_min >= quant_max:
            raise ValueError(f"LearnableFakeQuantize: quant_min must be < quant_max, got "
                             f"[{quant_min}, {quant_max}]")
        self.quant_min, self.quant_max = int(quant_min), int(quant_max)
        self.use_grad_scaling = bool(use_grad_scaling)
        if channel_len != -1 and not (isinstance(channel_len, int) and channel_len > 0):
            raise ValueError(f"LearnableFakeQuantize: channel_len must be a positive int or -1, got {channel_len!r}")
        n = 1 if channel_len == -1 else channel_len
        self.scale = Parameter(np.full(n, scale, dtype=np.float32))
        self.zero_point = Parameter(np.full(n, zero_point, dtype=np.float32))
        observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(**observer_kwargs)
        self.dtype = self.activation_post_process.dtype
        self.qscheme = self.activation_post_process.qscheme
        self.ch_axis = getattr(self.activation_post_process, "ch_axis", -1)
        self.register_buffer("fake_quant_enabled", np.array([1], dtype=np.uint8))
        self.register_buffer("observer_enabled", np.array([1], dtype=np.uint8))  # unused, as in PyTorch
        self.register_buffer("static_enabled", np.array([1], dtype=np.uint8))
        self.register_buffer("learning_enabled", np.array([0], dtype=np.uint8))
        self.bitwidth = int(np.log2(quant_max - quant_min + 1))
        self.register_buffer("eps", np.array([np.finfo(np.float32).eps], dtype=np.float32))
        self.requires_grad = True  # PyTorch's Parameters start with requires_grad=True

    @classmethod
    def with_args(cls, **kwargs: Any) -> _Factory:
        """A zero-argument factory for QConfig (``observer`` and its arguments included)."""
        return _Factory(cls, **kwargs)

    # ----------------------------------------------------------- switches (PyTorch's names)
    def toggle_observer_update(self, enabled: bool = True) -> "LearnableFakeQuantize":
        self.static_enabled[0] = int(enabled)
        return self

    def enable_observer(self, enabled: bool = True) -> None:
        self.toggle_observer_update(enabled)

    def disable_observer(self) -> None:
        self.toggle_observer_update(False)

    def toggle_qparam_learning(self, enabled: bool = True) -> "LearnableFakeQuantize":
        self.learning_enabled[0] = int(enabled)
        self.requires_grad = bool(enabled)
        return self

    def toggle_fake_quant(self, enabled: bool = True) -> "LearnableFakeQuantize":
        self.fake_quant_enabled[0] = int(enabled)
        return self

    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.toggle_fake_quant(enabled)

    def disable_fake_quant(self) -> None:
        self.toggle_fake_quant(False)

    def enable_param_learning(self) -> "LearnableFakeQuantize":
        """Learn scale/zero point; stop copying them from the observer."""
        return self.toggle_qparam_learning(True).toggle_fake_quant(True).toggle_observer_update(False)

    def enable_static_estimate(self) -> None:
        """Copy scale/zero point from the observer every forward; do not learn them."""
        self.toggle_qparam_learning(False).toggle_fake_quant(True).toggle_observer_update(True)

    def enable_static_observation(self) -> None:
        """Observe only: qparams from the observer, output = input (no fake-quant)."""
        self.toggle_qparam_learning(False).toggle_fake_quant(False).toggle_observer_update(True)

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale float32, zero point int64 = clamp(round_half_even(zero_point)))."""
        np.maximum(self.scale.data, self.eps[0], out=self.scale.data)
        zp = np.clip(np.rint(self.zero_point.data), self.quant_min, self.quant_max).astype(np.int64)
        return self.scale.data.copy(), zp

    # ----------------------------------------------------------- forward / backward
    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.static_enabled[0] == 1:
            self.activation_post_process(x)
            s, z = self.activation_post_process.calculate_qparams()
            self.scale.data[...] = np.asarray(s, dtype=np.float32).reshape(self.scale.shape)
            self.zero_point.data[...] = np.asarray(z, dtype=np.float32).reshape(self.zero_point.shape)
        else:
            np.maximum(self.scale.data, self.eps[0], out=self.scale.data)
        if self.fake_quant_enabled[0] != 1:
            self._save_for_backward(("identity",))
            return x
        if is_symmetric(self.qscheme):
            self.zero_point.data[...] = 0
        g = 1.0 / (x.size * self.quant_max) ** 0.5 if self.use_grad_scaling else 1.0
        if is_per_channel(self.qscheme):
            y, cache = fake_quantize_learnable_per_channel_affine_forward(
                x, self.scale.data, self.zero_point.data, self.ch_axis, self.quant_min, self.quant_max, g)
            self._save_for_backward(("channel", cache))
        else:
            y, cache = fake_quantize_learnable_per_tensor_affine_forward(
                x, self.scale.data, self.zero_point.data, self.quant_min, self.quant_max, g)
            self._save_for_backward(("tensor", cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        saved = self._saved()
        if saved[0] == "identity":
            return grad_output
        if saved[0] == "channel":
            dx, ds, dz = fake_quantize_learnable_per_channel_affine_backward(grad_output, saved[1])
        else:
            dx, ds, dz = fake_quantize_learnable_per_tensor_affine_backward(grad_output, saved[1])
        if self.requires_grad:
            self.accumulate_grad("scale", ds.astype(self.scale.dtype))
            self.accumulate_grad("zero_point", dz.astype(self.zero_point.dtype))
        return dx

    def extra_repr(self) -> str:
        return (f"quant_min={self.quant_min}, quant_max={self.quant_max}, qscheme={self.qscheme}, "
                f"ch_axis={self.ch_axis}, use_grad_scaling={self.use_grad_scaling}")


_LearnableFakeQuantize = LearnableFakeQuantize
