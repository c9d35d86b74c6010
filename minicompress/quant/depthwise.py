"""Depthwise int8 convolution (groups = in channels, one or more output channels per group): one kernel.

``functional.conv2d`` would run one GEMM per group; with a depthwise convolution (MobileNetV2's 3x3 layers)
that is C tiny GEMMs of K = KH*KW columns and one output column each. Here the kernel reads the input once,
padded with z_a and channels last (``kernels.pad_nhwc``), and works along the channels, which are contiguous:
with x_k[m, g] the input code at tap k = i*KW + j of output position m = (b, y, xo), i.e.
xp[b, y*sh + i*dh, xo*sw + j*dw, g] (the im2col column (g, i, j)), the weight codes w (OC, K), and output
channel o reading input channel g = o // (OC / C):

    raw[m, o] = sum_k (x_k[m, g] - z_a) * (w[o, k] - z_w[o])                                         (1)
    out[m, o] = requant_epilogue(raw[m, o], bias_term[o], mult[o], z_o, lo)                           (2)

(1) is the zero-point-corrected sum of ``quantization.md`` (5) written out, the same integer (int32,
wrapping alike) as the per-group GEMM's ``acc - z_a c_j - r_i z_w[j]``; (2) is the same epilogue with the same
per-channel ``requant_params``. The NumPy twin is ``reference.depthwise_requant``.

fbgemm's depthwise fast path (``fbgemm_fast_path``: what PyTorch 2.13 runs for such layers) multiplies uint8
activations by int8 weights with ``vpmaddubsw``, which adds two neighbouring products into a *saturating* int16,
then sums those in int32. With ``saturate=True`` the kernel computes what fbgemm computes::

    raw'[m, o] = sum_pairs sat16(x_k w_k + x_k+1 w_k+1) - z_a sum_k w_k - z_w[o] sum_k x_k + K z_a z_w[o]   (1')

pairs (0, 1), (2, 3), ... of the taps in (kh, kw) order, the last one alone when K is odd; x the raw
codes, sat16 clamps to [-32768, 32767]. (1') equals (1) unless a pair leaves int16 -- |x w| > 16383 on both
taps, i.e. activation codes above 127 next to weight codes near -128 (PyTorch's ``reduce_range`` keeps
calibrated activations at 0..127 to avoid it; values beyond the calibrated range still reach 255). Measured
against torch 2.13 on adversarial codes: 0 mismatches with (1'), thousands with (1), for 3x3 / 5x5 / 7x7,
stride 1 and 2, any z_a, channel multiplier 1 and 2; exact (1) outside the fast path.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .gemm import PARALLEL_MIN_MACS, _mac32, _pair, _pairs_may_saturate, requant_epilogue


def fbgemm_fast_path(in_channels: int, out_channels: int, groups: int, kernel: tuple[int, int],
                     stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> bool:
    """fbgemm's ``takeDepthWiseFastPath`` for 2-D convolutions: groups = C, OC in {C, 2C}, C % 8 == 0, strides
    1 or 2, a square odd kernel, no dilation, 'same' padding (K - 1) / 2 (measured, module docstring)."""
    kh, kw = kernel
    return (groups == in_channels and out_channels in (groups, 2 * groups) and groups % 8 == 0
            and all(s in (1, 2) for s in stride) and kh == kw and kh % 2 == 1 and dilation == (1, 1)
            and padding == ((kh - 1) // 2, (kw - 1) // 2))


LANES = 16     # channels per vector of ``_taps_lanes``: one zmm of int32 (two ymm on AVX2)


@intrinsic
def _taps_lanes(typingctx, acc, o0, x, x_byte, tap_bytes, w, w_byte):
    """acc[o0 + l] += sum_t int32(x's uint8 at byte x_byte + tap_bytes[t] + l) * (w's int32 at byte
    w_byte + t * w.strides[0] + 4 l) for l < LANES, t < len(tap_bytes), in wrapping int32 (``_mac32`` lane by
    lane): every tap of LANES channels of one output position, the sums in one vector register, written in LLVM IR
    (generic vectors: any CPU). Numba's loop over the channels, tap by tap, kept the sums in memory (a store and
    a reload per tap) and vectorised 64 wide, leaving MobileNetV2's 48 - 144 channels to its scalar remainder."""
    sig = types.void(acc, o0, x, x_byte, tap_bytes, w, w_byte)

    def codegen(context, builder, signature, args):
        acc_v, o0_v, x_v, xb_v, taps_v, w_v, wb_v = args
        acc_a, x_a, taps_a, w_a = [context.make_array(signature.args[i])(context, builder, v)
                                   for i, v in ((0, acc_v), (2, x_v), (4, taps_v), (5, w_v))]
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        lanes_i8, lanes_i32 = ir.VectorType(i8, LANES), ir.VectorType(i32, LANES)
        o0_64, xb_64, wb_64 = [builder.sext(v, i64) if v.type.width < 64 else v for v in (o0_v, xb_v, wb_v)]
        x_i8 = builder.bitcast(x_a.data, i8.as_pointer())
        w_i8 = builder.bitcast(w_a.data, i8.as_pointer())
        w_row = builder.extract_value(w_a.strides, 0)
        acc_ptr = builder.bitcast(builder.gep(acc_a.data, [o0_64]), lanes_i32.as_pointer())
        sums = cgutils.alloca_once_value(builder, builder.load(acc_ptr, align=4))
        with cgutils.for_range(builder, builder.extract_value(taps_a.shape, 0)) as loop:
            t = loop.index
            x_at = builder.add(xb_64, builder.load(builder.gep(taps_a.data, [t])))
            x_ptr = builder.bitcast(builder.gep(x_i8, [x_at]), lanes_i8.as_pointer())
            w_ptr = builder.bitcast(builder.gep(w_i8, [builder.add(wb_64, builder.mul(t, w_row))]),
                                    lanes_i32.as_pointer())
            products = builder.mul(builder.zext(builder.load(x_ptr, align=1), lanes_i32),
                                   builder.load(w_ptr, align=1))
            builder.store(builder.add(builder.load(sums), products), sums)
        builder.store(builder.load(sums), acc_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _add_tap(acc, xb, yi, xi, w, t, per_group, o_from=0):
    """acc[o] += xb[yi, xi, o // per_group] * w[t, o] in int32 for o >= o_from (every index but o is
    loop-invariant, so the loop vectorises; no array views are made -- each costs Numba a reference count)."""
    if per_group == 1:
        for o in range(o_from, acc.shape[0]):
            acc[o] = _mac32(acc[o], xb[yi, xi, o], w[t, o])
    else:
        for o in range(o_from, acc.shape[0]):
            acc[o] = _mac32(acc[o], xb[yi, xi, o // per_group], w[t, o])


@njit(cache=True, inline="always")
def _add_pair(acc, xb, y0, x0, y1, x1, w, t, per_group):
    """acc[o] += sat16(x_t w[t, o] + x_t+1 w[t+1, o]) (eq. 1'); returns how many of the OC pairs saturated."""
    clipped = 0
    for o in range(acc.shape[0]):
        g = o if per_group == 1 else o // per_group
        acc[o], hit = _pair(acc[o], xb[y0, x0, g], xb[y1, x1, g], w[t, o], w[t + 1, o])
        clipped += hit
    return clipped


@njit(cache=True)
def _depthwise_rows(xp, by0, by1, oh, sh, sw, ow, tap_y, tap_x, w_t, zero_term, neg_zw, has_zw, bias_term, mult,
                    out_zp, lo, saturate, out):
    """Output rows by = b * OH + y in by0 .. by1 - 1 of eqs. (1)-(2), or (1')-(2) with ``saturate``; w_t: the
    weight codes (K, OC) as int32; tap t = i*KW + j reads input row y*sh + tap_y[t] and column xo*sw + tap_x[t].
    Returns how many pair sums saturated. All sums are int32 (``_mac32``), so that the channel loops vectorise 16
    lanes wide; the exact sums of a layer with one output channel per input channel take every tap of 16 channels
    at a time in registers (``_taps_lanes``), the channels past the last multiple of 16 one by one. (1) is summed
    expanded, sum x w - z_a sum w - z_w sum x + K z_a z_w (``zero_term`` the constant part), which is the same
    integer modulo 2^32."""
    k, oc = w_t.shape
    per_group = oc // xp.shape[3]
    acc = np.empty(oc, np.int32)
    clipped = 0
    lanes_end = 0                  # channels below it go LANES at a time through _taps_lanes (exact sums only)
    if per_group == 1 and xp.strides[3] == 1 and w_t.strides[1] == 4:
        lanes_end = oc // LANES * LANES
    tap_bytes = tap_y * xp.strides[1] + tap_x * xp.strides[2]
    for by in range(by0, by1):
        b, y = by // oh, by % oh
        xb = xp[b]
        y0 = y * sh
        for xo in range(ow):
            x0 = xo * sw
            for o in range(oc):
                acc[o] = zero_term[o]
            if saturate:
                for t in range(0, k - 1, 2):
                    clipped += _add_pair(acc, xb, y0 + tap_y[t], x0 + tap_x[t], y0 + tap_y[t + 1],
                                         x0 + tap_x[t + 1], w_t, t, per_group)
                if k % 2:                                # the last tap alone: one product fits in int16
                    t = k - 1
                    _add_tap(acc, xb, y0 + tap_y[t], x0 + tap_x[t], w_t, t, per_group)
            else:
                x_byte = b * xp.strides[0] + y0 * xp.strides[1] + x0 * xp.strides[2]
                for o0 in range(0, lanes_end, LANES):
                    _taps_lanes(acc, o0, xp, x_byte + o0, tap_bytes, w_t, 4 * o0)
                for t in range(k):
                    _add_tap(acc, xb, y0 + tap_y[t], x0 + tap_x[t], w_t, t, per_group, lanes_end)
            if has_zw:                                    # symmetric weights (z_w = 0) need no activation sum
                for t in range(k):
                    _add_tap(acc, xb, y0 + tap_y[t], x0 + tap_x[t], neg_zw, 0, per_group)
            row = by * ow + xo
            for o in range(oc):
                out[row, o] = requant_epilogue(acc[o], bias_term[o], mult[o], out_zp, lo)
    return clipped


@njit(cache=True, parallel=True)
def _depthwise_parallel(xp, oh, sh, sw, ow, tap_y, tap_x, w_t, zero_term, neg_zw, has_zw, bias_term, mult, out_zp,
                        lo, saturate, out):
    rows = xp.shape[0] * oh
    chunks = -(-rows // 4)
    clipped = np.zeros(chunks, np.int64)
    for j in prange(chunks):
        clipped[j] = _depthwise_rows(xp, 4 * j, min(rows, 4 * j + 4), oh, sh, sw, ow, tap_y, tap_x, w_t, zero_term,
                                     neg_zw, has_zw, bias_term, mult, out_zp, lo, saturate, out)
    return clipped.sum()


@njit(cache=True)
def prepare_weights(w, w_zp):
    """What eqs. (1)/(1') need of the weight codes w int8 (OC, K), computed once per layer: (w_t int32 (K, OC), one
    contiguous row per tap; sum_w int32 (OC,), the weight sums; z_w int32 (OC,))."""
    out_channels, k = w.shape
    w_t = np.ascontiguousarray(w.T).astype(np.int32)
    sum_w = np.zeros(out_channels, np.int32)
    for o in range(out_channels):
        for j in range(k):
            sum_w[o] += np.int32(w[o, j])
    return w_t, sum_w, w_zp.astype(np.int32)


@njit(cache=True)
def depthwise_requant(xp, kh, kw, sh, sw, dh, dw, oh, ow, w, a_zp, w_zp, bias_term, mult, out_zp, relu, saturate,
                      out):
    """Eqs. (1)-(2), or (1')-(2) with ``saturate``: xp uint8 (N, Hp, Wp, C), the input padded with z_a,
    channels last; w int8 (OC, K = KH*KW); w_zp int64 (OC,); bias_term / mult float32 (OC,) -> out uint8
    (N*OH*OW, OC) (NHWC rows). lo = out_zp for a fused ReLU, else 0. Returns how many int16 pair sums
    saturated. The products are int32 (|x w| <= 255 * 128, a pair < 2^16, K taps far below 2^31), so
    the channel loops vectorise. Fewer than ``PARALLEL_MIN_MACS`` multiply-adds run on the calling thread."""
    w_t, sum_w, zw = prepare_weights(w, w_zp)
    return depthwise_requant_prepared(xp, kh, kw, sh, sw, dh, dw, oh, ow, w_t, sum_w, zw, a_zp, bias_term, mult,
                                      out_zp, relu, saturate, out)


@njit(cache=True)
def depthwise_requant_prepared(xp, kh, kw, sh, sw, dh, dw, oh, ow, w_t, sum_w, zw, a_zp, bias_term, mult, out_zp,
                               relu, saturate, out):
    """``depthwise_requant`` with the weights from ``prepare_weights`` (an inference plan prepares them once). A
    saturating call whose codes are all <= 128 runs the exact sums: no pair can leave int16 then (``gemm``)."""
    k, out_channels = w_t.shape
    lo = np.int32(out_zp) if relu else np.int32(0)
    if saturate and not _pairs_may_saturate(xp.reshape(1, -1), 0, 1, xp.size):
        saturate = False                          # codes <= 128 (reduce_range's 0..127): no pair leaves int16
    za = np.int32(a_zp)
    zero_term = np.empty(out_channels, np.int32)
    for o in range(out_channels):
        zero_term[o] = np.int32(-za * sum_w[o] + k * za * zw[o])
    tap_y, tap_x = np.empty(k, np.int64), np.empty(k, np.int64)  # (i*dh, j*dw) of tap t: no division per pixel
    for t in range(k):
        tap_y[t], tap_x[t] = (t // kw) * dh, (t % kw) * dw
    args = (xp, oh, sh, sw, ow, tap_y, tap_x, w_t, zero_term, (-zw).reshape(1, out_channels), zw.any(), bias_term,
            mult, out_zp, lo, saturate, out)
    if out.shape[0] * out_channels * k >= PARALLEL_MIN_MACS:
        return np.int64(_depthwise_parallel(*args))
    return np.int64(_depthwise_rows(xp, 0, xp.shape[0] * oh, *args[1:]))
