"""Fake-quantization modules: ``FakeQuantize`` (observer + fake-quant, ``torch.ao.quantization.FakeQuantize``),
its fused-observer twin ``FusedMovingAvgObsFakeQuantize``, the enable/disable helpers and PyTorch 2.13's
default factories. Quantization-aware training (QAT) inserts them where the int8 model will round, so
the float model sees the same rounding and clamping during training. The arithmetic (and its PyTorch
quirks) is in ``fake_quant_ops``, whose names are re-exported here.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..nn.module import Module
from .fake_quant_ops import (_per_channel_qparams, _per_tensor_qparams, check_qparams, fake_quant_backward,
                             fake_quant_codes, fake_quant_forward, fake_quantize_per_channel_affine,
                             fake_quantize_per_channel_affine_backward, fake_quantize_per_tensor_affine,
                             fake_quantize_per_tensor_affine_backward)
from .observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver, _Factory, moving_average
from .qparams import QSCHEMES, choose_qparams_fused
from .qtensor import QDTYPES

__all__ = [
    "fake_quant_forward", "fake_quant_backward", "fake_quant_codes",
    "fake_quantize_per_tensor_affine", "fake_quantize_per_tensor_affine_backward",
    "fake_quantize_per_channel_affine", "fake_quantize_per_channel_affine_backward",
    "check_qparams", "choose_qparams_fused", "FakeQuantize", "FusedMovingAvgObsFakeQuantize",
    "disable_fake_quant", "enable_fake_quant", "disable_observer", "enable_observer",
    "default_fake_quant", "default_weight_fake_quant", "default_per_channel_weight_fake_quant",
    "default_fused_act_fake_quant", "default_fused_wt_fake_quant", "default_fused_per_channel_wt_fake_quant",
]


# ==================================================================================== modules
_DTYPE_RANGE = {name: (lo, hi) for name, (_, lo, hi) in QDTYPES.items()}


class FakeQuantize(Module):
    """Observer + fake-quant ≙ ``torch.ao.quantization.FakeQuantize``.

    forward(x): if ``observer_enabled``: observe x, copy the observer's ``calculate_qparams()`` into the
    ``scale`` (float32) / ``zero_point`` (int32) buffers; if ``fake_quant_enabled``: fake-quantize x
    with them (per tensor, or per channel along the observer's ``ch_axis``) using the *observer's*
    quant_min/quant_max (after reduce_range). backward(grad) = grad * in-range mask (STE).
    ``scale`` / ``zero_point`` are written in place (a new array only when the shape changes, (1,) ->
    (C,), where PyTorch ``resize_``s) and load from a state dict at any 1-D shape, as PyTorch's.
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
        zp_dtype = np.float32 if self.qscheme == "per_channel_affine_float_qparams" else np.int32
        self.register_buffer("zero_point", np.array([0], dtype=zp_dtype))

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

    def accepts_loaded_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        """``scale`` / ``zero_point`` load at any 1-D shape (PyTorch's ``_load_from_state_dict`` resizes)."""
        return name in ("scale", "zero_point") and len(shape) == 1

    def _set_qparams(self, scale: Any, zero_point: Any) -> None:
        """Copy into the buffers (float32 scale, the buffer's zero-point dtype), resizing if the shape differs."""
        scale = np.asarray(scale, dtype=np.float32).reshape(-1)
        zero_point = np.asarray(zero_point).reshape(-1)
        if self.scale.shape != scale.shape or self.zero_point.shape != zero_point.shape:
            self.scale = scale.copy()
            self.zero_point = zero_point.astype(self.zero_point.dtype)
        else:
            self.scale[...] = scale
            self.zero_point[...] = zero_point

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
        run_min, run_max = obs.min_val, obs.max_val
        obs.min_val[...] = moving_average(run_min, cur_min, obs.averaging_constant, np.isinf(run_min))
        obs.max_val[...] = moving_average(run_max, cur_max, obs.averaging_constant, np.isinf(run_max))

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.size == 0:
            self._save_for_backward(True)
            return x.copy()
        if self.observer_enabled[0] == 1:
            if np.isnan(x).any():     # PyTorch: scale NaN, zero point INT32_MIN, all outputs NaN
                raise ValueError(f"{self._name()}: observed data contains NaN ({int(np.isnan(x).sum())} of "
                                 f"{x.size} values); the running min / max and scale would become NaN")
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
