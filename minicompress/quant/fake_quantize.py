"""Fake quantization: quantize-then-dequantize in float, with the straight-through gradient.

Quantization-aware training (QAT) inserts fake-quant where the int8 model will round, so the float
model sees the same rounding and clamping during training. Two levels live here:

- the formula once, as a forward/backward pair (:func:`fake_quant_forward` -> (y, mask),
  :func:`fake_quant_backward`), and PyTorch's functional ops ``fake_quantize_per_tensor_affine`` /
  ``fake_quantize_per_channel_affine`` and their straight-through-estimator (STE) backwards as thin
  checked wrappers, bit-exact with PyTorch 2.13's CPU kernels
  (``aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp``); LSQ (``learnable.py``) calls
  the same forward, as PyTorch's learnable ops call these kernels;
- the ``FakeQuantize`` module (observer + fake-quant, ``torch.ao.quantization.FakeQuantize``), its
  fused-observer twin ``FusedMovingAvgObsFakeQuantize`` and the default factories.

The forward (PyTorch, float32 unless noted)::

    inv = float32(1) / float32(scale)                                   (1)
    q   = zp + rint(x * inv)              # zero point added AFTER rounding (half to even)
    y   = (clamp(q, qmin, qmax) - zp) * scale
    dx  = dy * (qmin <= q <= qmax)        # STE: identity inside the range, zero outside   (2)

Unlike ``quantize_per_tensor`` (which adds zp *before* one fused rounding on x86, PYTORCH_SEMANTICS
§0.1), (1) adds zp after rounding, so the two disagree at ties. Quirks kept on purpose (the two
kernels' own integer steps): the clamp is taken in double; per tensor, (q - zp) is an int64 rounded
once to float32 and multiplied in float32, even for float64 x; per channel, q is first cast to int64
(C's cast: +inf, NaN and values past int64 become INT64_MIN, hence ``qmin``; -0.0 becomes 0) and
(q - zp) * scale is taken in double. Float zero points (per channel) add zp before rounding.
Bad qparams raise ValueError: quant_min >= quant_max (PyTorch accepts quant_min == quant_max), a zero
point outside [quant_min, quant_max], a scale that is not positive and finite (PyTorch computes anyway).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..nn.module import Module
from .observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, _Factory, moving_average
from .qparams import QSCHEMES, choose_qparams_fused
from .qtensor import QDTYPES
from .qtensor import check_scale_zero_point as check_qparams  # the value check, over a custom range
from .kernels import fma32_elementwise

__all__ = [
    "fake_quant_forward", "fake_quant_backward", "fake_quant_codes",
    "fake_quantize_per_tensor_affine", "fake_quantize_per_tensor_affine_backward",
    "fake_quantize_per_channel_affine", "fake_quantize_per_channel_affine_backward",
    "check_qparams", "choose_qparams_fused", "FakeQuantize", "FusedMovingAvgObsFakeQuantize",
    "disable_fake_quant", "enable_fake_quant", "disable_observer", "enable_observer",
    "default_fake_quant", "default_weight_fake_quant", "default_per_channel_weight_fake_quant",
    "default_fused_act_fake_quant", "default_fused_wt_fake_quant", "default_fused_per_channel_wt_fake_quant",
]

_INT64_LIMIT = float(2 ** 63)


# ==================================================================================== the formula
def fake_quant_codes(x: np.ndarray, inv: Any, zero_point: Any, round_to: Any) -> np.ndarray:
    """Unclamped codes q of eq. (1), in x's dtype (``inv``, ``zero_point`` broadcast against x)::

        integer zero point:  q = zp + rint(x * inv)              zp added after rounding
        float zero point:    q = rint(fl(zp + x * inv))          zp added before (PyTorch's lrintf)

    ``fl`` rounds to ``round_to`` (float32 in PyTorch's kernels). For float32 x the CPU build contracts
    zp + x * inv into an FMA: one rounding of the exact value (``kernels.fma32_elementwise``, twin
    ``reference.fma32``; a double sum rounded to float32 would round twice). The learnable op's
    backward computes its ``xq`` with the float form.
    """
    zero_point = np.asarray(zero_point)
    if zero_point.dtype.kind != "f":
        q = np.rint(np.multiply(x, inv))
        q += zero_point.astype(x.dtype)
        return q
    if x.dtype == np.float32 and np.dtype(round_to) == np.float32:
        return np.rint(fma32_elementwise(x, inv, zero_point.astype(np.float32)))
    return np.rint((x.astype(np.float64) * inv + zero_point.astype(np.float64)).astype(round_to))


def int64_cast(q: np.ndarray) -> np.ndarray:
    """C's float -> int64 conversion on x86, in q's float dtype: inf, NaN and |q| >= 2^63 become
    -2^63 (INT64_MIN), and -0.0 becomes 0."""
    return np.where(np.abs(q) < _INT64_LIMIT, q + 0.0, -_INT64_LIMIT)


def _exact_dtype(x: np.ndarray, zero_point: np.ndarray, quant_min: int, quant_max: int) -> np.dtype:
    """A float dtype in which the kernels' clamp and q - zp are exact: x's own when its integers cover
    the range (|q|, |q - zp| <= 2^24 for float32) and zp is an integer, else float64."""
    limit = 2 ** (np.finfo(x.dtype).nmant + 1)
    narrow = max(-quant_min, quant_max, quant_max - quant_min) <= limit
    return x.dtype if narrow and zero_point.dtype.kind != "f" else np.dtype(np.float64)


def fake_quant_forward(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, quant_min: int,
                       quant_max: int, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """y = (clamp(q, qmin, qmax) - zp) * s with q = fake_quant_codes(x, 1/s, zp)   (eq. 1); -> (y, mask).

    x: float array; axis None: ``scale`` 0-d, ``zero_point`` 0-d (PyTorch's per-tensor kernel);
    axis = a: ``scale``, ``zero_point`` (C,) with C = x.shape[a] (the per-channel kernel). ``scale``'s
    dtype is the kernel's float precision: float32 for PyTorch (``1.0f / scale``), x's dtype for LSQ's
    float64 mode. The clamp and q - zp are the kernels' integer steps (exact here). The kernels differ,
    as PyTorch's do: per tensor, the mask compares q as a float and (q - zp) is rounded once to the
    scale's precision before the product; per channel, q is an int64 first (``int64_cast``) and the
    product is exact before one rounding to x's dtype. The cache is the STE mask qmin <= q <= qmax.
    """
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)       # broadcast along axis
    exact = _exact_dtype(x, zero_point, quant_min, quant_max)
    inv = (scale.dtype.type(1) / scale).astype(x.dtype)
    q = fake_quant_codes(x, inv, zero_point, scale.dtype)
    if axis is None:
        mask = (q >= quant_min) & (q <= quant_max)              # NaN compares False
    else:
        q = int64_cast(q).astype(exact, copy=False)
        mask = (q >= quant_min) & (q <= quant_max)
    y = q.astype(exact, copy=False)                             # q is ours: work in place
    np.fmin(np.fmax(y, quant_min, out=y), quant_max, out=y)     # C fmin/fmax: NaN -> qmin
    y -= zero_point.astype(exact)                               # clamp(q) - zp
    if axis is None:
        y = y.astype(scale.dtype, copy=False)
        y *= scale
    else:
        y *= scale.astype(exact)
    return y.astype(x.dtype, copy=False), mask


def fake_quant_backward(dy: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dy * (qmin <= q <= qmax)   (eq. 2, the straight-through estimator); cache = the mask."""
    return dy * cache


# ==================================================================================== PyTorch's ops
def _check_input(x: Any, who: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{who}: expected a floating-point ndarray, got {kind}")
    return x


def _check_axis(x: np.ndarray, axis: Any, who: str) -> None:
    if not isinstance(axis, (int, np.integer)) or not 0 <= axis < x.ndim:
        raise ValueError(f"{who}: axis must be in [0, {x.ndim}) for an input of shape {x.shape}, got {axis}")


def _check_grad(grad: Any, x: np.ndarray, who: str) -> None:
    if np.shape(grad) != x.shape:
        raise ValueError(f"{who}: grad shape {np.shape(grad)} != input shape {x.shape}")


def _per_tensor_qparams(x: Any, scale: Any, zero_point: Any, quant_min: int, quant_max: int,
                        who: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked 0-d (float32 scale, int64 zero point) for :func:`fake_quant_forward`."""
    _check_input(x, who)
    s, z = np.asarray(scale), np.asarray(zero_point)
    if s.size != 1 or z.size != 1:
        raise ValueError(f"{who}: per-tensor scale and zero_point must be scalars (or 1-element), "
                         f"got shapes {s.shape} and {z.shape}")
    if z.dtype.kind == "f" and float(z.reshape(())) != int(z.reshape(())):
        raise ValueError(f"{who}: zero_point must be an integer, got {float(z.reshape(()))}")
    s, z = np.float32(s.reshape(())), int(z.reshape(()))
    check_qparams(s, z, quant_min, quant_max, who)
    return np.asarray(s), np.asarray(z, np.int64)


def _per_channel_qparams(x: Any, scale: Any, zero_point: Any, axis: int, quant_min: int, quant_max: int,
                         who: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked (C,) float32 scales and zero points (int64, or float32 when given as floats)."""
    _check_input(x, who)
    _check_axis(x, axis, who)
    s, z = np.asarray(scale), np.asarray(zero_point)
    if s.ndim != 1 or z.ndim != 1 or s.shape[0] != x.shape[axis] or z.shape[0] != x.shape[axis]:
        raise ValueError(f"{who}: scale and zero_point must be 1-D of length x.shape[{axis}] = "
                         f"{x.shape[axis]}, got {s.shape} and {z.shape} for input {x.shape}")
    float_zp = z.dtype.kind == "f"
    check_qparams(s, np.rint(z) if float_zp else z, quant_min, quant_max, who)
    return s.astype(np.float32), z.astype(np.float32 if float_zp else np.int64)


def fake_quantize_per_tensor_affine(x: np.ndarray, scale: Any, zero_point: Any, quant_min: int,
                                    quant_max: int) -> np.ndarray:
    """y = (clamp(zp + rint(x * inv), qmin, qmax) - zp) * scale   (eq. 1), ≙ torch op of that name.

    x: any shape, float32 or float64; scale: float (> 0); zero_point: int in [qmin, qmax].
    Returns y with x's shape and dtype.
    """
    qp = _per_tensor_qparams(x, scale, zero_point, quant_min, quant_max, "fake_quantize_per_tensor_affine")
    return fake_quant_forward(x, *qp, quant_min, quant_max)[0]


def fake_quantize_per_tensor_affine_backward(grad: np.ndarray, x: np.ndarray, scale: Any,
                                             zero_point: Any, quant_min: int,
                                             quant_max: int) -> np.ndarray:
    """dx = grad * (qmin <= zp + rint(x * inv) <= qmax)   (eq. 2, straight-through estimator)."""
    who = "fake_quantize_per_tensor_affine_backward"
    mask = fake_quant_forward(x, *_per_tensor_qparams(x, scale, zero_point, quant_min, quant_max, who),
                              quant_min, quant_max)[1]
    _check_grad(grad, x, who)
    return fake_quant_backward(grad, mask)


def fake_quantize_per_channel_affine(x: np.ndarray, scale: Any, zero_point: Any, axis: int,
                                     quant_min: int, quant_max: int) -> np.ndarray:
    """Eq. (1) per channel: y = (clamp(zp[c] + rint(x * inv[c]), qmin, qmax) - zp[c]) * scale[c].

    x: any shape with ``x.shape[axis] == C``; scale: (C,) > 0; zero_point: (C,) ints in
    [qmin, qmax] (float zero points use ``rint(zp + x * inv)`` as PyTorch does). Returns y like x.
    """
    qp = _per_channel_qparams(x, scale, zero_point, axis, quant_min, quant_max, "fake_quantize_per_channel_affine")
    return fake_quant_forward(x, *qp, quant_min, quant_max, axis)[0]


def fake_quantize_per_channel_affine_backward(grad: np.ndarray, x: np.ndarray, scale: Any,
                                              zero_point: Any, axis: int, quant_min: int,
                                              quant_max: int) -> np.ndarray:
    """dx = grad * (qmin <= zp[c] + rint(x * inv[c]) <= qmax)   (eq. 2 per channel)."""
    who = "fake_quantize_per_channel_affine_backward"
    qp = _per_channel_qparams(x, scale, zero_point, axis, quant_min, quant_max, who)
    mask = fake_quant_forward(x, *qp, quant_min, quant_max, axis)[1]
    _check_grad(grad, x, who)
    return fake_quant_backward(grad, mask)


# ==================================================================================== modules
_DTYPE_RANGE = {name: (lo, hi) for name, (_, lo, hi) in QDTYPES.items()}


class FakeQuantize(Module):
    """Observer + fake-quant ≙ ``torch.ao.quantization.FakeQuantize``.

    forward(x): if ``observer_enabled``: observe x, copy the observer's ``calculate_qparams()`` into the
    ``scale`` (float32) / ``zero_point`` (int32) buffers; if ``fake_quant_enabled``: fake-quantize x
    with them (per tensor, or per channel along the observer's ``ch_axis``) using the *observer's*
    quant_min/quant_max (after reduce_range). backward(grad) = grad * in-range mask (STE).
    """

    def __init__(self, observer: Callable[..., Module] | None = None, quant_min: int | None = None,
                 quant_max: int | None = None, is_dynamic: bool = False, **observer_kwargs: Any) -> None:
        super().__init__()
        observer = MovingAverageMinMaxObserver if observer is None else observer
        if quant_min is not None and quant_max is not None:
            if quant_min >= quant_max:
                raise ValueError(f"{type(self).__name__}: quant_min must be < quant_max, got "
                                 f"quant_min={quant_min}, quant_max={quant_max}")
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        if is_dynamic:
            observer_kwargs["is_dynamic"] = True
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        self.quant_min, self.quant_max = int(obs.quant_min), int(obs.quant_max)
        self.dtype, self.qscheme, self.is_dynamic = obs.dtype, obs.qscheme, bool(is_dynamic)
        lo, hi = _DTYPE_RANGE.get(self.dtype, (self.quant_min, self.quant_max))
        if not lo <= self.quant_min < self.quant_max <= hi:
            raise ValueError(f"{type(self).__name__}: quant range [{self.quant_min}, {self.quant_max}] must "
                             f"be non-empty and inside the {self.dtype} range [{lo}, {hi}]")
        if self.qscheme not in QSCHEMES:
            raise ValueError(f"{type(self).__name__}: unsupported qscheme {self.qscheme!r}")
        self.is_per_channel = self.qscheme.startswith("per_channel")
        self.ch_axis = int(getattr(obs, "ch_axis", -1)) if self.is_per_channel else -1
        self.register_buffer("fake_quant_enabled", np.array([1], dtype=np.uint8))
        self.register_buffer("observer_enabled", np.array([1], dtype=np.uint8))
        self.register_buffer("scale", np.array([1.0], dtype=np.float32))
        self.register_buffer("zero_point", np.array([0], dtype=np.int32))

    @classmethod
    def with_args(cls, **kwargs: Any) -> _Factory:
        """A zero-argument factory (as PyTorch's ``with_args``) for QConfig."""
        return _Factory(cls, **kwargs)

    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.fake_quant_enabled[0] = 1 if enabled else 0

    def disable_fake_quant(self) -> None:
        self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> None:
        self.observer_enabled[0] = 1 if enabled else 0

    def disable_observer(self) -> None:
        self.enable_observer(False)

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        return self.activation_post_process.calculate_qparams()

    def _set_qparams(self, scale: Any, zero_point: Any) -> None:
        self.scale = np.asarray(scale, dtype=np.float32).reshape(-1).copy()
        self.zero_point = np.asarray(zero_point).reshape(-1).astype(np.int32)

    def _fake_quant(self, x: np.ndarray) -> np.ndarray:
        if self.is_per_channel:
            qp = _per_channel_qparams(x, self.scale, self.zero_point, self.ch_axis, self.quant_min,
                                      self.quant_max, self._name())
        else:
            qp = _per_tensor_qparams(x, self.scale, self.zero_point, self.quant_min, self.quant_max, self._name())
        y, mask = fake_quant_forward(x, *qp, self.quant_min, self.quant_max,
                                     self.ch_axis if self.is_per_channel else None)
        self._save_for_backward(mask)
        return y

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.observer_enabled[0] == 1:
            self.activation_post_process(x)
            self._set_qparams(*self.calculate_qparams())
        if self.fake_quant_enabled[0] == 1:
            return self._fake_quant(x)
        self._save_for_backward(True)
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """d loss / d x = grad_output * (qmin <= zp + rint(x / s) <= qmax) (identity when disabled)."""
        mask = self._saved()
        if mask is True:
            return grad_output
        if np.shape(grad_output) != mask.shape:
            raise ValueError(f"{self._name()}: backward expected a gradient of shape {mask.shape}, "
                             f"got {np.shape(grad_output)}")
        return fake_quant_backward(grad_output, mask)

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={int(self.fake_quant_enabled[0])}, "
                f"observer_enabled={int(self.observer_enabled[0])}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, ch_axis={self.ch_axis}")


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """≙ ``torch.ao.quantization.FusedMovingAvgObsFakeQuantize`` (what ``get_default_qat_qconfig`` uses).

    PyTorch runs ``torch.fused_moving_avg_obs_fake_quant``, which differs from FakeQuantize:
    - the observer's running min/max are updated in place by the op's own rule (first batch: copy;
      then ``m += c * (cur - m)`` in float32); per channel only along axis 0;
    - scale / zero point come from :func:`choose_qparams_fused` (FBGEMM), recomputed on every forward
      with fake-quant on, and are *not* updated while fake-quant is off;
    - ``calculate_qparams()`` still returns the observer's rule (what ``convert`` uses), so the int8
      model's qparams differ slightly from those used in training (PyTorch behaviour, kept).
    """

    def __init__(self, observer: Callable[..., Module] | None = None, quant_min: int = 0,
                 quant_max: int = 255, **observer_kwargs: Any) -> None:
        super().__init__(observer, quant_min, quant_max, **observer_kwargs)
        obs = self.activation_post_process
        if not hasattr(obs, "averaging_constant"):
            raise TypeError(f"{type(self).__name__}: the observer must be a MovingAverage(PerChannel)MinMaxObserver, "
                            f"got {type(obs).__name__}")
        if self.is_per_channel and self.ch_axis != 0:
            raise ValueError(f"{type(self).__name__}: per-channel fake-quant is only supported on axis 0, "
                             f"got ch_axis={self.ch_axis}")
        self.register_buffer("fake_quant_enabled", np.array([1], dtype=np.int64))
        self.register_buffer("observer_enabled", np.array([1], dtype=np.int64))
        self.is_symmetric_quant = self.qscheme.endswith("symmetric")

    def _observe(self, x: np.ndarray) -> None:
        obs = self.activation_post_process
        x32 = x.astype(np.float32, copy=False)
        if self.is_per_channel:
            flat = x32.reshape(x.shape[0], -1)             # (C, rest)
            cur_min, cur_max = flat.min(axis=1), flat.max(axis=1)
            if np.size(obs.min_val) == 0:
                obs.min_val = np.full(x.shape[0], np.inf, np.float32)
                obs.max_val = np.full(x.shape[0], -np.inf, np.float32)
        else:
            cur_min, cur_max = x32.min(), x32.max()
        run_min, run_max = np.asarray(obs.min_val, np.float32), np.asarray(obs.max_val, np.float32)
        obs.min_val = moving_average(run_min, cur_min, obs.averaging_constant, np.isinf(run_min))
        obs.max_val = moving_average(run_max, cur_max, obs.averaging_constant, np.isinf(run_max))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.size == 0:
            self._save_for_backward(True)
            return x.copy()
        if self.observer_enabled[0] == 1:
            self._observe(x)
        if self.fake_quant_enabled[0] != 1:
            self._save_for_backward(True)
            return x
        obs = self.activation_post_process
        self._set_qparams(*choose_qparams_fused(obs.min_val, obs.max_val, self.quant_min, self.quant_max,
                                                self.is_symmetric_quant))
        return self._fake_quant(x)


def disable_fake_quant(mod: Module) -> None:
    """``model.apply(disable_fake_quant)`` turns fake-quant off in every FakeQuantize."""
    if hasattr(mod, "disable_fake_quant") and hasattr(mod, "fake_quant_enabled"):
        mod.disable_fake_quant()


def enable_fake_quant(mod: Module) -> None:
    if hasattr(mod, "enable_fake_quant") and hasattr(mod, "fake_quant_enabled"):
        mod.enable_fake_quant()


def disable_observer(mod: Module) -> None:
    """``model.apply(disable_observer)`` freezes every fake-quant's scale / zero point."""
    if hasattr(mod, "disable_observer") and (hasattr(mod, "observer_enabled") or hasattr(mod, "static_enabled")):
        mod.disable_observer()


def enable_observer(mod: Module) -> None:
    if hasattr(mod, "enable_observer") and (hasattr(mod, "observer_enabled") or hasattr(mod, "static_enabled")):
        mod.enable_observer()


# ==================================================================================== defaults (torch 2.13)
default_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype="quint8",
    qscheme="per_tensor_affine", reduce_range=True)                        # activations: 0..127
# weights: moving average with averaging_constant 0.01 (PyTorch's docstring says "memoryless"; it is not)
default_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype="qint8",
    qscheme="per_tensor_symmetric", reduce_range=False)
default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype="qint8",
    qscheme="per_channel_symmetric", reduce_range=False, ch_axis=0)
default_fused_act_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype="quint8")
default_fused_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype="qint8",
    qscheme="per_tensor_symmetric")
default_fused_per_channel_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype="qint8",
    qscheme="per_channel_symmetric")
