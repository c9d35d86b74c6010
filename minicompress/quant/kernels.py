"""Numba kernels of the int8 runtime, elementwise part: arrays and scalars in, arrays out.

Every kernel has a plain-NumPy twin in ``reference.py`` that the tests hold it to bit for bit.
No ``fastmath`` anywhere: the order and the rounding of every float operation is part of the result;
float32 arithmetic stays float32 because Numba types ``float32 op float32`` as float32.

Contents: a float32 fused multiply-add (``fma32``, and ``fma32_elementwise`` over arrays for the
fake-quant ops), quantize / dequantize under every rounding rule, and
im2col padded with the input zero point for int8 convolution. The int32 GEMM and its fused epilogues
are in ``gemm.py``.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types, vectorize
from numba.core import cgutils
from numba.extending import intrinsic

from .rounding import DIV_HALF_AWAY, DIV_HALF_EVEN, FMA, MUL_ADD, MUL_ROUND_ADD

SMALL_SCALE_THRESHOLD = np.float32(6.1e-5)     # FBGEMM: fp16_min, keeps scales out of fp16 subnormals


# ------------------------------------------------------------------------------------ float helpers
@intrinsic
def _llvm_fma_f32(typingctx, a, b, c):
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32, f32, f32]), "llvm.fma.f32")
        return builder.call(fma, args)

    return sig, codegen


@njit(cache=True, inline="always")
def fma32(a, b, c):
    """fl32(a * b + c) with ONE rounding -- what x86's vfmadd computes (FBGEMM's quantize and epilogue).

    LLVM's ``llvm.fma.f32`` is exactly that (the FMA instruction; a correctly rounded ``fmaf`` on CPUs
    without one). Never ``fastmath``: Numba must not contract or split anything else. The NumPy twin
    (``reference.fma32``) emulates the same single rounding in float64 with TwoSum (proof there); the
    tests hold the two to each other and to exact rational arithmetic.
    """
    return _llvm_fma_f32(np.float32(a), np.float32(b), np.float32(c))


@vectorize(["float32(float32, float32, float32)"], cache=True)
def fma32_elementwise(a, b, c):
    """``fma32`` as a NumPy ufunc (broadcasting): fl32(a * b + c) with one rounding, elementwise."""
    return fma32(a, b, c)


@njit(cache=True, inline="always")
def round_half_away(v):
    """Round a float32 to the nearest integer, ties away from zero (C ``std::round``)."""
    t = np.trunc(v)
    if abs(v - t) >= np.float32(0.5):
        t += np.float32(1.0) if v > 0 else np.float32(-1.0)
    return t


@njit(cache=True, inline="always")
def quantize_code(x, s, inv, z, rule):
    """The unclamped integer code of float32 ``x`` (as a float64) under rounding ``rule``."""
    if rule == FMA:
        return np.float64(np.rint(fma32(x, inv, np.float32(z))))
    if rule == MUL_ADD:
        return np.float64(np.rint(np.float32(x * inv) + np.float32(z)))
    if rule == MUL_ROUND_ADD:
        return np.float64(np.rint(np.float32(x * inv))) + z
    if rule == DIV_HALF_EVEN:
        return np.float64(np.rint(np.float32(x / s))) + z
    if rule == DIV_HALF_AWAY:
        return np.float64(round_half_away(np.float32(x / s))) + z
    return np.nan


# ------------------------------------------------------------------------------------ quantize
@njit(cache=True, inline="always")
def _quantize_loop(x, scale, inv_scale, zero_point, lo, hi, rule, out):
    n_outer, n_ch, n_inner = x.shape
    for a in range(n_outer):
        for c in range(n_ch):
            s, inv, z = scale[c], inv_scale[c], zero_point[c]
            for b in range(n_inner):
                q = quantize_code(x[a, c, b], s, inv, z, rule)
                out[a, c, b] = min(max(q, lo), hi)


@njit(cache=True, inline="always")
def _quantize_fma_narrow(x, inv_scale, zero_point, lo, hi, out):
    """The FMA rule for codes of at most 16 bits, clamped in float32 (exact: the bounds and every rounded value
    in them are float32 integers), so that the loop vectorises."""
    n_outer, n_ch, n_inner = x.shape
    for a in range(n_outer):
        for c in range(n_ch):
            inv, z = inv_scale[c], np.float32(zero_point[c])
            for b in range(n_inner):
                q = np.rint(fma32(x[a, c, b], inv, z))
                q = lo if q < lo else q
                out[a, c, b] = np.int32(hi if q > hi else q)


@njit(cache=True)
def quantize(x, scale, inv_scale, zero_point, qmin, qmax, rule, out):
    """out[a, c, b] = clamp(code(x[a, c, b]; scale[c], zero_point[c]), qmin, qmax).

    x: float32 (A, C, B) -- per-tensor callers pass C = 1. scale, inv_scale: float32 (C,),
    inv_scale = fl32(1 / scale). zero_point: int64 (C,). out: integer (A, C, B), written in place.
    (One loop per rule, so that each loop body is branch-free and vectorises.)
    """
    lo, hi = np.float64(qmin), np.float64(qmax)
    if rule == FMA and qmin >= -32768 and qmax <= 65535:
        _quantize_fma_narrow(x, inv_scale, zero_point, np.float32(qmin), np.float32(qmax), out)
    elif rule == FMA:
        _quantize_loop(x, scale, inv_scale, zero_point, lo, hi, FMA, out)
    elif rule == MUL_ADD:
        _quantize_loop(x, scale, inv_scale, zero_point, lo, hi, MUL_ADD, out)
    elif rule == MUL_ROUND_ADD:
        _quantize_loop(x, scale, inv_scale, zero_point, lo, hi, MUL_ROUND_ADD, out)
    elif rule == DIV_HALF_EVEN:
        _quantize_loop(x, scale, inv_scale, zero_point, lo, hi, DIV_HALF_EVEN, out)
    else:
        _quantize_loop(x, scale, inv_scale, zero_point, lo, hi, DIV_HALF_AWAY, out)


@njit(cache=True, error_model="numpy")
def choose_qparams(lo: np.float32, hi: np.float32, qmin: int, qmax: int, fbgemm: bool,
            preserve_sparsity: bool) -> tuple[float, int, bool]:
    """``qparams.choose_quantization_params``' arithmetic (its docstring), compiled: a dynamic Linear calls it
    on every forward. float32 values stay float32 (Numba keeps the type of float32 operands), Python floats are the C++
    doubles; min / max are written out as C++'s std::min / std::max and Python's (b < a ? b : a). The third
    value is False when the zero point is NaN (an infinite range)."""
    zero = np.float32(0)
    r = qmax - qmin
    if preserve_sparsity and lo < zero and zero < hi:
        sq_min, sq_max = -(r // 2 + 1), r // 2
        a, b = abs(lo / np.float32(sq_min)), abs(hi / np.float32(sq_max))      # float32 divisions
        max_s = np.float64(b if b > a else a)
        lo, hi = np.float32(max_s * sq_min), np.float32(max_s * sq_max)
    lo = zero if zero < lo else lo
    hi = zero if zero > hi else hi
    scale = (np.float64(hi) - np.float64(lo)) / r
    if np.float32(scale) == 0 or np.isinf(np.float32(1) / np.float32(scale)):
        scale = 0.1
    if fbgemm:
        scale = np.float64(np.float32(scale))
    threshold = SMALL_SCALE_THRESHOLD
    if scale < np.float64(threshold):
        org_scale = np.float32(scale)
        scale = np.float64(threshold)
        if lo == 0:
            hi = np.float32(threshold * np.float32(r))
        elif hi == 0:
            lo = np.float32(-threshold * np.float32(r))
        else:
            amplifier = threshold / org_scale
            lo, hi = np.float32(lo * amplifier), np.float32(hi * amplifier)
    sign = 1.0 if fbgemm else -1.0
    zp_from_min, zp_from_max = qmin - np.float64(lo) / scale, qmax - np.float64(hi) / scale
    err_min = abs(qmin) + sign * abs(np.float64(lo) / scale)
    err_max = abs(qmax) + sign * abs(np.float64(hi) / scale)
    initial = zp_from_min if err_min < err_max else zp_from_max
    if preserve_sparsity and lo < zero and zero < hi:
        initial = (qmin + qmax) / 2
    if initial != initial:
        return scale, 0, False
    if initial < qmin:
        return scale, qmin, True
    if initial > qmax:
        return scale, qmax, True
    return scale, int(np.rint(initial)), True


@njit(cache=True)
def quantize_dynamic_input(x, lo, hi, reduce_range, out):
    """fbgemm's dynamic activation quantization (``PackedLinearWeight::apply_dynamic_impl``) of float32 x (flat)
    whose range is [lo, hi]: (s, z) = ChooseQuantizationParams(lo, hi, 0, 255, reduce_range) ('aten'), then
    out = clamp(rint(fma(x, fl32(1 / fl32(s)), z)), 0, 255) as uint8. Returns (s, z, defined), ``defined``
    False for an infinite range (z would be NaN; out is not written then)."""
    scale, zero_point, defined = choose_qparams(lo, hi, 0, 127 if reduce_range else 255, False, False)
    if defined:
        inv = np.full(1, np.float32(1) / np.float32(scale), np.float32)
        _quantize_fma_narrow(x.reshape(1, 1, x.size), inv, np.full(1, zero_point, np.int64), np.float32(0),
                             np.float32(255), out.reshape(1, 1, out.size))
    return scale, zero_point, defined


@njit(cache=True)
def dequantize(q, scale, zero_point, per_channel, out):
    """out = s * (q - z) as float32 with PyTorch's float steps.

    per tensor: fl32(fl32(s) * fl32(q - z));  per channel: fl32(s_c * fl64(fl32(q) - fl32(z_c))).
    q: integer (A, C, B); scale float64 (C,); zero_point int64 (C,); out float32 (A, C, B).
    """
    n_outer, n_ch, n_inner = q.shape
    for a in range(n_outer):
        for c in range(n_ch):
            s, z = scale[c], zero_point[c]
            s32, z32 = np.float32(s), np.float32(z)
            for b in range(n_inner):
                if per_channel:
                    out[a, c, b] = np.float32(s * np.float64(np.float32(q[a, c, b]) - z32))
                else:
                    out[a, c, b] = s32 * np.float32(np.int64(q[a, c, b]) - z)


# ------------------------------------------------------------------------------------ convolution
@njit(cache=True, inline="always")
def _copy_run(dst, d0, src, s0, n):
    """dst[d0:d0 + n] = src[s0:s0 + n] for flat arrays, with unsigned offsets: Numba then emits neither
    negative-index wrap-around tests nor a scalar loop (a slice assignment or a signed index is ~30x slower
    on the short runs of an im2col)."""
    for t in range(np.uint64(n)):
        dst[np.uint64(d0) + t] = src[np.uint64(s0) + t]


@njit(cache=True, inline="always")
def _pad_sample(x_flat, b, h, w, c, ph, pw, xp_flat):
    """Rows of sample b of x (N, H, W, C) into the interior of xp (N, H + 2ph, W + 2pw, C) (flat views)."""
    hp, wp = h + 2 * ph, w + 2 * pw
    for y in range(h):
        _copy_run(xp_flat, ((b * hp + ph + y) * wp + pw) * c, x_flat, (b * h + y) * w * c, w * c)


@njit(cache=True, inline="always")
def _im2col_row(xp_flat, hp, wp, c, by, kh, kw, oh, ow, sh, sw, dh, dw, groups, k_pad, dst_flat):
    """The OW output rows of sample b = by // OH, output row y = by % OH (``im2col``'s formula)."""
    cg = c // groups
    whole_rows = groups == 1 and dw == 1
    run = kw * c if whole_rows else cg                   # elements per contiguous copy
    taps = 1 if whole_rows else kw
    k = c * kh * kw
    b, y = by // oh, by % oh
    for xo in range(ow):
        row = (by * ow + xo) * k_pad
        for g in range(groups):
            for i in range(kh):
                yi = y * sh + i * dh
                for j in range(taps):
                    xi = xo * sw + j * dw
                    _copy_run(dst_flat, row + ((g * kh + i) * kw + j) * cg, xp_flat, ((b * hp + yi) * wp + xi) * c + g * cg,
                              run)
        for t in range(np.uint64(k_pad - k)):
            dst_flat[np.uint64(row + k) + t] = 0


@njit(cache=True)
def im2col(x, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups, pad_value, out):
    """Unfold x (N, H, W, C) -- channels last, C-contiguous -- into out (N*OH*OW, K'), padded with pad_value.

    out[(b, y, xo), (g, i, j, c)] = xp[b, y*sh + i*dh, xo*sw + j*dw, g*C/groups + c]   (xp: x padded)
    for the K = C*KH*KW columns; columns K .. K' - 1 (K' >= K, the GEMM's multiple of 4) are 0.
    The output size (OH, OW) is the caller's (``nn.functional.conv.conv_output_size``).

    Column order (g, i, j, c) -- group, kernel row, kernel column, channel within the group -- so each
    group's columns are one contiguous block, and every copy is a run of contiguous elements of the padded
    channels-last copy xp of x: C/groups per tap, or the KW*C of a whole kernel row when groups = 1 and
    dilation_w = 1 (``functional.pack_weight`` orders 4-D weights to match).
    Padding with the input zero point (not 0) makes padded taps contribute (z - z) * w = 0.
    One thread: the copy runs at memory speed, and a ``parallel=True`` version of this loop loaded from
    Numba's cache ran ~3x slower than the same loop freshly compiled (measured, Numba 0.68).
    """
    n, h, w, c = x.shape
    xp = pad_nhwc(x, ph, pw, pad_value)
    xp_flat, out_flat = xp.ravel(), out.ravel()
    for by in range(n * oh):
        _im2col_row(xp_flat, h + 2 * ph, w + 2 * pw, c, by, kh, kw, oh, ow, sh, sw, dh, dw, groups, out.shape[1],
                    out_flat)


@njit(cache=True)
def pad_nhwc(x, ph, pw, pad_value):
    """x (N, H, W, C), C-contiguous, with ph rows and pw columns of pad_value on each side:
    (N, H + 2ph, W + 2pw, C) (a new array)."""
    n, h, w, c = x.shape
    xp = np.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, x.dtype)
    pad_nhwc_into(x, ph, pw, xp.ravel())
    return xp


@njit(cache=True, inline="always")
def window_starts(m0, rows, oh, ow, hp, wp, sh, sw, c, starts):
    """starts[r] = flat offset in the padded NHWC image (N, Hp, Wp, C) of the first window value of output
    position p = m0 + min(r, rows - 1) = (b, y, xo) in row-major order: ((b*Hp + y*sh) * Wp + xo*sw) * C. One
    division for the tile, then the positions are counted on (a tile's short end repeats its last position)."""
    b, rem = m0 // (oh * ow), m0 % (oh * ow)
    y, xo = rem // ow, rem % ow
    for r in range(starts.shape[0]):
        starts[r] = ((b * hp + y * sh) * wp + xo * sw) * c
        if r < rows - 1:
            xo += 1
            if xo == ow:
                xo, y = 0, y + 1
                if y == oh:
                    y, b = 0, b + 1


@njit(cache=True)
def pad_nhwc_into(x, ph, pw, xp_flat):
    """The interior of a padded buffer (flat, at least N (H + 2ph) (W + 2pw) C long, its border already holding
    the pad value) = x (N, H, W, C), C-contiguous: a caller that keeps the buffer fills the border once."""
    n, h, w, c = x.shape
    x_flat = x.ravel()
    for b in range(n):
        _pad_sample(x_flat, b, h, w, c, ph, pw, xp_flat)


# ------------------------------------------------------------------------------------ quantized add
@njit(cache=True)
def qadd(a, b, sa, za, sb, zb, scale, zero_point, lo, hi, relu, body_n, out):
    """PyTorch's ``quantized::add`` / ``add_relu`` on flat codes in memory order (``qops.add``'s formulas):
    elements i < body_n take the vectorised body, the others the scalar tail::

        body  d = fma(s, q, fl32(s * -z)), c = fl32(d_a + d_b) [max 0], q = clamp(rint(min(fl32(c * inv),
              2^31 - 128)) + z_out)
        tail  d = fl32(s) * fl32(q - z),   c = fl32(d_a + d_b) [max 0], q = clamp(rint(fl32(fl32(c * inv) + z_out)))

    a, b: codes (n,), out (n,); sa, sb, scale: float32; inv = fl32(1 / scale); lo, hi: the dtype's range.
    """
    inv = np.float32(1) / scale
    na, nb = np.float32(sa * np.float32(-za)), np.float32(sb * np.float32(-zb))
    cap = np.float32(2.0 ** 31 - 128)
    zf = np.float32(zero_point)
    flo, fhi = np.float32(lo), np.float32(hi)
    for i in range(body_n):                             # two loops, so that each vectorises
        c = fma32(sa, np.float32(a[i]), na) + fma32(sb, np.float32(b[i]), nb)
        c = np.float32(0) if relu and c < 0 else c
        t = np.float32(c * inv)
        t = cap if t > cap else t
        q = np.rint(t) + zf                   # float32 sum: it rounds only beyond 2^24, far outside the clamp
        q = flo if q < flo else q
        out[i] = np.int32(fhi if q > fhi else q)
    for i in range(body_n, a.shape[0]):
        c = sa * np.float32(np.int64(a[i]) - za) + sb * np.float32(np.int64(b[i]) - zb)
        c = np.float32(0) if relu and c < 0 else c
        q = np.rint(np.float32(np.float32(c * inv) + zf))
        q = flo if q < flo else q
        out[i] = np.int32(fhi if q > fhi else q)
