"""onnxruntime 1.32's CPU int8 kernels (x86-64, MLAS), reproduced bit for bit: the ``'onnxruntime'`` mode.

Measured on an AVX-512 VNNI Xeon with single-node models (``tests/quant/test_onnxruntime_ops.py`` holds
every function here to onnxruntime's codes exactly) and read off MLAS (``onnxruntime/core/mlas/lib``);
``docs/onnxruntime_int8.md`` has the derivations and where PyTorch (FBGEMM) differs. fl32(.) is a float32
rounding, rint rounds half to even, clamp is to the output dtype's range ([0, 255] or [-128, 127])::

    (O1) QuantizeLinear        q = clamp(rint(fl32(x / s)) + z)          true division; NaN -> qmin
    (O2) DequantizeLinear      y = fl32(fl32(q - z) * s)
    (O3) DynamicQuantizeLinear lo = min(0, min x), hi = max(0, max x),  s = fl32((hi - lo) / 255)  (1 if hi = lo)
                               z = rint(clamp(fl32(0 - fl32(lo / s)), 0, 255)),  q = (O1)
    (O4) MatMulInteger         acc = sum_k (a_ik - z_a)(b_kj - z_b[j])   exact int32
    (O5) requantisation        m = fl32(fl32(s_a * s_b[j]) / s_y)
                               q = clamp(rint(fl32(fl32(acc + bias_q) * m)) + z_y)
         QLinearMatMul = (O4) + (O5) without bias; QGemm (com.microsoft) = (O4) + (O5); QLinearConv = (O4) over im2col (padding with z_x) + (O5)
         with the int32 bias_q.
    (O6) QLinearAdd            r_a = fl32(s_a / s_c), r_b = fl32(s_b / s_c)
                               F = fl32(z_c - fma(r_a, z_a, fl32(r_b * z_b)))
                               q = clamp(rint(fma(a, r_a, fma(b, r_b, F))))   (codes a, b as floats)
    (O7) QLinearGlobalAveragePool  m = fl32(s_x / fl32(s_y * HW)),  acc = sum x - z_x * HW
                               q = clamp(rint(fl32(fl32(acc) * m)) + z_y)
    (O8) QLinearMul            m = fl32(fl32(s_a * s_b) / s_c),  q = clamp(rint(fl32(z_c + fl32(fl32((a - z_a)(b - z_b)) * m))))
    (O9) QLinearSigmoid / QLinearLeakyRelu / QLinearConcat: 256-entry tables
                               table[code] = (O1)(f((O2)(code)))  (f = MLAS's logistic approximation,
                               leaky relu, or the identity for a concat input whose qparams differ)
    (O10) QLinearSoftmax       per row of D codes along the axis (z_x is not read):
                               T[k] = fl32(exp((k - 255 + b) s_x)) in float64, b = max(0, log(fl32(FLT_MAX / D)) - 5) / s_x
                               e_i = T[x_i + 255 - max x]  (int8: T indexed by byte, x_i + 127 - max x)
                               S = the float32 sum of e in MLAS's AVX-512 order
                               q_i = clamp(rint(fl32(fl32(e_i / S) * floor(1 / s_y))) + z_y)

QLinearAdd and QLinearMul convert with ``cvtps2dq`` before saturating: NaN or |v| >= 2^31 (absurd scale
ratios) give the dtype's *minimum*, even for a huge positive v; the others clamp in float first.

fma is one rounding (x86 ``vfmadd``, AVX2 kernel). Nothing here depends on the thread count (measured with
1 and 2 threads).

On CPUs without AVX-512 VNNI / AVX-VNNI (``host.MLAS_INT16_PAIRS``) MLAS multiplies uint8 by int8 with
``vpmaddubsw``, whose int16 pair sums saturate (``host.py`` (P)); the functions here compute what MLAS computes
on the CPU they run on (measured on an AMD EPYC Zen 3, onnxruntime 1.32, adversarial codes, 0 mismatches)::

    uint8 a x int8 b (MatMulInteger, QLinearMatMul, QGemm; b a constant or an input):
        acc = sum_p sat16(a_2p b_2p + a_2p+1 b_2p+1) - z_a sum_k b_k - z_b sum_k a_k + K z_a z_b   (O4')
    QLinearConv, uint8 x and int8 w, not depthwise: (O4') along each group's (kh, kw, c) columns (the
        padded input's NHWC im2col); a depthwise QLinearConv (group = C = OC): exact
    ConvInteger, uint8 x: exact (its GEMM multiplies the weights by the columns, so int8 x with uint8 w is
        the pair that saturates there -- measured, NOT reproduced: ``conv_integer`` gives the exact sum)
    any other dtype pair (int8 x int8, uint8 x uint8): exact

with an ``Int16SaturationWarning`` when (O4') changed an accumulator. Elsewhere (and with VNNI) (O4) is exact.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import gemm, host, kernels, vnni
from .functional import Int16SaturationWarning
from .reference import fma32

ORT_DTYPES = {"uint8": np.uint8, "int8": np.int8}

__all__ = ["quantize_linear", "dequantize_linear", "dynamic_quantize_linear", "matmul_integer", "requantize_output",
           "qlinear_matmul", "qgemm", "conv_integer", "qlinear_conv", "qlinear_add", "qlinear_mul", "qlinear_global_average_pool",
           "qlinear_sigmoid", "qlinear_leaky_relu", "qlinear_concat", "qlinear_softmax", "lookup_table", "mlas_logistic"]


def _f32(v: Any) -> np.ndarray:
    return np.asarray(v, np.float32)


def _per_axis(v: Any, ndim: int, axis: int) -> np.ndarray:
    """A per-tensor (0-d / 1-element) or per-axis (C,) parameter shaped to broadcast along ``axis``."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def _saturate(v: np.ndarray, dtype: Any) -> np.ndarray:
    """clamp to the dtype's range; NaN -> the dtype's minimum (x86 cvtps2dq gives INT32_MIN for NaN)."""
    info = np.iinfo(dtype)
    v = np.where(np.isnan(v), info.min, v)
    return np.clip(v, info.min, info.max).astype(dtype)


def _cvt_pack(v: np.ndarray, dtype: Any) -> np.ndarray:
    """x86 ``cvtps2dq`` then the saturating packs, for kernels that do not clamp in float first (QLinearAdd,
    QLinearMul): NaN and every |v| >= 2^31 become INT32_MIN, hence the dtype's minimum -- even for a huge
    positive v."""
    bad = ~(np.abs(v) < np.float32(2.0 ** 31))
    return _saturate(np.where(bad, np.iinfo(dtype).min, v), dtype)


def quantize_linear(x: np.ndarray, y_scale: Any, y_zero_point: Any, axis: int = 1,
                    dtype: Any = None) -> np.ndarray:
    """(O1) q = saturate(rint(fl32(x / y_scale)) + y_zero_point), ONNX QuantizeLinear on onnxruntime's CPU.

    A true float32 division (not a multiply by the reciprocal), ties to even, then the zero point, then
    the clamp; +-inf saturate, NaN gives the dtype's minimum (0 for uint8, -128 for int8).
    x: float32 (...); y_scale, y_zero_point: scalars or (C,) along ``axis`` (per-axis). dtype: the
    zero point's (uint8 default), as ONNX takes it from y_zero_point.
    """
    x = _f32(x)
    zp = np.asarray(y_zero_point if y_zero_point is not None else 0, dtype or getattr(y_zero_point, "dtype", np.uint8))
    dtype = zp.dtype
    s = _per_axis(_f32(y_scale), x.ndim, axis)
    z = _per_axis(zp.astype(np.float32), x.ndim, axis)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _saturate(np.rint(x / s) + z, dtype)


def dequantize_linear(q: np.ndarray, x_scale: Any, x_zero_point: Any = 0, axis: int = 1) -> np.ndarray:
    """(O2) y = fl32(fl32(q - zero_point) * scale), float32; q - zero_point is exact in float32."""
    q = np.asarray(q)
    s = _per_axis(_f32(x_scale), q.ndim, axis)
    z = _per_axis(np.asarray(x_zero_point, np.int32), q.ndim, axis)
    return ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)


def dynamic_quantize_linear(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """(O3) ONNX DynamicQuantizeLinear: (y uint8, y_scale float32, y_zero_point uint8).

    lo = min(0, min(x)), hi = max(0, max(x)); s = fl32((hi - lo) / 255), or 1 when hi = lo;
    z = rint(clamp(fl32(0 - fl32(lo / s)), 0, 255)) (ties to even); y = quantize_linear(x, s, z).
    NaNs are left out of the range, as onnxruntime's vector min / max leave them out almost everywhere
    (measured: a NaN in the last element of a 64-element input made onnxruntime's scale NaN -- that
    position-dependent case is not reproduced); an infinite element gives an infinite scale, as there.
    """
    x = _f32(x)
    finite = x[~np.isnan(x)]
    lo = min(np.float32(0), finite.min()) if finite.size else np.float32(0)
    hi = max(np.float32(0), finite.max()) if finite.size else np.float32(0)
    s = np.float32(1) if hi == lo else np.float32((hi - lo) / np.float32(255))
    z = np.uint8(np.rint(np.clip(np.float32(np.float32(0) - np.float32(lo / s)), 0, 255)))
    return quantize_linear(x, s, z), s, z


def _mlas_pairs(a: np.ndarray, b: np.ndarray) -> bool:
    return host.MLAS_INT16_PAIRS and a.dtype == np.uint8 and b.dtype == np.int8


def pair_matmul(a: np.ndarray, b: np.ndarray, a_zero_point: Any, b_zero_point: Any, who: str) -> np.ndarray:
    """(O4') of uint8 a (M, K) and int8 b (N, K) (rows of b = output columns), int32 (M, N); warns if the
    saturation changed an accumulator."""
    m, k = a.shape
    n = b.shape[0]
    a_c, b_c = np.ascontiguousarray(a), np.ascontiguousarray(b)
    raw = np.zeros((m, n), np.int32)                      # an empty sum (K = 0) is 0
    changed = gemm.gemm_s32(a_c, b_c, vnni.pack_b(b_c), True, raw) if m and n and k else 0
    za = np.int64(np.asarray(a_zero_point).reshape(()))
    zb = np.asarray(b_zero_point, np.int64).reshape(-1)
    acc = (raw.astype(np.int64) - za * b_c.astype(np.int64).sum(axis=1) - zb * a_c.astype(np.int64).sum(axis=1)[:, None]
           + k * za * zb)
    if changed:
        warnings.warn(f"{who}: saturated int16 pair sums changed {changed} accumulators, as onnxruntime's MLAS "
                      f"does on this CPU (no VNNI); uint8 activation codes above 128 next to large int8 weights "
                      f"cause it (quant/host.py)", Int16SaturationWarning, stacklevel=3)
    return acc.astype(np.int32)


def matmul_integer(a: np.ndarray, b: np.ndarray, a_zero_point: Any = 0, b_zero_point: Any = 0) -> np.ndarray:
    """(O4) ONNX MatMulInteger: y = (a - z_a) @ (b - z_b), exact, int32 -- or (O4') where MLAS sums int16 pairs
    (module docstring).

    a: uint8 / int8 (..., M, K); b: uint8 / int8 (K, N); b_zero_point: scalar or per column (N,).
    """
    a, b = np.asarray(a), np.asarray(b)
    if _mlas_pairs(a, b) and b.ndim == 2:
        lead, (k, n) = a.shape[:-1], b.shape
        out = pair_matmul(a.reshape(-1, k), b.T, a_zero_point, b_zero_point, "MatMulInteger")
        return out.reshape(*lead, n)
    if _mlas_pairs(a, b):                                 # a batch of B matrices (an activation operand)
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a_b = np.broadcast_to(a, lead + a.shape[-2:]).reshape(-1, *a.shape[-2:])
        b_b = np.broadcast_to(b, lead + b.shape[-2:]).reshape(-1, *b.shape[-2:])
        out = [pair_matmul(x, y.T, a_zero_point, b_zero_point, "MatMulInteger") for x, y in zip(a_b, b_b)]
        return np.stack(out).reshape(*lead, a.shape[-2], b.shape[-1])
    a64 = a.astype(np.int64) - np.asarray(a_zero_point, np.int64)
    b64 = b.astype(np.int64) - np.asarray(b_zero_point, np.int64).reshape(-1)
    return (a64 @ b64).astype(np.int32)


def requantize_output(acc: np.ndarray, multiplier: Any, zero_point: int, dtype: Any, bias: Any = None,
                      axis: int = -1) -> np.ndarray:
    """(O5) MLAS ``MlasRequantizeOutput``: q = clamp(rint(fl32(fl32(acc + bias) * m)) + z).

    The int32 bias is added to the int32 accumulator (wrapping), the sum converted to float32, multiplied
    by the float32 multiplier (per tensor, or per output channel along ``axis``), rounded half to even.
    """
    acc = np.asarray(acc, np.int32)
    if bias is not None:
        acc = (acc.astype(np.int64) + _per_axis(np.asarray(bias, np.int64), acc.ndim, axis)).astype(np.int32)
    m = _per_axis(_f32(multiplier), acc.ndim, axis)
    v = np.rint((acc.astype(np.float32) * m).astype(np.float32)) + np.float32(zero_point)
    return _saturate(v, dtype)


def output_multiplier(a_scale: Any, b_scale: Any, y_scale: Any) -> np.ndarray:
    """m = fl32(fl32(s_a * s_b) / s_y): onnxruntime's ``output_scales`` (QLinearMatMul, QLinearConv)."""
    return ((_f32(a_scale) * _f32(b_scale)).astype(np.float32) / _f32(y_scale)).astype(np.float32)


def qlinear_matmul(a: np.ndarray, a_scale: Any, a_zero_point: Any, b: np.ndarray, b_scale: Any, b_zero_point: Any,
                   y_scale: Any, y_zero_point: Any) -> np.ndarray:
    """ONNX QLinearMatMul = (O4) then (O5): a (..., M, K) @ b (K, N), b's scale / zero point per tensor or
    per column (N,); the output has y_zero_point's dtype."""
    acc = matmul_integer(a, b, a_zero_point, b_zero_point)
    zy = np.asarray(y_zero_point)
    return requantize_output(acc, output_multiplier(a_scale, np.reshape(b_scale, -1), y_scale), int(zy), zy.dtype)


def qgemm(a: np.ndarray, a_scale: Any, a_zero_point: Any, b: np.ndarray, b_scale: Any, b_zero_point: Any,
          bias: Any, y_scale: Any, y_zero_point: Any, trans_b: bool = True) -> np.ndarray:
    """com.microsoft QGemm (alpha = 1) with a quantized output = (O4) then (O5) with the int32 bias C:
    a (M, K), b (N, K) when ``trans_b`` (a Linear's weight) else (K, N); b per tensor or per row (N,)."""
    b = np.asarray(b).T if trans_b else np.asarray(b)
    acc = matmul_integer(a, b, a_zero_point, b_zero_point)
    zy = np.asarray(y_zero_point)
    m = output_multiplier(a_scale, np.reshape(b_scale, -1), y_scale)
    return requantize_output(acc, m, int(zy), zy.dtype, bias=bias)


def _pairs(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(u) for u in np.broadcast_to(np.asarray(v), (n,)))


def conv_integer(x: np.ndarray, w: np.ndarray, x_zero_point: int, w_zero_point: Any, stride: Any = 1,
                 pads: Any = 0, dilation: Any = 1, group: int = 1) -> np.ndarray:
    """acc[n, o, y, x] = sum_{c, i, j} (xp[n, g*C/G + c, y*sh + i*dh, x*sw + j*dw] - z_x)(w[o, c, i, j] - z_w[o])

    int32 (N, OC, OH, OW); xp is x padded with z_x (a padded tap contributes 0). x: (N, C, H, W) uint8 /
    int8; w: (OC, C/group, KH, KW); pads: (top, left, bottom, right) as ONNX orders them, or one int.
    """
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    sh, sw = _pairs(stride, 2)
    dh, dw = _pairs(dilation, 2)
    top, left, bottom, right = _pairs(pads, 4)
    xp = np.pad(x.astype(np.int64) - int(x_zero_point), ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    wz = w.astype(np.int64) - np.asarray(w_zero_point, np.int64).reshape(-1, 1, 1, 1)
    acc = np.zeros((n, oc, oh, ow), np.int64)
    og = oc // group
    for g in range(group):
        xg = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
                acc[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wz[g * og:(g + 1) * og, :, i, j])
    return acc.astype(np.int32)


def _pair_conv(x: np.ndarray, w: np.ndarray, x_zero_point: int, w_zero_point: Any, stride: Any, pads: Any,
               dilation: Any, group: int) -> np.ndarray:
    """``conv_integer``'s accumulator as MLAS sums it without VNNI: (O4') per group over the columns (kh, kw, c)
    of the NHWC im2col of x padded with z_x (``kernels.im2col``); int32 (N, OC, OH, OW)."""
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    sh, sw = _pairs(stride, 2)
    dh, dw = _pairs(dilation, 2)
    top, left, bottom, right = _pairs(pads, 4)
    xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=x_zero_point)
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n * oh * ow, c * kh * kw), np.uint8)
    kernels.im2col(np.ascontiguousarray(xp), kh, kw, oh, ow, sh, sw, 0, 0, dh, dw, group, x_zero_point, cols)
    rows = w.transpose(0, 2, 3, 1).reshape(oc, -1)                        # (i, j, c) columns, as im2col's
    zw = np.broadcast_to(np.asarray(w_zero_point, np.int64).reshape(-1), (oc,))
    og, kg = oc // group, cg * kh * kw
    acc = np.concatenate([pair_matmul(cols[:, g * kg:(g + 1) * kg], rows[g * og:(g + 1) * og], x_zero_point,
                                      zw[g * og:(g + 1) * og], "QLinearConv") for g in range(group)], axis=1)
    return acc.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)


def qlinear_conv(x: np.ndarray, x_scale: Any, x_zero_point: Any, w: np.ndarray, w_scale: Any, w_zero_point: Any,
                 y_scale: Any, y_zero_point: Any, bias: Any = None, strides: Any = 1, pads: Any = 0,
                 dilations: Any = 1, group: int = 1) -> np.ndarray:
    """ONNX QLinearConv = ``conv_integer`` (or, where MLAS sums int16 pairs, :func:`_pair_conv`) then (O5) with
    m[o] = fl32(fl32(s_x * s_w[o]) / s_y) and the int32 bias (in units of s_x * s_w[o]) added to the
    accumulator. Weights per tensor or per output channel."""
    x, w = np.asarray(x), np.asarray(w)
    depthwise = group == x.shape[1] == w.shape[0]
    if _mlas_pairs(x, w) and not depthwise:
        acc = _pair_conv(x, w, int(np.asarray(x_zero_point)), w_zero_point, strides, pads, dilations, group)
    else:
        acc = conv_integer(x, w, int(np.asarray(x_zero_point)), w_zero_point, strides, pads, dilations, group)
    zy = np.asarray(y_zero_point)
    m = output_multiplier(x_scale, np.reshape(w_scale, -1), y_scale)
    return requantize_output(acc, m, int(zy), zy.dtype, bias=bias, axis=1)


def qlinear_add(a: np.ndarray, a_scale: Any, a_zero_point: Any, b: np.ndarray, b_scale: Any, b_zero_point: Any,
                c_scale: Any, c_zero_point: Any) -> np.ndarray:
    """(O6) com.microsoft QLinearAdd, MLAS's AVX2 kernel: float32 with two fused multiply-adds.

    r_a = fl32(s_a / s_c), r_b = fl32(s_b / s_c); F = fl32(z_c - fma(r_a, z_a, fl32(r_b * z_b)));
    c = clamp(rint(fma(a, r_a, fma(b, r_b, F)))), a and b the raw codes (as float32). Same shapes, or a
    b that broadcasts against a; uint8 or int8 (the zero points' dtype).
    """
    zc = np.asarray(c_zero_point)
    ra = np.float32(_f32(a_scale) / _f32(c_scale))
    rb = np.float32(_f32(b_scale) / _f32(c_scale))
    za, zb = np.float32(np.asarray(a_zero_point)), np.float32(np.asarray(b_zero_point))
    fixed = np.float32(np.float32(zc) - fma32(ra, za, np.float32(rb * zb)))
    a32, b32 = np.broadcast_arrays(np.asarray(a).astype(np.float32), np.asarray(b).astype(np.float32))
    v = fma32(a32, np.full_like(a32, ra), fma32(b32, np.full_like(b32, rb), np.full_like(a32, fixed)))
    return _cvt_pack(np.rint(v), zc.dtype)


def qlinear_mul(a: np.ndarray, a_scale: Any, a_zero_point: Any, b: np.ndarray, b_scale: Any, b_zero_point: Any,
                c_scale: Any, c_zero_point: Any) -> np.ndarray:
    """(O8) com.microsoft QLinearMul: m = fl32(fl32(s_a * s_b) / s_c),
    c = clamp(rint(fl32(z_c + fl32(fl32((a - z_a)(b - z_b)) * m)))): the zero point is added in float
    *before* rounding (a separate add, no fma), unlike (O5); the int32 product is exact."""
    zc = np.asarray(c_zero_point)
    m = output_multiplier(a_scale, b_scale, c_scale)
    prod = ((np.asarray(a).astype(np.int32) - np.int32(np.asarray(a_zero_point)))
            * (np.asarray(b).astype(np.int32) - np.int32(np.asarray(b_zero_point))))
    with np.errstate(over="ignore", invalid="ignore"):
        v = (np.float32(zc) + (prod.astype(np.float32) * m).astype(np.float32)).astype(np.float32)
        return _cvt_pack(np.rint(v), zc.dtype)


def lookup_table(x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any, fn: Any) -> np.ndarray:
    """onnxruntime's ``QlinearBuildLookupTable``: table[code] = quantize_linear(fn(fl32(s_x * (code - z_x))))
    for all 256 codes (indexed by the code's byte, so an int8 code -1 is entry 255)."""
    zx, zy = np.asarray(x_zero_point), np.asarray(y_zero_point)
    codes = np.arange(256, dtype=np.uint8).view(zx.dtype)
    x = (np.float32(x_scale) * (codes.astype(np.int32) - int(zx)).astype(np.float32)).astype(np.float32)
    return quantize_linear(np.asarray(fn(x), np.float32), y_scale, zy)


def apply_lookup_table(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """y = table[byte of x]."""
    x = np.asarray(x)
    return table[x.view(np.uint8) if x.dtype == np.int8 else x]


LOGISTIC_CONSTANTS = {   # MLAS logistic.cpp (Eigen's rational approximation), as float32
    "alpha": (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03,
              2.48287947061529e-01),
    "beta": (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03,
             1.16817656904453e-01, 9.93151921023180e-01),
}


def mlas_logistic(x: np.ndarray) -> np.ndarray:
    """MLAS ``MlasComputeLogistic`` (its FMA3 kernel, read from the source: measurement cannot tell the fused
    Horner steps from unfused ones, both give onnxruntime's tables): v = clamp(x, -18, 18), u = v^2,
    p = v * (((a9 u + a7) u + a5) u + a3) u + a1),  q = ((((b10 u + b8) u + b6) u + b4) u + b2) u + b0,
    sigma = clamp(fl32(p / q) + 0.5, 0, 1); each ``(.) u + c`` one fused multiply-add."""
    v = np.clip(np.asarray(x, np.float32), np.float32(-18), np.float32(18))
    u = (v * v).astype(np.float32)

    def horner(coefs: tuple) -> np.ndarray:
        acc = np.full_like(u, np.float32(coefs[0]))
        for c in coefs[1:]:
            acc = fma32(acc, u, np.full_like(u, np.float32(c)))
        return acc

    p = (horner(LOGISTIC_CONSTANTS["alpha"]) * v).astype(np.float32)
    q = horner(LOGISTIC_CONSTANTS["beta"])
    return np.clip(((p / q).astype(np.float32) + np.float32(0.5)).astype(np.float32), 0, 1)


def qlinear_sigmoid(x: np.ndarray, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any) -> np.ndarray:
    """com.microsoft QLinearSigmoid: a 256-entry table of quantize(mlas_logistic(dequantize(code)))."""
    return apply_lookup_table(x, lookup_table(x_scale, x_zero_point, y_scale, y_zero_point, mlas_logistic))


def qlinear_leaky_relu(x: np.ndarray, x_scale: Any, x_zero_point: Any, y_scale: Any, y_zero_point: Any,
                       alpha: float = 0.01) -> np.ndarray:
    """com.microsoft QLinearLeakyRelu: a table of quantize(v >= 0 ? v : fl32(alpha * v)), v = dequantize(code)."""
    a = np.float32(alpha)
    return apply_lookup_table(x, lookup_table(x_scale, x_zero_point, y_scale, y_zero_point,
                                              lambda v: np.where(v >= 0, v, (a * v).astype(np.float32))))


def qlinear_concat(y_scale: Any, y_zero_point: Any, inputs: list, axis: int) -> np.ndarray:
    """com.microsoft QLinearConcat: each (x, s_x, z_x) copied when (s_x, z_x) = (s_y, z_y), else mapped through
    the table quantize(dequantize(code)) (requantisation through float), then concatenated along ``axis``."""
    parts = []
    for x, s, z in inputs:
        if np.float32(s) == np.float32(y_scale) and int(np.asarray(z)) == int(np.asarray(y_zero_point)):
            parts.append(np.asarray(x))
        else:
            parts.append(apply_lookup_table(x, lookup_table(s, z, y_scale, y_zero_point, lambda v: v)))
    return np.concatenate(parts, axis=axis)


def qlinear_global_average_pool(x: np.ndarray, x_scale: Any, x_zero_point: Any, y_scale: Any,
                                y_zero_point: Any) -> np.ndarray:
    """(O7) com.microsoft QLinearGlobalAveragePool (channels first), uint8: (N, C, H, W) -> (N, C, 1, 1).

    acc = sum_{h,w} x - z_x * HW (int32); m = fl32(s_x / fl32(s_y * HW)); y = clamp(rint(fl32(acc) * m) + z_y).
    onnxruntime refuses m outside [2^-32, 256) and images of 2^24 pixels or more.
    """
    x = np.asarray(x)
    hw = int(np.prod(x.shape[2:]))
    acc = x.reshape(x.shape[0], x.shape[1], hw).astype(np.int64).sum(axis=2) - int(np.asarray(x_zero_point)) * hw
    m = np.float32(_f32(x_scale) / np.float32(_f32(y_scale) * np.float32(hw)))
    zy = np.asarray(y_zero_point)
    out = requantize_output(acc.astype(np.int32), m, int(zy), zy.dtype)
    return out.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


def _softmax_exp_table(x_scale: Any, d: int, signed: bool) -> np.ndarray:
    """onnxruntime's ``QlinearBuildLookupTableUint32`` (float entries): T[k] = fl32(exp((k - 255 + b) s_x)) in
    float64 with b = max(0, log(fl32(FLT_MAX / d)) - 5) / s_x (log of a float32: the float overload), so that a
    row of d entries sums below FLT_MAX; stored by byte (int8: entry k at byte k - 128)."""
    s = float(np.float32(x_scale))
    headroom = float(np.log(np.float32(np.finfo(np.float32).max) / np.float32(d)))
    shift = max(0.0, headroom - 5.0) / s
    values = np.exp((np.arange(256, dtype=np.float64) - 255 + shift) * s).astype(np.float32)
    table = np.empty(256, np.float32)
    table[(np.arange(256) - (128 if signed else 0)) & 255] = values
    return table


def _mlas_avx512_row_sums(e: np.ndarray) -> np.ndarray:
    """The float32 sum of each row of ``e`` (N, D) in the order of MLAS's AVX-512 kernel: 16 lanes add the
    32-column blocks (lane j takes columns j, j + 16, j + 32, ... in turn), the lanes are reduced as
    ((l_k + l_{k+4}) + (l_{k+8} + l_{k+12})) for k = 0..3, then ((r_0 + r_1) + (r_2 + r_3)), and the last D mod 32
    columns are added one by one."""
    n, d = e.shape
    body = d // 32 * 32
    lanes = np.zeros((n, 16), np.float32)
    for i in range(0, body, 16):
        lanes = lanes + e[:, i:i + 16]
    quads = lanes.reshape(n, 4, 4)
    r = (quads[:, 0] + quads[:, 1]) + (quads[:, 2] + quads[:, 3])
    total = (r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])
    for i in range(body, d):
        total = total + e[:, i]
    return total


def qlinear_softmax(x: np.ndarray, x_scale: Any, y_scale: Any, y_zero_point: Any, axis: int = -1,
                    opset: int = 13) -> np.ndarray:
    """(O10) com.microsoft QLinearSoftmax (MLAS ``MlasComputeQSoftmax``, AVX-512 kernel) along ``axis``
    (opset < 13: over the flattened axes from ``axis`` on, as Softmax-11). The input zero point is not read:
    each row is shifted so that its maximum takes the table's last entry."""
    x = np.asarray(x)
    zy = np.asarray(y_zero_point)
    signed = x.dtype == np.int8
    axis = axis % x.ndim
    moved = x if opset < 13 else np.moveaxis(x, axis, -1)
    d = int(np.prod(x.shape[axis:])) if opset < 13 else x.shape[axis]
    rows = moved.reshape(-1, d).astype(np.int32)
    top = rows.max(axis=1, keepdims=True)
    index = (rows + (127 - top)) & 255 if signed else rows + (255 - top)
    e = _softmax_exp_table(x_scale, d, signed)[index]
    total = _mlas_avx512_row_sums(e)
    levels = np.float32(np.floor(np.float32(1) / np.float32(y_scale)))
    v = np.rint(((e / total[:, None]).astype(np.float32) * levels).astype(np.float32)) + np.float32(int(zy))
    out = _saturate(v, zy.dtype).reshape(moved.shape)
    return out if opset < 13 else np.moveaxis(out, -1, axis)
