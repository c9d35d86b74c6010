"""Choosing quantization parameters: (scale, zero_point) from a float range, exactly as PyTorch 2.13.

Three choosers, kept apart from the integer runtime (as gemmlowp's quantization example does):

- :func:`calculate_qparams` -- the observers' rule (``torch/ao/quantization/observer.py``
  ``_calculate_qparams``), float32 tensor arithmetic::

      affine:     s = max((max+ - min-) / (qmax - qmin), eps)      z = clamp(qmin - rint(min- / s))
      symmetric:  s = max(max(-min-, max+) / ((qmax - qmin) / 2), eps)
                  z = 0 (qint8), 128 (quint8) or (qmin + qmax) // 2 (quint8 with a custom range)

  with min- = min(min_val, 0), max+ = max(max_val, 0); rint is round-half-even.
- :func:`choose_quantization_params` -- FBGEMM's ``ChooseQuantizationParams``, which PyTorch carries in
  two copies that differ in two real ways (double vs float32 scale, subtracted vs added zero-point error
  terms): ``variant='aten'`` (``quant_utils`` in ``QuantUtils.h``: dynamic quantized Linear's activations)
  and ``variant='fbgemm'`` (FBGEMM's own: ``fused_moving_avg_obs_fake_quant``, hence QAT).
  :func:`choose_qparams_fused` applies the 'fbgemm' variant per channel (``FusedMovingAvgObsFakeQuantize``).
- :func:`quantize_multiplier` -- an integer-only requantisation multiplier (gemmlowp / TFLite):
  real = M0 * 2^(shift - 31) with M0 in [2^30, 2^31).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from . import kernels
from .kernels import SMALL_SCALE_THRESHOLD
from .qtensor import dtype_range

QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
            "per_channel_affine_float_qparams")
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def check_qscheme(qscheme: str) -> str:
    if qscheme not in QSCHEMES:
        raise ValueError(f"unknown qscheme {qscheme!r}; expected one of {QSCHEMES}")
    return qscheme


def is_symmetric(qscheme: str) -> bool:
    return check_qscheme(qscheme).endswith("symmetric")


def is_per_channel(qscheme: str) -> bool:
    return check_qscheme(qscheme).startswith("per_channel")


def validate_qmin_qmax(quant_min: int, quant_max: int) -> None:
    """A custom range must contain 0 and be non-empty."""
    if not quant_min <= 0 <= quant_max:
        raise ValueError(f"custom quantization range [{quant_min}, {quant_max}] must include 0")
    if quant_min >= quant_max:
        raise ValueError(f"quant_min ({quant_min}) must be strictly less than quant_max ({quant_max})")


def calculate_qmin_qmax(quant_min: int | None, quant_max: int | None, has_customized_qrange: bool,
                        dtype: str, reduce_range: bool) -> tuple[int, int]:
    """(qmin, qmax) of an observer: the dtype's range (``qtensor.QDTYPES``), halved (floor division) by
    reduce_range for qint8 / quint8 (qint32 and quint4x2 ignore it), or a custom range, which
    ``reduce_range`` also halves, as PyTorch does. PyTorch bounds a custom range's length for qint8
    (256) and qint32 (2^32) only; quint8 and quint4x2 custom ranges are taken as given.
    """
    lo, hi = dtype_range(dtype)
    if has_customized_qrange:
        length, limit = quant_max - quant_min + 1, hi - lo + 1
        if dtype in ("qint8", "qint32") and not 0 < length <= limit:   # PyTorch checks these two only
            raise ValueError(f"quantization range [{quant_min}, {quant_max}] must be positive and hold "
                             f"at most {limit} values for {dtype}")
        if reduce_range:
            quant_min, quant_max = quant_min // 2, quant_max // 2
        return quant_min, quant_max
    if reduce_range and dtype in ("qint8", "quint8"):      # PyTorch halves the 8-bit ranges only
        return lo // 2, hi // 2
    return lo, hi


def calculate_qparams(min_val, max_val, quant_min: int, quant_max: int, qscheme: str, dtype: str,
                      eps: float = FLOAT32_EPS, has_customized_qrange: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32 (C,), zero_point (C,)) from running min/max (0-d per tensor, (C,) per channel).

    The zero point's dtype is PyTorch 2.13's: int32 for the affine qschemes (``torch.round(...).to(int)``
    then ``clamp``), int64 for the symmetric ones (``torch.zeros(..., dtype=int64)``) and for the
    un-observed default, float32 for ``per_channel_affine_float_qparams``.

    ``per_channel_affine_float_qparams`` (weight-only embeddings): the range is *not* widened to include 0,
    s = fl32((max - min) / (qmax - qmin)), s = s if s > eps else 1.0, and the zero point is a float32,
    z = fl32(-min / s).

    Un-observed statistics (empty, or min = +inf and max = -inf) give the defaults ([1.0], [0]) with
    PyTorch's warning; any other non-finite bound (an infinite range) raises instead of giving an
    infinite or NaN scale.
    """
    check_qscheme(qscheme)
    min_val, max_val = np.asarray(min_val, np.float32), np.asarray(max_val, np.float32)
    if min_val.size == 0 or max_val.size == 0 or (
            min_val.ndim == 0 and min_val == np.inf and max_val == -np.inf):
        warnings.warn("must run observer before calling calculate_qparams. Returning default values.",
                      UserWarning, stacklevel=3)
        return np.array([1.0], np.float32), np.array([0], np.int64)
    if not (np.isfinite(min_val).all() and np.isfinite(max_val).all()):
        raise ValueError(f"calculate_qparams: the observed range is not finite (min {min_val.tolist()}, "
                         f"max {max_val.tolist()}); a scale would be inf or NaN")
    if (min_val > max_val).any():
        raise ValueError(f"min {min_val} should be less than or equal to max {max_val}")
    eps32 = np.float32(eps)
    if qscheme == "per_channel_affine_float_qparams":
        scale = ((max_val - min_val) / np.float32(quant_max - quant_min)).astype(np.float32)
        scale = np.where(scale > eps32, scale, np.float32(1))
        return scale.reshape(-1).astype(np.float32), (-min_val / scale).reshape(-1).astype(np.float32)
    min_neg = np.minimum(min_val, np.float32(0))
    max_pos = np.maximum(max_val, np.float32(0))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if is_symmetric(qscheme):
            max_pos = np.maximum(-min_neg, max_pos)
            scale = np.maximum(max_pos / np.float32((quant_max - quant_min) / 2), eps32)
            if dtype == "quint8":
                mid = (quant_min + quant_max) // 2 if has_customized_qrange else 128
                zero_point = np.full(scale.shape, mid, np.int64)
            else:
                zero_point = np.zeros(scale.shape, np.int64)
        else:
            scale = np.maximum((max_pos - min_neg) / np.float32(quant_max - quant_min), eps32)
            zero_point = quant_min - np.rint(min_neg / scale).astype(np.int64)
            zero_point = np.clip(zero_point, quant_min, quant_max).astype(np.int32)
    return scale.reshape(-1).astype(np.float32), zero_point.reshape(-1)


CQP_VARIANTS = ("aten", "fbgemm")   # which C++ copy of ChooseQuantizationParams (docstring below)


def choose_quantization_params(min_val: float, max_val: float, qmin: int = 0, qmax: int = 255,
                               reduce_range: bool = False, preserve_sparsity: bool = False,
                               variant: str = "aten") -> tuple[float, int]:
    """FBGEMM's ``ChooseQuantizationParams`` (no power-of-two scale), in either of PyTorch's two copies.

    With R = qmax - qmin, min- = min(min, 0), max+ = max(max, 0) (float32)::

        s  = (double(max+) - min-) / R              s = 0 or 1/fl32(s) = inf  ->  s = 0.1
        s  < 6.1e-5  ->  s = 6.1e-5, the range stretched (max+ = s*R, min- = -s*R, or both * 6.1e-5/s)
        zp = qmin - min-/s   if  |qmin| (+-) |min-/s|  <  |qmax| (+-) |max+/s|   else  qmax - max+/s
        zp = clamp(zp, qmin, qmax), else nearbyint(zp) (half to even)

    ``preserve_sparsity`` (symmetric) first maps a range with min < 0 < max to
    [m * -(R//2 + 1), m * (R//2)], m = max(|min| / (R//2 + 1), |max| / (R//2)) in float32, and, when the
    final range still straddles 0, sets zp = nearbyint((qmin + qmax) / 2). ``reduce_range`` halves
    qmin, qmax first (C division, toward zero). The two variants are both real PyTorch 2.13 behaviour:

    - ``'aten'``: ``quant_utils::ChooseQuantizationParams`` (``aten/src/ATen/native/quantized/cpu/QuantUtils.h``
      l. 71-186 in the 2.13.0 wheel's headers), called by ``qlinear_dynamic.cpp``
      ``PackedLinearWeight::apply_dynamic_impl`` (dynamic Linear's activations), ``quantize_per_tensor_dynamic``
      and ``torch._choose_qparams_per_tensor``. The scale stays a double (l. 60, 108) and the error terms
      *subtract* (l. 152-155: ``|qmin| - |min/s|``), against the "adds the smaller terms" comment above them.
      min > max raises.
    - ``'fbgemm'``: ``fbgemm::ChooseQuantizationParams`` (FBGEMM ``src/QuantUtils.cc`` l. 39-142), called by
      ``fused_obs_fake_quant.cpp`` ``choose_qparams_fake_quant`` (``fused_moving_avg_obs_fake_quant``, per row
      and per tensor; x86 builds define USE_FBGEMM). The scale is a float (``float scale =`` l. 63;
      ``TensorQuantizationParams::scale`` is a float in ``fbgemm/QuantUtilsAvx2.h``) and the error terms
      *add* (l. 107-110). No check of min <= max.

    The sign only decides anything for a signed range (qmin < 0): for qmin = 0 both pick zp from min.
    Returns (scale, zero_point): scale a Python float (a float32 value for 'fbgemm'), zero_point an int.
    """
    if variant not in CQP_VARIANTS:
        raise ValueError(f"choose_quantization_params: variant must be one of {CQP_VARIANTS}, got {variant!r}")
    lo, hi = np.float32(min_val), np.float32(max_val)
    if variant == "aten" and not lo <= hi:
        raise ValueError(f"choose_quantization_params: min ({lo}) must be <= max ({hi}) and not NaN")
    if reduce_range:
        qmin, qmax = int(qmin / 2), int(qmax / 2)           # C++ integer division truncates
    if qmin >= qmax:
        raise ValueError(f"choose_quantization_params: qmin ({qmin}) must be < qmax ({qmax})")
    scale, zero_point, defined = kernels.choose_qparams(lo, hi, qmin, qmax, variant == "fbgemm", preserve_sparsity)
    if not defined:
        raise ValueError(f"choose_quantization_params: the range [{lo}, {hi}] gives the zero point NaN")
    return float(scale), int(zero_point)


def choose_qparams_fused(min_val: Any, max_val: Any, quant_min: int, quant_max: int,
                         preserve_sparsity: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per element, ``choose_quantization_params(min, max, qmin, qmax, variant='fbgemm')``: FBGEMM's
    ``ChooseQuantizationParams`` as ``fused_moving_avg_obs_fake_quant`` calls it (x86 build).

    Not the observers' rule: symmetric ("preserve_sparsity") ranges become
    [max_s * (-(R//2 + 1)), max_s * (R//2)] with R = qmax - qmin, max_s = max(|min|/(R//2 + 1), |max|/(R//2)),
    so s = max_s (e.g. max|w| / 128 rather than / 127.5) and zp = rint((qmin + qmax) / 2); a channel that
    is all >= 0 or all <= 0 gets an affine zero point instead (zp = qmin for all-positive). Affine:
    s = float32((double(max+) - min-) / R), zp from whichever end adds the smaller terms.
    min_val, max_val: float32 arrays of equal shape. Returns (scale float32, zero_point int32), same shape.
    """
    lo_all = np.atleast_1d(np.asarray(min_val, np.float32))
    hi_all = np.atleast_1d(np.asarray(max_val, np.float32))
    scales, zps = np.empty(lo_all.shape, np.float32), np.empty(lo_all.shape, np.int32)
    for i, (lo, hi) in enumerate(zip(lo_all.flat, hi_all.flat)):
        scales.flat[i], zps.flat[i] = choose_quantization_params(lo, hi, quant_min, quant_max,
                                                                 preserve_sparsity=preserve_sparsity,
                                                                 variant="fbgemm")
    return scales, zps


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """(M0, shift) with real_multiplier ~= M0 * 2^(shift - 31), M0 in [2^30, 2^31) (TFLite QuantizeMultiplier).

    frexp gives real = q * 2^shift with q in [0.5, 1); M0 = round_half_away(q * 2^31); M0 = 2^31
    is renormalised; multipliers below 2^-31 become (0, 0).
    """
    real_multiplier = float(real_multiplier)
    if not (math.isfinite(real_multiplier) and real_multiplier >= 0):
        raise ValueError(f"requantisation multiplier must be finite and >= 0, got {real_multiplier}")
    if real_multiplier == 0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    m0 = int(math.floor(q * 2 ** 31 + 0.5))                 # q * 2^31 > 0: half away from zero
    if m0 == 2 ** 31:
        m0, shift = m0 // 2, shift + 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"requantisation multiplier {real_multiplier} is too large for int32 fixed point")
    return m0, shift
