"""Quantized elementwise ops, merges and pooling on QTensors, bit-exact with PyTorch 2.13 on x86 (fbgemm).

Every op here is "dequantize, compute in float32, requantize" or an integer shortcut of it, and the
result depends on *where* float32 rounds. PyTorch's kernels (``QuantizedOpKernels.cpp``, compiled for
AVX2 even on AVX-512 machines) run a vector body and a scalar tail with different arithmetic:

- the body handles 64 int8 codes per step (two ``Vectorized<quint8>`` of 32): elements whose
  *memory* index is < 64 * floor(numel / 64) (NHWC order for a channels-last tensor); when the two
  operands of a binary op have different layouts, none (every element takes the scalar path);
- body dequantize   d = fma(s, q, fl32(s * -z))      body quantize   q = rint(fl32(y * inv)) + z
  tail dequantize   d = fl32(s) * fl32(q - z)         tail quantize   q = rint(fl32(fl32(y * inv) + z))
  (zero point *after* rounding in the body, *before* it in the tail: they disagree at ties).

``inv`` is fl32(1 / fl32(s)) unless an op's docstring says fl32(1.0 / s) (a double division).
The exact formula of each op, and the evidence, are in ``docs/quantized_ops.md``. Tensors of 32 768
elements or more are split between threads by PyTorch, each chunk with its own tail: the results here
equal PyTorch's for any size with ``torch.set_num_threads(1)``, and below that size for any thread count.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import kernels
from .qtensor import QTensor, check_qparams, dequantize, dtype_range, quantize_per_tensor, storage_dtype

f32 = np.float32
BODY_STEP = 64                     # int8 codes per step of PyTorch's vector loop (2 x 256-bit vectors)
SIGMOID_QPARAMS = {"quint8": (1.0 / 256, 0), "qint8": (1.0 / 256, -128)}


# ----------------------------------------------------------------------------------- shared pieces
def check_operand(x: Any, op: str) -> QTensor:
    """``x`` if it is a per-tensor quint8 / qint8 QTensor, else a TypeError naming ``op``."""
    if not isinstance(x, QTensor):
        raise TypeError(f"quantized {op}: expected a QTensor, got {type(x).__name__} (quantize it first, "
                        f"e.g. with a QuantStub)")
    if x.axis is not None or x.dtype not in ("quint8", "qint8"):
        raise TypeError(f"quantized {op}: expected a per-tensor quint8 / qint8 QTensor, got {x!r}")
    return x


def check_operands(a: Any, b: Any, op: str) -> tuple[QTensor, QTensor]:
    """Two operands of one shape and dtype (no broadcasting, unlike PyTorch's add / mul)."""
    a, b = check_operand(a, op), check_operand(b, op)
    if a.shape != b.shape:
        raise ValueError(f"quantized {op}: operands must have the same shape, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"quantized {op}: operands must have the same dtype, got {a.dtype} and {b.dtype}")
    return a, b


def channels_last_contiguous(x: QTensor) -> bool:
    """``x.is_contiguous(memory_format=torch.channels_last)`` of PyTorch's twin: stored NHWC, or a 4-D
    shape whose NCHW and NHWC orders coincide (C == 1 or H * W == 1; PyTorch skips size-1 dims)."""
    return x.ndim == 4 and (x.channels_last or x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1)


def body_mask(x: QTensor) -> np.ndarray:
    """True where PyTorch's vector loop (not the scalar tail) computes the element; logical shape of x."""
    n = x.int_repr.size
    index = np.arange(n)
    if x.channels_last:
        b, c, h, w = x.shape
        index = index.reshape(b, h, w, c).transpose(0, 3, 1, 2)      # memory index of each (b, c, h, w)
    return index.reshape(x.shape) < n // BODY_STEP * BODY_STEP


def same_layout(a: QTensor, b: QTensor) -> bool:
    """Whether a and b have one memory order (then PyTorch's TensorIterator runs both as one flat array)."""
    ambiguous = a.ndim == 4 and (a.shape[1] == 1 or a.shape[2] * a.shape[3] == 1)
    return ambiguous or a.channels_last == b.channels_last


def pair_body_mask(a: QTensor, b: QTensor) -> np.ndarray:
    """``body_mask`` of a binary op: operands in different layouts are strided along the innermost loop,
    so PyTorch computes *every* element with the scalar lambda (measured); the output takes a's layout."""
    return body_mask(a) if same_layout(a, b) else np.zeros(a.shape, bool)


def dequantize_body(x: QTensor) -> np.ndarray:
    """d = fma(s, q, fl32(s * -z)): PyTorch's vectorized dequantize (float32)."""
    s = f32(x.scale)
    q = x.int_repr.astype(f32)
    return kernels.fma32_elementwise(np.full(q.shape, s), q, np.full(q.shape, f32(s * f32(-x.zero_point))))


def dequantize_tail(x: QTensor) -> np.ndarray:
    """d = fl32(s) * fl32(q - z): PyTorch's scalar ``dequantize_val`` (float32)."""
    return f32(x.scale) * (x.int_repr.astype(np.int64) - x.zero_point).astype(f32)


def saturate(v: np.ndarray, dtype: str) -> np.ndarray:
    lo, hi = dtype_range(dtype)
    return np.clip(v, lo, hi).astype(storage_dtype(dtype))


def quantize_body(y: np.ndarray, inv: np.float32, zero_point: int, dtype: str) -> np.ndarray:
    """q = clamp(rint(fl32(y * inv)) + z): ``QuantizeAvx2`` (zero point after rounding)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.minimum((y.astype(f32) * inv).astype(f32), f32(2.0 ** 31 - 128))
    return saturate(np.rint(t).astype(np.float64) + zero_point, dtype)


def quantize_tail(y: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """q = clamp(rint(fl32(fl32(y * inv) + z))), inv = fl32(1 / fl32(s)): scalar ``quantize_val``
    (fbgemm's LEGACY rule, zero point before rounding)."""
    inv = f32(1) / f32(scale)
    with np.errstate(over="ignore", invalid="ignore"):
        return saturate(np.rint((y.astype(f32) * inv).astype(f32) + f32(zero_point)), dtype)


def quantize_scalar(value: float, scale: float, zero_point: int, dtype: str) -> int:
    """One number quantized as PyTorch's scalar ``quantize_val`` (e.g. clamp bounds)."""
    return int(quantize_tail(np.array([value], f32), scale, zero_point, dtype)[0])


def with_codes(x: QTensor, codes: np.ndarray, scale: float, zero_point: int) -> QTensor:
    """A QTensor of ``codes`` with x's dtype and layout."""
    return QTensor(codes, scale, zero_point, None, x.dtype, channels_last=x.channels_last)


def unary_float_op(x: QTensor, fn: Any, scale: float, zero_point: int, inv_body: np.float32) -> QTensor:
    """The common shape of a unary op: body and tail each dequantize, apply ``fn`` (float32), quantize."""
    scale, zero_point = check_qparams(scale, zero_point, x.dtype)
    body = quantize_body(fn(dequantize_body(x)), inv_body, zero_point, x.dtype)
    tail = quantize_tail(fn(dequantize_tail(x)), scale, zero_point, x.dtype)
    return with_codes(x, np.where(body_mask(x), body, tail), scale, zero_point)


# ----------------------------------------------------------------------------------- binary ops
def add(a: QTensor, b: QTensor, scale: float, zero_point: int, relu: bool = False) -> QTensor:
    """``quantized::add`` (``add_relu`` with relu=True): y = requant(d_a + d_b [max 0]) to (scale, zero_point).

    c = fl32(d_a + d_b) with d the body / tail dequantize, then the body / tail quantize with
    inv = fl32(1 / fl32(scale)); operands in different layouts (an NHWC conv output plus an NCHW input)
    take the tail path everywhere. Same shapes and dtypes required; the output has a's layout.
    """
    a, b = check_operands(a, b, "add_relu" if relu else "add")
    scale, zero_point = check_qparams(scale, zero_point, a.dtype)
    if same_layout(a, b):                           # one flat pass in memory order (``kernels.qadd``)
        nhwc = a.ndim == 4 and a.channels_last
        flat = [np.ascontiguousarray(x.int_repr.transpose(0, 2, 3, 1) if nhwc else x.int_repr).reshape(-1)
                for x in (a, b)]
        out = np.empty(flat[0].shape, flat[0].dtype)
        lo, hi = dtype_range(a.dtype)
        kernels.qadd(flat[0], flat[1], f32(a.scale), a.zero_point, f32(b.scale), b.zero_point, f32(scale),
                     zero_point, lo, hi, relu, out.size // BODY_STEP * BODY_STEP, out)
        codes = out.reshape(a.shape[0], *a.shape[2:], a.shape[1]).transpose(0, 3, 1, 2) if nhwc else out.reshape(a.shape)
        return with_codes(a, codes, scale, zero_point)
    inv = f32(1) / f32(scale)
    sums = []
    for deq in (dequantize_body, dequantize_tail):
        c = deq(a) + deq(b)
        sums.append(np.maximum(c, f32(0)) if relu else c)
    body = quantize_body(sums[0], inv, zero_point, a.dtype)
    tail = quantize_tail(sums[1], scale, zero_point, a.dtype)
    return with_codes(a, np.where(pair_body_mask(a, b), body, tail), scale, zero_point)


def requantize_from_int(acc: np.ndarray, multiplier: np.float32, zero_point: int, dtype: str) -> np.ndarray:
    """q = clamp(rint(fl32(fl32(acc) * m)) + z): ``requantize_from_int`` (body and tail alike)."""
    return saturate(np.rint((acc.astype(f32) * multiplier).astype(f32)).astype(np.float64) + zero_point, dtype)


def mul(a: QTensor, b: QTensor, scale: float, zero_point: int, relu: bool = False) -> QTensor:
    """``quantized::mul`` / ``mul_relu``, in integers: acc = (q_a - z_a) * (q_b - z_b) (int32), then
    q = clamp(rint(fl32(fl32(acc) * m)) + z) with m = fl32(fl32(fl32(s_a) * fl32(s_b)) * fl32(1 / fl32(s)));
    relu: max(q, z)."""
    a, b = check_operands(a, b, "mul_relu" if relu else "mul")
    scale, zero_point = check_qparams(scale, zero_point, a.dtype)
    m = f32(f32(f32(a.scale) * f32(b.scale)) * (f32(1) / f32(scale)))
    acc = (a.int_repr.astype(np.int32) - a.zero_point) * (b.int_repr.astype(np.int32) - b.zero_point)
    codes = requantize_from_int(acc, m, zero_point, a.dtype)
    if relu:
        codes = np.maximum(codes, np.array(zero_point).astype(codes.dtype))
    return with_codes(a, codes, scale, zero_point)


def add_scalar(x: QTensor, other: float, relu: bool = False) -> QTensor:
    """``quantized::add_scalar``: the output qparams are *chosen* so that x + c stays representable.

    c_q = nearbyint(c / s) (double); z0 = z - c_q. If qmin <= z0 <= qmax: codes unchanged, (s, z0) --
    adding a constant only moves the zero point. Otherwise the range is stretched:
    z0 < qmin: s' = (qmax - z0) / (qmax - qmin) * s, z' = qmin;  z0 > qmax: s' = (z0 - qmin) / (qmax - qmin) * s,
    z' = qmax (doubles), and q' = requantize_from_int(q - z + c_q, m = fl32(fl32(s) * fl32(1 / fl32(s'))), z').
    relu: max(q', z').
    """
    x = check_operand(x, "add_scalar")
    lo, hi = dtype_range(x.dtype)
    c_q = int(np.rint(float(other) / x.scale))
    z0 = x.zero_point - c_q
    if lo <= z0 <= hi:
        codes, s2, z2 = x.int_repr.copy(), x.scale, z0
    else:
        s2 = (hi - z0) / (hi - lo) * x.scale if z0 < lo else (z0 - lo) / (hi - lo) * x.scale
        z2 = lo if z0 < lo else hi
        m = f32(f32(x.scale) * (f32(1) / f32(s2)))
        codes = requantize_from_int(x.int_repr.astype(np.int32) - x.zero_point + c_q, m, z2, x.dtype)
    if relu:
        codes = np.maximum(codes, np.array(z2).astype(codes.dtype))
    return with_codes(x, codes, s2, z2)


def mul_scalar(x: QTensor, other: float, relu: bool = False) -> QTensor:
    """``quantized::mul_scalar``: only the qparams change, never a rounding.

    c > 0: codes unchanged, (c * s, z).  c == 0: codes 0, (1.0, 0).  c < 0: q' = qmax + qmin - q,
    (|c| * s, qmax - (z - qmin)) -- the code order flips with the sign. relu: max(q', z').
    """
    x = check_operand(x, "mul_scalar")
    lo, hi = dtype_range(x.dtype)
    c = float(other)
    if c > 0:
        codes, s2, z2 = x.int_repr.copy(), c * x.scale, x.zero_point
    elif c == 0:
        codes, s2, z2 = np.zeros_like(x.int_repr), 1.0, 0
    else:
        codes, s2, z2 = (hi + lo - x.int_repr.astype(np.int64)).astype(x.int_repr.dtype), abs(c) * x.scale, hi - (x.zero_point - lo)
    if relu:
        codes = np.maximum(codes, np.array(z2).astype(codes.dtype))
    return with_codes(x, codes, s2, z2)


def cat(xs: Sequence[QTensor], dim: int = 0, scale: float | None = None, zero_point: int | None = None) -> QTensor:
    """``quantized::cat``: concatenate, requantising every input to the output's (scale, zero_point).

    Contiguous inputs: y = quantize_per_tensor(concatenate(dequantize(x_k)), scale, zero_point) (the
    plain ops, FMA rounding). Channels-last 4-D inputs along dim 1 (``channels_last_contiguous``, which
    includes every C == 1 or 1x1 input; fbgemm's NHWC kernel): per pixel and
    input, a copy if its qparams equal the output's, else channels c < 8 * floor(C_k / 8) go through the
    body ops with inv = fl32(1.0 / scale) and the rest through the tail ops.
    Default output qparams: the first input's.
    """
    xs = [check_operand(x, "cat") for x in xs]
    if not xs:
        raise ValueError("quantized cat: expected at least one QTensor")
    ndim = xs[0].ndim
    if any(x.dtype != xs[0].dtype for x in xs):
        raise TypeError(f"quantized cat: all inputs must have one dtype, got {[x.dtype for x in xs]}")
    if not -ndim <= dim < ndim or any(x.ndim != ndim or np.delete(x.shape, dim % ndim).tolist()
                                      != np.delete(xs[0].shape, dim % ndim).tolist() for x in xs):
        raise ValueError(f"quantized cat: cannot concatenate shapes {[x.shape for x in xs]} along dim {dim}")
    scale, zero_point = check_qparams(xs[0].scale if scale is None else scale,
                                      xs[0].zero_point if zero_point is None else zero_point, xs[0].dtype)
    nhwc = dim % ndim == 1 and all(channels_last_contiguous(x) for x in xs)
    if not nhwc:
        y = np.concatenate([dequantize(x) for x in xs], axis=dim)
        return quantize_per_tensor(y, scale, zero_point, xs[0].dtype)
    inv = f32(1.0 / scale)
    parts = []
    for x in xs:
        if x.scale == scale and x.zero_point == zero_point:
            parts.append(x.int_repr)
            continue
        body = quantize_body(dequantize_body(x), inv, zero_point, x.dtype)
        tail = quantize_tail(dequantize_tail(x), scale, zero_point, x.dtype)
        vector_channels = np.arange(x.shape[1]) < x.shape[1] // 8 * 8
        parts.append(np.where(vector_channels[None, :, None, None], body, tail))
    return QTensor(np.concatenate(parts, axis=1), scale, zero_point, None, xs[0].dtype, channels_last=True)
