"""Observers: Modules that watch float tensors and turn their range into (scale, zero_point).

Mirrors ``torch.ao.quantization.observer`` (PyTorch 2.13): same class names, arguments, defaults,
buffers (``eps``, ``min_val``, ``max_val``) and ``calculate_qparams()`` results: a float32 scale and
a zero point of shape (1,) per tensor or (C,) per channel, int32 for affine qschemes and int64 for
symmetric ones (PyTorch's dtypes, ``qparams.calculate_qparams``). ``obs(x)`` records statistics and
returns ``x`` unchanged; ``backward(grad)`` passes the gradient through.

Buffers are updated in place, as PyTorch's ``copy_``: a reference to ``obs.min_val`` stays current.
The one exception is a per-channel observer's first batch, where the empty (0,) buffers become (C,)
(PyTorch ``resize_``s them; NumPy cannot grow an array others may view, so a new array is bound).
Loading a state dict resizes those buffers the same way (``accepts_loaded_shape``), so a calibrated
per-channel observer's state loads into a fresh one.

Running statistics (float32 arithmetic, in PyTorch's order)::

    MinMax:         min = min(min, min(x))               max = max(max, max(x))
    MovingAverage:  min = min + c * (min(x) - min)       (the first batch sets min, max directly)

qschemes and dtypes are strings: 'per_tensor_affine', 'per_tensor_symmetric', 'per_channel_affine',
'per_channel_symmetric'; 'quint8', 'qint8', 'qint32', 'quint4x2' (codes 0..15). NaN or +-inf in observed data raise ValueError
(PyTorch silently produces NaN or infinite scales); ``HistogramObserver`` drops +-inf like PyTorch.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..nn.module import Module
from .qparams import (FLOAT32_EPS, calculate_qmin_qmax, calculate_qparams, check_qscheme, is_per_channel,
                      validate_qmin_qmax)
from .qtensor import check_dtype


class _Factory(functools.partial):
    """``Observer.with_args(...)``: a zero-argument factory that can be refined with ``with_args`` again."""

    def with_args(self, **kwargs: Any) -> "_Factory":
        return _Factory(self.func, *self.args, **{**self.keywords, **kwargs})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.keywords.items())
        return f"{self.func.__name__}.with_args({args})"


class ObserverBase(Module):
    """Base of every observer: ``dtype``, ``is_dynamic``; ``forward`` returns its input."""

    def __init__(self, dtype: str, is_dynamic: bool = False) -> None:
        super().__init__()
        self.dtype = dtype
        self.is_dynamic = bool(is_dynamic)

    @classmethod
    def with_args(cls, **kwargs: Any) -> _Factory:
        """A factory of identically configured, independent observers (``QConfig`` takes these)."""
        return _Factory(cls, **kwargs)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _observed(x: Any, who: str, allow_inf: bool = False) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: expected a floating-point array, got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if np.isnan(x).any():
        raise ValueError(f"{who}: observed data contains NaN")
    if not allow_inf and np.isinf(x).any():
        raise ValueError(f"{who}: observed data contains +-inf (the range would be infinite)")
    return x


def moving_average(running: Any, current: Any, averaging_constant: float, reset: Any) -> np.ndarray:
    """running + c * (current - running) in float32 (PyTorch's order); ``current`` where ``reset``.

    The observers reset on their first batch (``MovingAverage*MinMaxObserver.forward``); the fused op
    (``fused_obs_fake_quant.cpp`` ``calculate_moving_average``) per element wherever running is +-inf.
    """
    c = np.float32(averaging_constant)
    with np.errstate(invalid="ignore"):  # inf - inf in the branch np.where discards
        current = np.asarray(current, np.float32)
        return np.where(reset, current, running + c * (current - running)).astype(np.float32)


class UniformQuantizationObserverBase(ObserverBase):
    """Holds the quantization configuration and the shared ``_calculate_qparams``."""

    def __init__(self, dtype: str = "quint8", qscheme: str = "per_tensor_affine", reduce_range: bool = False,
                 quant_min: int | None = None, quant_max: int | None = None, eps: float = FLOAT32_EPS,
                 is_dynamic: bool = False) -> None:
        super().__init__(check_dtype(dtype), is_dynamic)
        self.qscheme = check_qscheme(qscheme)
        self.reduce_range = bool(reduce_range)
        self.register_buffer("eps", np.array([eps], np.float32))
        if (quant_min is None) != (quant_max is None):
            raise ValueError("give both quant_min and quant_max, or neither")
        self.has_customized_qrange = quant_min is not None
        if self.has_customized_qrange:
            validate_qmin_qmax(quant_min, quant_max)
        self.quant_min, self.quant_max = calculate_qmin_qmax(quant_min, quant_max, self.has_customized_qrange,
                                                             self.dtype, self.reduce_range)

    def _refuse_reduced_symmetric_quint8(self) -> None:
        """MinMax and PerChannel observers (not HistogramObserver) refuse reduce_range for symmetric quint8."""
        if self.qscheme.endswith("symmetric") and self.reduce_range and self.dtype == "quint8":
            raise NotImplementedError(f"{type(self).__name__}: Cannot reduce range for symmetric quantization "
                                      f"for quint8")

    def _calculate_qparams(self, min_val: np.ndarray, max_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return calculate_qparams(min_val, max_val, self.quant_min, self.quant_max, self.qscheme, self.dtype,
                                 float(self.eps[0]), self.has_customized_qrange)

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype!r}, qscheme={self.qscheme!r}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}")


class MinMaxObserver(UniformQuantizationObserverBase):
    """Running min / max of everything observed; per-tensor qschemes only."""

    def __init__(self, dtype: str = "quint8", qscheme: str = "per_tensor_affine", reduce_range: bool = False,
                 quant_min: int | None = None, quant_max: int | None = None, eps: float = FLOAT32_EPS,
                 is_dynamic: bool = False) -> None:
        if is_per_channel(check_qscheme(qscheme)):
            raise NotImplementedError(f"{type(self).__name__} supports per_tensor_affine and "
                                      f"per_tensor_symmetric, got {qscheme!r}")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.register_buffer("min_val", np.array(np.inf, np.float32))
        self.register_buffer("max_val", np.array(-np.inf, np.float32))
        self._refuse_reduced_symmetric_quint8()

    def forward(self, x: Any) -> Any:
        x_obs = _observed(x, self._name())
        if x_obs.size:
            self.min_val[...] = np.minimum(x_obs.min(), self.min_val)
            self.max_val[...] = np.maximum(x_obs.max(), self.max_val)
        return x

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        return self._calculate_qparams(self.min_val, self.max_val)

    def reset_min_max_vals(self) -> None:
        self.min_val[...], self.max_val[...] = np.inf, -np.inf


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of per-batch min / max: ``min += c * (min(x) - min)``."""

    def __init__(self, averaging_constant: float = 0.01, dtype: str = "quint8",
                 qscheme: str = "per_tensor_affine", reduce_range: bool = False, quant_min: int | None = None,
                 quant_max: int | None = None, eps: float = FLOAT32_EPS, is_dynamic: bool = False) -> None:
        if is_dynamic and averaging_constant != 1:
            raise NotImplementedError("MovingAverageMinMaxObserver supports dynamic quantization only with "
                                      f"averaging_constant=1, got {averaging_constant}")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.averaging_constant = averaging_constant

    def forward(self, x: Any) -> Any:
        x_obs = _observed(x, self._name())
        if x_obs.size:
            first = self.min_val == np.inf and self.max_val == -np.inf
            self.min_val[...] = moving_average(self.min_val, x_obs.min(), self.averaging_constant, first)
            self.max_val[...] = moving_average(self.max_val, x_obs.max(), self.averaging_constant, first)
        return x


class PerChannelMinMaxObserver(UniformQuantizationObserverBase):
    """Running min / max per index along ``ch_axis``; per-channel qschemes only."""

    def __init__(self, ch_axis: int = 0, dtype: str = "quint8", qscheme: str = "per_channel_affine",
                 reduce_range: bool = False, quant_min: int | None = None, quant_max: int | None = None,
                 eps: float = FLOAT32_EPS, is_dynamic: bool = False) -> None:
        if not is_per_channel(check_qscheme(qscheme)):
            raise NotImplementedError(f"{type(self).__name__} supports per_channel_affine and "
                                      f"per_channel_symmetric, got {qscheme!r}")
        if is_dynamic:
            raise NotImplementedError(f"{type(self).__name__} doesn't support dynamic quantization")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.ch_axis = ch_axis
        self.register_buffer("min_val", np.zeros(0, np.float32))
        self.register_buffer("max_val", np.zeros(0, np.float32))
        self._refuse_reduced_symmetric_quint8()

    def accepts_loaded_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        """Running min / max load at any 1-D shape (PyTorch resizes them in ``_load_from_state_dict``)."""
        return name in ("min_val", "max_val") and len(shape) == 1

    def _store_min_max(self, min_val: np.ndarray, max_val: np.ndarray) -> None:
        """Write the running min / max in place; bind new (C,) arrays only when the shape changes."""
        if self.min_val.shape != min_val.shape:
            self.min_val, self.max_val = min_val.astype(np.float32), max_val.astype(np.float32)
        else:
            self.min_val[...], self.max_val[...] = min_val, max_val

    def _channel_min_max(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not -x.ndim <= self.ch_axis < x.ndim:
            raise ValueError(f"{self._name()}: ch_axis {self.ch_axis} out of range for input of shape {x.shape}")
        y = np.moveaxis(x, self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)    # (C, rest)
        cur_min, cur_max = y.min(axis=1), y.max(axis=1)
        if self.min_val.size and self.min_val.shape != cur_min.shape:
            raise ValueError(f"{self._name()}: observed {cur_min.shape[0]} channels, earlier batches had "
                             f"{self.min_val.shape[0]}")
        return cur_min, cur_max

    def forward(self, x: Any) -> Any:
        x_obs = _observed(x, self._name())
        if x_obs.size:
            cur_min, cur_max = self._channel_min_max(x_obs)
            if self.min_val.size == 0:
                self._store_min_max(cur_min, cur_max)
            else:
                self._store_min_max(np.minimum(cur_min, self.min_val), np.maximum(cur_max, self.max_val))
        return x

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        return self._calculate_qparams(self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ch_axis={self.ch_axis}"

    def reset_min_max_vals(self) -> None:
        self.min_val, self.max_val = np.zeros(0, np.float32), np.zeros(0, np.float32)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel exponential moving average of min / max."""

    def __init__(self, averaging_constant: float = 0.01, ch_axis: int = 0, dtype: str = "quint8",
                 qscheme: str = "per_channel_affine", reduce_range: bool = False, quant_min: int | None = None,
                 quant_max: int | None = None, eps: float = FLOAT32_EPS, is_dynamic: bool = False) -> None:
        super().__init__(ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, eps, is_dynamic)
        self.averaging_constant = averaging_constant

    def forward(self, x: Any) -> Any:
        x_obs = _observed(x, self._name())
        if x_obs.size:
            cur_min, cur_max = self._channel_min_max(x_obs)
            first = self.min_val.size == 0
            run_min, run_max = (cur_min, cur_max) if first else (self.min_val, self.max_val)
            self._store_min_max(moving_average(run_min, cur_min, self.averaging_constant, first),
                                moving_average(run_max, cur_max, self.averaging_constant, first))
        return x


class PlaceholderObserver(ObserverBase):
    """Observes nothing; carries a configuration (e.g. the dynamic activation dtype) to ``convert``."""

    def __init__(self, dtype: str = "float32", quant_min: int | None = None, quant_max: int | None = None,
                 qscheme: str | None = None, eps: float | None = None, is_dynamic: bool = False) -> None:
        super().__init__(dtype, is_dynamic)
        self.qscheme = "per_tensor_affine" if qscheme is None else check_qscheme(qscheme)
        self.quant_min, self.quant_max = quant_min, quant_max
        self.eps = FLOAT32_EPS if eps is None else eps

    def forward(self, x: Any) -> Any:
        return x

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("calculate_qparams should not be called for PlaceholderObserver")

    def extra_repr(self) -> str:
        return f"dtype={self.dtype!r}, is_dynamic={self.is_dynamic}"
