"""Fixed quantization parameters: for outputs whose range is known in advance, and a recording observer.

PyTorch 2.13's QAT qconfigs give functions with a fixed output range fixed qparams instead of an
observed range (``torch/ao/quantization/observer.py`` and ``fake_quantize.py``)::

    range [0, 1]   (sigmoid, hardsigmoid, softmax):  scale = 1 / 256, zero_point = 0     quint8 0..255
    range [-1, 1]  (tanh):                           scale = 2 / 256, zero_point = 128   quint8 0..255

so x in [0, 1) has code q = rint(256 x) and x_hat = q / 256 (1.0 itself clamps to 255 / 256).

- :class:`FixedQParamsObserver` observes nothing; its buffers ``scale`` (float32 (1,)) and
  ``zero_point`` (int32 (1,)) are what ``calculate_qparams()`` returns -- the buffers themselves, as
  PyTorch returns ``self.scale, self.zero_point``.
- :class:`FixedQParamsFakeQuantize` is a FakeQuantize whose ``scale`` / ``zero_point`` *are* the
  observer's buffers (the same arrays), so observing never changes them.
- :class:`RecordingObserver` (debugging) keeps a copy of every tensor it sees in ``tensor_val``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..nn.module import Module
from .fake_quantize import FakeQuantize
from .observer import ObserverBase
from .qparams import check_qscheme, is_per_channel
from .qtensor import check_dtype

__all__ = ["FixedQParamsObserver", "FixedQParamsFakeQuantize", "RecordingObserver",
           "default_fixed_qparams_range_0to1_observer", "default_fixed_qparams_range_neg1to1_observer",
           "default_symmetric_fixed_qparams_observer", "default_affine_fixed_qparams_observer",
           "default_fixed_qparams_range_0to1_fake_quant", "default_fixed_qparams_range_neg1to1_fake_quant",
           "default_symmetric_fixed_qparams_fake_quant", "default_affine_fixed_qparams_fake_quant"]


class FixedQParamsObserver(ObserverBase):
    """≙ ``torch.ao.quantization.FixedQParamsObserver``: returns the given (scale, zero_point) (per tensor).

    Buffers ``scale`` = [scale] float32, ``zero_point`` = [zero_point] int32 (PyTorch's state-dict keys
    and dtypes). ``forward(x)`` returns x; dynamic quantization is refused, as PyTorch refuses it.
    """

    def __init__(self, scale: float, zero_point: int, dtype: str = "quint8", qscheme: str = "per_tensor_affine",
                 quant_min: int = 0, quant_max: int = 255, is_dynamic: bool = False) -> None:
        if is_dynamic:
            raise NotImplementedError("FixedQParamsObserver doesn't support dynamic quantization")
        super().__init__(check_dtype(dtype), is_dynamic)
        self.qscheme = check_qscheme(qscheme)
        self.quant_min, self.quant_max = int(quant_min), int(quant_max)
        self.register_buffer("scale", np.array([scale], np.float32))
        self.register_buffer("zero_point", np.array([zero_point], np.int32))

    def forward(self, x: Any) -> Any:
        return x

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        return (f"scale={float(self.scale[0])}, zero_point={int(self.zero_point[0])}, dtype={self.dtype!r}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}")


class FixedQParamsFakeQuantize(FakeQuantize):
    """≙ ``torch.ao.quantization.FixedQParamsFakeQuantize``: fake-quant with the observer's fixed qparams.

    ``observer`` must build a :class:`FixedQParamsObserver` (TypeError otherwise; PyTorch asserts the
    exact type); per-tensor qschemes only. ``scale`` and ``zero_point`` are the observer's arrays.
    """

    def __init__(self, observer: Callable[..., Module]) -> None:
        super().__init__(observer=observer)
        obs = self.activation_post_process
        if type(obs) is not FixedQParamsObserver:
            raise TypeError(f"{type(self).__name__}'s observer must be a FixedQParamsObserver, got {type(obs).__name__}")
        if is_per_channel(self.qscheme):
            raise ValueError(f"Only per tensor quantization is supported FixedQParamsFakeQuantize module, "
                             f"got qscheme: {self.qscheme}")
        self.scale, self.zero_point = obs.scale, obs.zero_point

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={int(self.fake_quant_enabled[0])}, observer_enabled={int(self.observer_enabled[0])}, "
                f"scale={self.scale.tolist()}, zero_point={self.zero_point.tolist()}, dtype={self.dtype}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}, qscheme={self.qscheme}")


class RecordingObserver(ObserverBase):
    """≙ ``torch.ao.quantization.RecordingObserver``: ``tensor_val`` lists a copy of every observed input."""

    def __init__(self, dtype: str = "quint8") -> None:
        super().__init__(check_dtype(dtype), False)
        self.tensor_val: list[np.ndarray] = []

    def forward(self, x: Any) -> Any:
        self.tensor_val.append(np.array(x, copy=True))
        return x

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("calculate_qparams should not be called for RecordingObserver")

    def get_tensor_value(self) -> list[np.ndarray]:
        return self.tensor_val


# ==================================================================================== defaults (torch 2.13)
default_fixed_qparams_range_neg1to1_observer = FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype="quint8", quant_min=0, quant_max=255)
default_fixed_qparams_range_0to1_observer = FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype="quint8", quant_min=0, quant_max=255)
default_symmetric_fixed_qparams_observer = default_fixed_qparams_range_neg1to1_observer   # PyTorch's old names
default_affine_fixed_qparams_observer = default_fixed_qparams_range_0to1_observer
default_fixed_qparams_range_neg1to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_neg1to1_observer)
default_fixed_qparams_range_0to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_0to1_observer)
default_symmetric_fixed_qparams_fake_quant = default_fixed_qparams_range_neg1to1_fake_quant
default_affine_fixed_qparams_fake_quant = default_fixed_qparams_range_0to1_fake_quant
