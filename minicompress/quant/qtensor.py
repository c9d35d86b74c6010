"""QTensor and per-tensor / per-channel quantize and dequantize (PyTorch 2.13 bit-exact on x86).

Affine quantization maps a real x to an integer code q and back::

    (1) q     = clamp(round(x / s) + z, qmin, qmax)       (where the roundings fall: ``rounding.py``)
    (2) x_hat = s * (q - z)

``s`` is the scale (> 0), ``z`` the zero point (the code of real 0, so 0 is exact). Per-channel
quantization uses one (s_c, z_c) per index c along ``axis``.

Exact float steps of PyTorch 2.13.0 (measured, see ``docs/quantization.md``):

- the scale arrives as a double and is cast to float32 before ``inv = 1 / s`` (float32 division);
- per-tensor dequantize: ``fl32(s) * fl32(q - z)`` (integer subtraction first);
- per-channel dequantize: ``fl32(s_c * (fl32(q) - fl32(z_c)))`` with ``s_c`` a double.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import kernels
from .rounding import DEFAULT_MODE, rule_for

# name -> (storage dtype, qmin, qmax)
QDTYPES: dict[str, tuple[type, int, int]] = {
    "qint8": (np.int8, -128, 127),
    "quint8": (np.uint8, 0, 255),
    "qint32": (np.int32, -(2 ** 31), 2 ** 31 - 1),
    # 4-bit codes, one per uint8 here; PyTorch's int_repr packs two per byte (low nibble first)
    "quint4x2": (np.uint8, 0, 15),
}
_DTYPE_OF_STORAGE = {np.dtype(np.int8): "qint8", np.dtype(np.uint8): "quint8", np.dtype(np.int32): "qint32"}


def check_dtype(dtype: Any) -> str:
    """Validate a quantized dtype name ('qint8', 'quint8', 'qint32') and return it."""
    if isinstance(dtype, str) and dtype in QDTYPES:
        return dtype
    raise TypeError(f"expected a quantized dtype in {sorted(QDTYPES)}, got {dtype!r}")


def dtype_range(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of the full integer type behind ``dtype``."""
    _, lo, hi = QDTYPES[check_dtype(dtype)]
    return lo, hi


def storage_dtype(dtype: str) -> np.dtype:
    """The NumPy integer dtype that stores codes of ``dtype``."""
    return np.dtype(QDTYPES[check_dtype(dtype)][0])


class QTensor:
    """A quantized array: integer codes plus (scale, zero_point), per tensor or per channel.

    Attributes: ``int_repr`` (int8/uint8/int32 array; quint4x2 codes 0..15 one per uint8), ``scale`` (float, or float64 array of shape
    (C,) when per channel), ``zero_point`` (int, or int64 array (C,)), ``axis`` (None or the channel
    axis), ``dtype`` ('qint8' | 'quint8' | 'qint32' | 'quint4x2'), ``channels_last`` (bool: the memory layout PyTorch
    would have -- its quantized conv returns NHWC tensors, and some ops then take another code path
    with other roundings, ``docs/quantized_ops.md``; ``int_repr`` itself is always a logical NCHW array).
    """

    def __init__(self, int_repr: np.ndarray, scale: Any, zero_point: Any, axis: int | None = None,
                 dtype: str | None = None, channels_last: bool = False) -> None:
        int_repr = np.asarray(int_repr)
        if dtype is None:
            dtype = _DTYPE_OF_STORAGE.get(int_repr.dtype)
            if dtype is None:
                raise TypeError(f"QTensor: cannot infer a quantized dtype from codes of dtype {int_repr.dtype}")
        dtype = check_dtype(dtype)
        if int_repr.dtype != storage_dtype(dtype):
            raise TypeError(f"QTensor: {dtype} codes must be stored as {storage_dtype(dtype)}, got {int_repr.dtype}")
        if axis is None:
            scale, zero_point = check_qparams(scale, zero_point, dtype)
        else:
            axis = _check_axis(axis, int_repr.ndim)
            scale, zero_point = check_channel_qparams(scale, zero_point, dtype, int_repr.shape[axis])
        self.int_repr, self.scale, self.zero_point, self.axis, self.dtype = int_repr, scale, zero_point, axis, dtype
        self.channels_last = bool(channels_last) and int_repr.ndim == 4

    @property
    def shape(self) -> tuple[int, ...]:
        return self.int_repr.shape

    @property
    def ndim(self) -> int:
        return self.int_repr.ndim

    @property
    def qscheme(self) -> str:
        return "per_tensor_affine" if self.axis is None else "per_channel_affine"

    def dequantize(self) -> np.ndarray:
        """x_hat = s * (q - z) as float32, eq. (2)."""
        return dequantize(self)

    # ``+``, ``*`` ... on codes would be silently wrong (the result's qparams are unknown): a clear error
    # instead, naming the module whose forward did it. ``__array_ufunc__ = None`` makes NumPy defer to it.
    __array_ufunc__ = None

    def _no_arithmetic(self, other: Any, op: str) -> Any:
        where = _calling_module()
        raise TypeError(f"{where}'{op}' on a QTensor and a {type(other).__name__}: quantized tensors have no "
                        f"arithmetic operators (the result's scale and zero point must be observed); do the merge "
                        f"in a module -- nn.Add / nn.Mul / nn.Cat or nn.FloatFunctional (add, add_relu, mul, cat) -- so "
                        f"that prepare() observes it and convert() quantizes it")

    def __add__(self, other: Any) -> Any: return self._no_arithmetic(other, "+")
    def __radd__(self, other: Any) -> Any: return self._no_arithmetic(other, "+")
    def __sub__(self, other: Any) -> Any: return self._no_arithmetic(other, "-")
    def __rsub__(self, other: Any) -> Any: return self._no_arithmetic(other, "-")
    def __mul__(self, other: Any) -> Any: return self._no_arithmetic(other, "*")
    def __rmul__(self, other: Any) -> Any: return self._no_arithmetic(other, "*")
    def __truediv__(self, other: Any) -> Any: return self._no_arithmetic(other, "/")
    def __matmul__(self, other: Any) -> Any: return self._no_arithmetic(other, "@")
    def __rmatmul__(self, other: Any) -> Any: return self._no_arithmetic(other, "@")

    def __repr__(self) -> str:
        qp = (f"scale={self.scale!r}, zero_point={self.zero_point!r}" if self.axis is None else
              f"scales={self.scale!r}, zero_points={self.zero_point!r}, axis={self.axis}")
        return f"QTensor(shape={self.shape}, dtype={self.dtype}, {qp})"


def _calling_module() -> str:
    """'<Module>.forward: ' of the innermost Module whose forward is on the call stack, else ''."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "forward" and hasattr(owner, "named_children") and hasattr(owner, "_name"):
            return f"{owner._name()}.forward: "
        frame = frame.f_back
    return ""


# ---------------------------------------------------------------------------------------- validation
_F32_POSITIVE = 2.0 ** -150                    # float32(s) > 0        iff  s > 2^-150
_F32_FINITE = (2 - 2.0 ** -24) * 2.0 ** 127     # float32(s) is finite  iff  s < (2 - 2^-24) * 2^127


def check_scale_zero_point(scale: Any, zero_point: Any, quant_min: int, quant_max: int, who: str) -> None:
    """The one check of (scale, zero_point) values, any shapes: raise ValueError unless
    quant_min < quant_max, every scale is finite and > 0 also as float32 (what the kernels use), and
    every zero point is finite and in [quant_min, quant_max] (``zero_point=None``: scale and range only).
    ``who`` names the caller in the message.

    Re-exported as ``fake_quantize.check_qparams`` (the fake-quant ops' custom ranges); the QTensor
    checks below add the type and shape rules of a QTensor and use the dtype's full range.
    Comparisons only (NaN fails each), no float32 cast: this runs on every quantized op.
    """
    if int(quant_min) >= int(quant_max):
        raise ValueError(f"{who}: quant_min must be < quant_max, got quant_min={quant_min}, "
                         f"quant_max={quant_max}")
    s = np.asarray(scale, dtype=np.float64)
    if not _all_between(s, _F32_POSITIVE, _F32_FINITE, strict=True):
        raise ValueError(f"{who}: scale must be positive and finite (also as float32), got {s.tolist()}")
    if zero_point is None:
        return
    z = np.asarray(zero_point, dtype=np.float64)
    if not _all_between(z, quant_min, quant_max, strict=False):
        raise ValueError(f"{who}: zero_point must be in [quant_min, quant_max] = [{quant_min}, {quant_max}], "
                         f"got {np.asarray(zero_point).tolist()} (out of range)")


def _all_between(v: np.ndarray, lo: float, hi: float, strict: bool) -> bool:
    """lo < v < hi (strict) or lo <= v <= hi for every element; NaN fails. Scalars skip NumPy's reductions."""
    if v.size == 1:
        x = v.item()
        return lo < x < hi if strict else lo <= x <= hi
    return bool(((v > lo) & (v < hi)).all() if strict else ((v >= lo) & (v <= hi)).all())


def check_qparams(scale: Any, zero_point: Any, dtype: str) -> tuple[float, int]:
    """A QTensor's per-tensor (scale, zero_point) for ``dtype``: a real scale and an integer zero point,
    values as ``check_scale_zero_point`` over the dtype's range. Returns (float, int)."""
    if isinstance(scale, float) and type(zero_point) is int:      # the usual call: a Python float and int
        qmin, qmax = dtype_range(dtype)
        if _F32_POSITIVE < scale < _F32_FINITE and qmin <= zero_point <= qmax:
            return float(scale), zero_point
    s, z = np.asarray(scale), np.asarray(zero_point)
    if s.size != 1 or s.dtype.kind not in "fiu":
        raise TypeError(f"scale must be a real number, got {scale!r}")
    if z.size != 1 or z.dtype.kind not in "iu":
        raise TypeError(f"zero_point must be an integer, got {zero_point!r}")
    check_scale_zero_point(s, z, *dtype_range(dtype), f"{dtype} qparams")
    return float(s.reshape(())), int(z.reshape(()))


def check_channel_qparams(scales: Any, zero_points: Any, dtype: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A QTensor's per-channel scales (float64 (C,)) and zero points (int64 (C,)), values as above."""
    s, z = np.asarray(scales), np.asarray(zero_points)
    if s.ndim != 1 or z.ndim != 1 or s.shape[0] != channels or z.shape[0] != channels:
        raise ValueError(f"per-channel scales {s.shape} and zero_points {z.shape} must both have shape ({channels},)")
    if s.dtype.kind not in "fiu" or z.dtype.kind not in "iu":
        raise TypeError(f"scales must be real and zero_points integer, got {s.dtype} and {z.dtype}")
    check_scale_zero_point(s, z, *dtype_range(dtype), f"{dtype} per-channel qparams")
    return s.astype(np.float64), z.astype(np.int64)


def _check_axis(axis: Any, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis!r} out of range for an array with {ndim} dimensions")
    return int(axis) % ndim


def _check_float(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{what}: expected a floating-point array, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if np.isnan(x).any():
        raise ValueError(f"{what}: input contains NaN (PyTorch returns an unspecified code for NaN)")
    return x


# ---------------------------------------------------------------------------------------- quantize
def quantize_per_tensor(x: Any, scale: float, zero_point: int, dtype: str,
                        rounding: str = DEFAULT_MODE) -> QTensor:
    """Quantize ``x`` (float, cast to float32) with one (scale, zero_point), eq. (1).

    ``rounding`` names where the roundings fall (``rounding.MODES``); the default reproduces
    ``torch.quantize_per_tensor`` of PyTorch 2.13.0 on x86 bit for bit. Codes are clamped to the full
    range of ``dtype``; +-inf saturate; NaN raises ValueError.
    """
    dtype = check_dtype(dtype)
    s, z = check_qparams(scale, zero_point, dtype)
    x = _check_float(x, "quantize_per_tensor")
    lo, hi = dtype_range(dtype)
    s32 = np.array([s], dtype=np.float32)
    out = np.empty(x.shape, dtype=storage_dtype(dtype))
    kernels.quantize(x.reshape(1, 1, -1), s32, np.float32(1.0) / s32, np.array([z], np.int64), lo, hi,
                     rule_for(rounding, dtype, per_channel=False), out.reshape(1, 1, -1))
    return QTensor(out, s, z, None, dtype)


def quantize_per_channel(x: Any, scales: Any, zero_points: Any, axis: int, dtype: str,
                         rounding: str = DEFAULT_MODE) -> QTensor:
    """Quantize ``x`` with one (scale_c, zero_point_c) per index c along ``axis``, eq. (1).

    Default rounding reproduces ``torch.quantize_per_channel`` of PyTorch 2.13.0 bit for bit.
    """
    dtype = check_dtype(dtype)
    if dtype == "quint4x2":
        raise TypeError("quantize_per_channel: PyTorch 2.13 has no per-channel affine quint4x2 "
                        "(\"quantize_tensor_per_channel_affine\" not implemented for 'QUInt4x2')")
    x = _check_float(x, "quantize_per_channel")
    axis = _check_axis(axis, x.ndim)
    s, z = check_channel_qparams(scales, zero_points, dtype, x.shape[axis])
    lo, hi = dtype_range(dtype)
    s32 = s.astype(np.float32)
    outer, c = int(np.prod(x.shape[:axis])), x.shape[axis]
    out = np.empty(x.shape, dtype=storage_dtype(dtype))
    kernels.quantize(x.reshape(outer, c, -1), s32, np.float32(1.0) / s32, z, lo, hi,
                     rule_for(rounding, dtype, per_channel=True), out.reshape(outer, c, -1))
    return QTensor(out, s, z, axis, dtype)


def dequantize(q: QTensor) -> np.ndarray:
    """float32 ``s * (q - z)``, eq. (2), with PyTorch 2.13's exact float steps (module docstring)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"dequantize expects a QTensor, got {type(q).__name__}")
    codes = np.ascontiguousarray(q.int_repr)
    out = np.empty(codes.shape, dtype=np.float32)
    if q.axis is None:
        kernels.dequantize(codes.reshape(1, 1, -1), np.array([q.scale]), np.array([q.zero_point], np.int64),
                           False, out.reshape(1, 1, -1))
    else:
        outer, c = int(np.prod(codes.shape[:q.axis])), codes.shape[q.axis]
        kernels.dequantize(codes.reshape(outer, c, -1), q.scale, q.zero_point, True, out.reshape(outer, c, -1))
    return out
