"""Plain-NumPy twins of every kernel in ``kernels.py`` and ``gemm.py``: same arguments, same bits.

These are the readable definitions; the tests hold each Numba kernel to its twin bit for bit, and
the twins to PyTorch and to exact int64 / rational arithmetic.
"""
from __future__ import annotations

import numpy as np

from .rounding import DIV_HALF_AWAY, DIV_HALF_EVEN, FMA, MUL_ADD, MUL_ROUND_ADD


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fl32(a * b + c) rounded once (an FMA), for float32 a, b and float64 c, without an FMA instruction.

    Proof: p = a * b is exact in float64 (24 + 24 <= 53 significand bits). s = fl64(p + c) has the exact
    error e = (p + c) - s (Knuth's TwoSum). Rounding s to float32 gives the correctly rounded fl32(p + c)
    unless a second rounding bites, which needs s to be exactly halfway between two float32 r and t while
    e != 0: the exact sum then lies strictly on e's side of the midpoint, so the answer is the neighbour
    on that side. s is such a midpoint iff t = s + (s - r) is itself a float32 (s - r and t are exact
    in float64 there); otherwise |e| <= ulp64(s) / 2 is far below half a float32 ulp and r is correct.
    (Plain "float64 product + c, then round to float32" is wrong on inputs the tests construct.)
    """
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.asarray(a, np.float32).astype(np.float64) * np.asarray(b, np.float32).astype(np.float64)
        c = np.asarray(c, np.float64)
        s = p + c
        bb = s - p
        e = (p - (s - bb)) + (c - bb)        # exact error of s = fl64(p + c) (TwoSum)
        r = s.astype(np.float32)
        d = s - r.astype(np.float64)
        t = s + d                            # the other float32 neighbour when s is a midpoint
        t32 = t.astype(np.float32)
        fix = (e != 0) & (d != 0) & (t32.astype(np.float64) == t) & ((e > 0) == (d > 0))
    return np.where(fix, t32, r)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest integer, ties away from zero."""
    t = np.trunc(v)
    return np.where(np.abs(v - t) >= np.float32(0.5), t + np.sign(v), t).astype(v.dtype)


def quantize_code(x: np.ndarray, s: np.ndarray, inv: np.ndarray, z: np.ndarray, rule: int) -> np.ndarray:
    """Unclamped integer codes (float64) of float32 ``x`` under rounding ``rule`` (broadcasting)."""
    x = np.asarray(x, np.float32)
    s, inv = np.asarray(s, np.float32), np.asarray(inv, np.float32)
    z = np.asarray(z, np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        if rule == FMA:
            return np.rint(fma32(x, inv, z.astype(np.float64))).astype(np.float64)
        if rule == MUL_ADD:
            return np.rint((x * inv) + z.astype(np.float32)).astype(np.float64)
        if rule == MUL_ROUND_ADD:
            return np.rint(x * inv).astype(np.float64) + z
        if rule == DIV_HALF_EVEN:
            return np.rint(x / s).astype(np.float64) + z
        if rule == DIV_HALF_AWAY:
            return round_half_away(x / s).astype(np.float64) + z
    raise ValueError(f"unknown rounding rule {rule}")


def quantize(x, scale, inv_scale, zero_point, qmin, qmax, rule) -> np.ndarray:
    """Twin of ``kernels.quantize``: x float32 (A, C, B) -> int64 codes (A, C, B)."""
    sh = (1, -1, 1)
    q = quantize_code(x, scale.reshape(sh), inv_scale.reshape(sh), zero_point.reshape(sh), rule)
    return np.clip(q, qmin, qmax).astype(np.int64)


def dequantize(q, scale, zero_point, per_channel) -> np.ndarray:
    """Twin of ``kernels.dequantize``: integer (A, C, B) -> float32 (A, C, B)."""
    sh = (1, -1, 1)
    s, z = np.asarray(scale, np.float64).reshape(sh), np.asarray(zero_point, np.int64).reshape(sh)
    if per_channel:
        diff = q.astype(np.float32) - z.astype(np.float32)
        return (s * diff.astype(np.float64)).astype(np.float32)
    return s.astype(np.float32) * (q.astype(np.int64) - z).astype(np.float32)


# ------------------------------------------------------------------------------------ GEMM
INT32_MIN = -2147483648


def gemm_s32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T computed exactly in int64, then wrapped to int32 (twin of ``gemm.gemm_s32``)."""
    return (a.astype(np.int64) @ b.astype(np.int64).T).astype(np.int32)


def gemm_int16_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """(sum_p sat16(a[:, 2p] b[:, 2p] + a[:, 2p+1] b[:, 2p+1]) wrapped to int32, how many of those differ from
    the exact sums): ``host.py`` (P), K zero padded to even (twin of ``gemm``'s pair blocks)."""
    k = b.shape[1]
    a64, b64 = np.zeros((a.shape[0], k + k % 2), np.int64), np.zeros((b.shape[0], k + k % 2), np.int64)
    a64[:, :k], b64[:, :k] = a[:, :k], b
    pair = a64[:, None, 0::2] * b64[None, :, 0::2] + a64[:, None, 1::2] * b64[None, :, 1::2]
    acc = np.clip(pair, -32768, 32767).sum(axis=2).astype(np.int32)
    return acc, int((acc != gemm_s32(a[:, :k], b)).sum())


def _acc(a, b, pairs):
    return gemm_int16_pairs(a, b)[0] if pairs else gemm_s32(a, b)


def corrected(acc, a, a_zp, col_offsets, b_zp) -> np.ndarray:
    """raw = acc - a_zp * col_offsets[j] - row_sum(a)[i] * b_zp[j], wrapped to int32."""
    row_sums = a.astype(np.int64).sum(axis=1)[:, None]
    raw = (acc.astype(np.int64) - np.int64(a_zp) * np.asarray(col_offsets, np.int64)
           - row_sums * np.asarray(b_zp, np.int64))
    return raw.astype(np.int32)


def dynamic_epilogue(raw, mult, bias, relu) -> np.ndarray:
    y = fma32(raw.astype(np.float32), np.asarray(mult, np.float32), np.asarray(bias, np.float32).astype(np.float64))
    return np.where(y < 0, np.float32(0), y) if relu else y


def cvt_rint_i32(v) -> np.ndarray:
    """x86 cvtps2dq: round half to even; NaN or outside int32 -> INT32_MIN (as int64)."""
    with np.errstate(invalid="ignore"):
        r = np.rint(np.asarray(v, np.float64))
        ok = (r >= -2147483648.0) & (r < 2147483648.0)
        return np.where(ok, r, INT32_MIN).astype(np.int64)


def requant_epilogue(raw, bias_term, mult, out_zp, lo) -> np.ndarray:
    """clamp(cvtps2dq((fl32(raw) + bias_term) * mult) + out_zp, lo, 255) -- the plain statement of
    FBGEMM's epilogue (the kernel reaches the same integers through int16 saturation)."""
    v = (raw.astype(np.float32) + np.asarray(bias_term, np.float32)) * np.asarray(mult, np.float32)
    return np.clip(cvt_rint_i32(v) + out_zp, lo, 255)


def srdhm(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (int64 arrays)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    t = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(t >= 0, t // (1 << 31), -((-t) // (1 << 31)))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), 2147483647, q)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def fixed_point_epilogue(raw, bias_q, multiplier, shift, out_zp, lo) -> np.ndarray:
    shift = np.asarray(shift, np.int64)
    x = (raw.astype(np.int64) + np.asarray(bias_q, np.int64)).astype(np.int32).astype(np.int64)
    x = np.where(shift > 0, (x << np.maximum(shift, 0)).astype(np.int32), x).astype(np.int64)
    y = rounding_divide_by_pot(srdhm(x, multiplier), np.maximum(-shift, 0))
    return np.clip(y + out_zp, lo, 255)


def qgemm_dynamic(a, b, a_zp, col_offsets, b_zp, mult, bias, relu, pairs=False) -> np.ndarray:
    raw = corrected(_acc(a, b, pairs), a, a_zp, col_offsets, b_zp)
    return dynamic_epilogue(raw, mult, bias, relu)


def qgemm_requant(a, b, a_zp, col_offsets, b_zp, bias_term, mult, out_zp, relu, pairs=False) -> np.ndarray:
    raw = corrected(_acc(a, b, pairs), a, a_zp, col_offsets, b_zp)
    return requant_epilogue(raw, bias_term, mult, out_zp, out_zp if relu else 0).astype(np.uint8)


def qgemm_fixed_point(a, b, a_zp, col_offsets, b_zp, bias_q, multiplier, shift, out_zp, relu,
                      pairs=False) -> np.ndarray:
    raw = corrected(_acc(a, b, pairs), a, a_zp, col_offsets, b_zp)
    return fixed_point_epilogue(raw, bias_q, multiplier, shift, out_zp, out_zp if relu else 0).astype(np.uint8)


def im2col(x, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups, pad_value) -> np.ndarray:
    """Twin of ``kernels.im2col``: (N, C, H, W) -> (N*OH*OW, C*KH*KW), columns ordered (g, i, j, c)."""
    n, c = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = np.empty((n, oh, ow, groups, kh, kw, c // groups), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            cols[:, :, :, :, i, j, :] = patch.transpose(0, 2, 3, 1).reshape(n, oh, ow, groups, c // groups)
    return cols.reshape(n * oh * ow, c * kh * kw)


def depthwise_requant(cols, w, a_zp, w_zp, bias_term, mult, out_zp, relu, saturate=False) -> np.ndarray:
    """Twin of ``depthwise.depthwise_requant``: raw[m, o] = sum_k (cols[m, gK + k] - z_a)(w[o, k] - z_w[o]),
    g = o // (OC / C) (int64, wrapped to int32); with ``saturate`` fbgemm's (1'): neighbouring tap products
    summed in pairs, each pair clamped to int16, then the zero-point terms; the requantisation epilogue;
    uint8 (M, OC)."""
    m, (oc, k) = cols.shape[0], w.shape
    c = cols.shape[1] // k
    x = np.repeat(cols.reshape(m, c, k).astype(np.int64), oc // c, axis=1)              # (M, OC, K)
    wi, zw = w.astype(np.int64), np.asarray(w_zp, np.int64)[:, None]
    if saturate:
        prod = x * wi
        if k % 2:
            prod = np.concatenate([prod, np.zeros((m, oc, 1), np.int64)], axis=2)
        raw = np.clip(prod[..., 0::2] + prod[..., 1::2], -32768, 32767).sum(axis=2)
        raw = raw - a_zp * wi.sum(axis=1) - zw[:, 0] * x.sum(axis=2) + k * a_zp * zw[:, 0]
    else:
        raw = ((x - a_zp) * (wi - zw)).sum(axis=2)
    raw = raw.astype(np.int32)                                                          # wraps as int32
    return requant_epilogue(raw, bias_term, mult, out_zp, out_zp if relu else 0).astype(np.uint8)