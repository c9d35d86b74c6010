"""Fake quantization as functions: quantize-then-dequantize in float, with the straight-through gradient.

The formula once, as a forward/backward pair (:func:`fake_quant_forward` -> (y, mask),
:func:`fake_quant_backward`), and PyTorch's functional ops ``fake_quantize_per_tensor_affine`` /
``fake_quantize_per_channel_affine`` and their straight-through-estimator (STE) backwards as thin
checked wrappers, bit-exact with PyTorch 2.13's CPU kernels
(``aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp``); LSQ (``learnable.py``) calls
the same forward, as PyTorch's learnable ops call these kernels. The modules are in ``fake_quantize``.

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
float16 x is computed in float32 and rounded to float16 once at the end (PyTorch's Half kernels
promote ``x * inv`` to float); the gradient stays float16.

Zero points, as PyTorch's two overloads: a Python (or NumPy scalar) int is range-checked and an
out-of-range one raises ``RuntimeError`` with PyTorch's text ("`zero_point` must be between
`quant_min` and `quant_max`."); a per-tensor zero point given as an array (PyTorch's tensor-qparams
overload, what FakeQuantize calls) is truncated to an integer and not range-checked; per channel,
integer zero points are range-checked (``RuntimeError``) and float ones are not. Out-of-range zero
points then compute by formula (1). Deliberate refusals (ValueError; PyTorch computes anyway):
quant_min >= quant_max (PyTorch accepts quant_min == quant_max), a scale that is not positive and
finite, a non-finite zero point.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import fma32_elementwise
from .qtensor import check_scale_zero_point as check_qparams  # the value check, over a custom range

__all__ = ["fake_quant_forward", "fake_quant_backward", "fake_quant_codes", "check_qparams",
           "fake_quantize_per_tensor_affine", "fake_quantize_per_tensor_affine_backward",
           "fake_quantize_per_channel_affine", "fake_quantize_per_channel_affine_backward"]

_INT64_LIMIT = float(2 ** 63)
_ZP_RANGE_MESSAGE = "`zero_point` must be between `quant_min` and `quant_max`."   # PyTorch's text


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
    if x.dtype == np.float16:                                   # float math, one rounding to half at the end
        y, mask = fake_quant_forward(x.astype(np.float32), scale, zero_point, quant_min, quant_max, axis)
        return y.astype(np.float16), mask
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


def _check_zero_point_range(z: np.ndarray, quant_min: int, quant_max: int, who: str) -> None:
    """PyTorch's integer zero-point check: RuntimeError with its message."""
    if not ((z >= quant_min) & (z <= quant_max)).all():
        raise RuntimeError(f"{who}: {_ZP_RANGE_MESSAGE} (zero_point {z.tolist()}, quant_min {quant_min}, "
                           f"quant_max {quant_max})")


def _check_finite_zero_point(z: np.ndarray, who: str) -> None:
    if z.dtype.kind == "f" and not np.isfinite(z).all():
        raise ValueError(f"{who}: zero_point must be finite, got {z.tolist()}")


def _per_tensor_qparams(x: Any, scale: Any, zero_point: Any, quant_min: int, quant_max: int,
                        who: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked 0-d (float32 scale, int64 zero point) for :func:`fake_quant_forward`.

    An ndarray zero point is PyTorch's tensor overload: z = int(zp) (toward zero), not range-checked.
    A scalar must be an integer (PyTorch: TypeError for a float) and in [quant_min, quant_max].
    """
    _check_input(x, who)
    s, z = np.asarray(scale), np.asarray(zero_point)
    if s.size != 1 or z.size != 1:
        raise ValueError(f"{who}: per-tensor scale and zero_point must be scalars (or 1-element), "
                         f"got shapes {s.shape} and {z.shape}")
    check_qparams(s, None, quant_min, quant_max, who)
    _check_finite_zero_point(z, who)
    z = z.reshape(())
    if not isinstance(zero_point, np.ndarray):
        if z.dtype.kind not in "iu":
            raise TypeError(f"{who}: a scalar zero_point must be an int, got {zero_point!r} (give an array "
                            f"for PyTorch's tensor-qparams overload)")
        _check_zero_point_range(z, quant_min, quant_max, who)
    return np.asarray(np.float32(s.reshape(()))), np.asarray(np.trunc(z), np.int64)


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
    check_qparams(s, None, quant_min, quant_max, who)
    _check_finite_zero_point(z, who)
    if not float_zp:
        _check_zero_point_range(z, quant_min, quant_max, who)
    return s.astype(np.float32), z.astype(np.float32 if float_zp else np.int64)


def fake_quantize_per_tensor_affine(x: np.ndarray, scale: Any, zero_point: Any, quant_min: int,
                                    quant_max: int) -> np.ndarray:
    """y = (clamp(zp + rint(x * inv), qmin, qmax) - zp) * scale   (eq. 1), ≙ torch op of that name.

    x: any shape, float16, float32 or float64; scale: float (> 0); zero_point: an int in [qmin, qmax]
    (else RuntimeError, as PyTorch), or a 1-element array (truncated to an integer, unchecked).
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
    [qmin, qmax] (else RuntimeError), or floats (any value: ``rint(zp + x * inv)`` as PyTorch does).
    Returns y like x.
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
