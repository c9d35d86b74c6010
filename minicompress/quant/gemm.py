"""Numba kernels of the int8 runtime, GEMM part: u8 x s8 (or s8 x s8) -> int32 with fused epilogues.

With row sums r_i = sum_k a_ik and column offsets c_j = sum_k w_jk - z_w[j] * K (``docs/quantization.md``
eq. (3)-(5)) the zero-point-corrected accumulator is::

    raw_ij = acc_ij - z_a * c_j - r_i * z_w[j]  =  sum_k (a_ik - z_a)(w_jk - z_w[j])

and one epilogue turns it into the output, fused into the same pass over each block of rows:
dynamic (float32 out), static float requantisation (uint8 out, FBGEMM's), or integer-only fixed-point
requantisation (gemmlowp / TFLite). There is one block loop, :func:`qgemm`; the epilogue is chosen by
the type of its parameter record (``DynamicEpilogue`` / ``RequantEpilogue`` / ``FixedPointEpilogue``)
when Numba compiles it, so every specialisation inlines a single epilogue (a function argument would
defeat ``cache=True``; an int mode would need all records to share one type). ``qgemm_dynamic``,
``qgemm_requant`` and ``qgemm_fixed_point`` build the record. Integers are widened explicitly
(``_mac32`` does the int32 multiply-add). Each kernel has a NumPy twin in ``reference.py``.

The accumulator block comes from the AVX-512 VNNI micro-kernel (``vnni.py``) or the AVX2 one (``avx2.py``)
when the weight was packed for them, else from the portable 4x4 register-tiled loops below. With ``pairs``
the block is summed in saturating int16 pairs, as fbgemm does on a CPU without VNNI (``host.py`` (P)) --
the AVX2 kernel's own arithmetic, which is why it takes exact blocks only when no code exceeds 128.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .avx2 import USE_AVX2, block_avx2, block_avx2_store
from .kernels import fma32
from .vnni import USE_VNNI, block_vnni, block_vnni_store

INT32_MIN = -2147483648


# ------------------------------------------------------------------------------------ int32 GEMM
@intrinsic
def _mac32(typingctx, acc, a, b):
    """acc + int32(a) * int32(b) in int32 (wrapping) arithmetic.

    Numba would widen ``int32 * int32`` to int64, which halves the SIMD width; emitting the int32 IR
    ourselves lets LLVM vectorise u8 x s8 dot products with vpmaddwd / vpdpwssd.
    """
    sig = types.int32(types.int32, a, b)

    def codegen(context, builder, signature, args):
        acc_v, a_v, b_v = args
        i32 = ir.IntType(32)
        a32 = builder.sext(a_v, i32) if signature.args[1].signed else builder.zext(a_v, i32)
        b32 = builder.sext(b_v, i32) if signature.args[2].signed else builder.zext(b_v, i32)
        return builder.add(acc_v, builder.mul(a32, b32))

    return sig, codegen


@njit(cache=True, inline="always")
def _tile4x4(a, b, i0, j0, acc, r0):
    """acc[r0:r0+4, j0:j0+4] = a[i0:i0+4] . b[j0:j0+4]^T over all k: 16 int32 accumulators in registers."""
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = np.int32(0)
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = np.int32(0)
    for k in range(b.shape[1]):
        x0, x1, x2, x3 = a[i0, k], a[i0 + 1, k], a[i0 + 2, k], a[i0 + 3, k]
        w0, w1, w2, w3 = b[j0, k], b[j0 + 1, k], b[j0 + 2, k], b[j0 + 3, k]
        c00, c01, c02, c03 = _mac32(c00, x0, w0), _mac32(c01, x0, w1), _mac32(c02, x0, w2), _mac32(c03, x0, w3)
        c10, c11, c12, c13 = _mac32(c10, x1, w0), _mac32(c11, x1, w1), _mac32(c12, x1, w2), _mac32(c13, x1, w3)
        c20, c21, c22, c23 = _mac32(c20, x2, w0), _mac32(c21, x2, w1), _mac32(c22, x2, w2), _mac32(c23, x2, w3)
        c30, c31, c32, c33 = _mac32(c30, x3, w0), _mac32(c31, x3, w1), _mac32(c32, x3, w2), _mac32(c33, x3, w3)
    acc[r0, j0], acc[r0, j0 + 1], acc[r0, j0 + 2], acc[r0, j0 + 3] = c00, c01, c02, c03
    acc[r0 + 1, j0], acc[r0 + 1, j0 + 1], acc[r0 + 1, j0 + 2], acc[r0 + 1, j0 + 3] = c10, c11, c12, c13
    acc[r0 + 2, j0], acc[r0 + 2, j0 + 1], acc[r0 + 2, j0 + 2], acc[r0 + 2, j0 + 3] = c20, c21, c22, c23
    acc[r0 + 3, j0], acc[r0 + 3, j0 + 1], acc[r0 + 3, j0 + 2], acc[r0 + 3, j0 + 3] = c30, c31, c32, c33


@njit(cache=True, inline="always")
def _dot(a, i, b, j):
    acc = np.int32(0)
    for k in range(b.shape[1]):
        acc = _mac32(acc, a[i, k], b[j, k])
    return acc


@njit(cache=True)
def _block_s32(a, b, i0, rows, acc):
    """acc[r, j] = sum_k a[i0 + r, k] * b[j, k] (int32, wrapping) for r < rows and every j.

    Loop order keeps 4 rows of b (4 * K bytes) hot in L1 while the 4x4 tile walks down the block.
    """
    n = b.shape[0]
    n4 = n - n % 4
    for j0 in range(0, n4, 4):
        r0 = 0
        while r0 + 4 <= rows:
            _tile4x4(a, b, i0 + r0, j0, acc, r0)
            r0 += 4
        for r in range(r0, rows):
            for j in range(j0, j0 + 4):
                acc[r, j] = _dot(a, i0 + r, b, j)
    for j in range(n4, n):
        for r in range(rows):
            acc[r, j] = _dot(a, i0 + r, b, j)


INT16_MIN, INT16_MAX = -32768, 32767


@njit(cache=True, inline="always")
def _pair(acc, a0, a1, w0, w1):
    """(acc + sat16(a0 w0 + a1 w1), whether the pair saturated): ``vpmaddubsw`` then ``vpmaddwd`` (host.py (P))."""
    p = _mac32(_mac32(np.int32(0), a0, w0), a1, w1)
    kept = min(max(p, np.int32(INT16_MIN)), np.int32(INT16_MAX))
    return acc + kept, p != kept


@njit(cache=True)
def _block_pairs(a, b, i0, rows, acc):
    """acc[r, j] = sum_p sat16(a[i0 + r, 2p] b[j, 2p] + a[i0 + r, 2p + 1] b[j, 2p + 1]) (host.py (P)), the last
    product alone when K is odd (it fits int16); returns how many accumulators differ from the exact sum."""
    k = b.shape[1]
    for r in range(rows):
        i = i0 + r
        for j in range(b.shape[0]):
            s = np.int32(0)
            for p in range(0, k - 1, 2):
                s, _ = _pair(s, a[i, p], a[i, p + 1], b[j, p], b[j, p + 1])
            if k % 2:
                s = _mac32(s, a[i, k - 1], b[j, k - 1])
            acc[r, j] = s
    return _changed(a, b, i0, rows, acc)


@njit(cache=True)
def _changed(a, b, i0, rows, acc):
    """How many accumulators of the block differ from the exact sum (after a pair kernel reached a limit)."""
    changed = 0
    for r in range(rows):
        for j in range(b.shape[0]):
            changed += acc[r, j] != _dot(a, i0 + r, b, j)
    return changed


@njit(cache=True, inline="always")
def _pairs_may_saturate(a, i0, rows, k):
    """Whether a pair sum of rows i0 .. i0 + rows can leave int16: only if some code exceeds 128, since
    |a w| <= 128 * 128 for codes up to 128 and int8 weights (uint8 a; an int8 a never takes (P))."""
    top = a[i0, 0] if rows > 0 and k > 0 else a.dtype.type(0)
    for r in range(rows):
        for p in range(k):
            v = a[i0 + r, p]
            top = v if v > top else top          # a max reduction, without an exit: it vectorises
    return top > 128


@njit(cache=True, inline="always")
def _row_sum(a, i):
    s = np.int32(0)
    for k in range(a.shape[1]):
        s += np.int32(a[i, k])
    return s


@njit(cache=True, inline="always")
def _zero_point_terms(a_zp, col_offsets, b_zp):
    """(z_a * c_j as int64 (N,), whether any z_w[j] != 0): the per-column part of eq. (5), once per call.
    With symmetric weights (every z_w = 0, the x86 default) the row sums r_i are never needed."""
    zc = np.int64(a_zp) * col_offsets.astype(np.int64)
    any_b_zp = False
    for j in range(b_zp.shape[0]):
        any_b_zp = any_b_zp or b_zp[j] != 0
    return zc, any_b_zp


BLOCK_ROWS = 16   # rows of a per parallel task (a multiple of the VNNI micro-tile's 8)


@njit(cache=True, inline="always")
def _gemm_block(a, b, bp, i0, rows, acc, pairs):
    """acc[r, j] = sum_k a[i0 + r, k] * b[j, k], or with ``pairs`` host.py's (P); returns how many accumulators
    (P) made differ from the exact sum. Kernels, when ``bp`` holds the packed weight (``vnni.pack_b``, uint8
    a only): exact sums on the VNNI micro-kernel; on the AVX2 one (``avx2.py``, which computes (P)) every (P)
    block, and exact blocks whose codes cannot saturate (none above 128); the portable loops otherwise.
    ``USE_VNNI`` / ``USE_AVX2`` are compile-time constants: branches the CPU cannot run are pruned."""
    if USE_VNNI:
        if bp.shape[0] > 0 and not pairs:
            block_vnni(a, bp, i0, rows, acc)
            return 0
    if USE_AVX2:
        if bp.shape[0] > 0:
            may = _pairs_may_saturate(a, i0, rows, b.shape[1])
            if pairs or not may:
                if block_avx2(a, bp, i0, rows, acc, pairs and may):
                    return _changed(a, b, i0, rows, acc)
                return 0
    if pairs and _pairs_may_saturate(a, i0, rows, b.shape[1]):
        return _block_pairs(a, b, i0, rows, acc)
    _block_s32(a, b, i0, rows, acc)
    return 0


@njit(cache=True, inline="always")
def _acc_buffer(n, bp):
    return np.empty((BLOCK_ROWS, max(n, bp.shape[0] * 16)), np.int32)


@njit(cache=True, parallel=True)
def gemm_s32(a, b, bp, pairs, out):
    """out = a @ b.T in int32, or with ``pairs`` host.py's (P); returns how many outputs (P) made differ from
    the exact sums. a: uint8/int8 (M, K); b: int8 (N, K); bp: its packing (``vnni.pack_b``, uint8 a only) or
    an empty (0, 0, 16, 4) array; out: int32 (M, N)."""
    m, n = a.shape[0], b.shape[0]
    blocks = (m + BLOCK_ROWS - 1) // BLOCK_ROWS
    changed = np.zeros(blocks, np.int64)
    for blk in prange(blocks):
        i0 = blk * BLOCK_ROWS
        rows = min(BLOCK_ROWS, m - i0)
        acc = _acc_buffer(n, bp)
        changed[blk] = _gemm_block(a, b, bp, i0, rows, acc, pairs)
        out[i0:i0 + rows] = acc[:rows, :n]
    return changed.sum()


# ------------------------------------------------------------------------------------ epilogues
@njit(cache=True, inline="always")
def dynamic_epilogue(raw, mult, bias, relu):
    """y = fma(fl32(raw), mult, bias) in float32 (FBGEMM ReQuantizeForFloat on AVX2/512); relu: max(0, y)."""
    y = fma32(np.float32(raw), mult, bias)
    return np.float32(0.0) if relu and y < 0 else y


@njit(cache=True, inline="always")
def requant_epilogue(raw, bias_term, mult, out_zp, lo):
    """q = clamp(rint((fl32(raw) + bias_term) * mult) + out_zp, lo, 255)  (FBGEMM ReQuantizeOutput).

    float32 add, float32 multiply, then x86 ``cvtps2dq`` (round half to even; NaN or outside int32 ->
    INT32_MIN) and the int16-saturating pack + zero point + uint8 clamp. All of that equals: an
    out-of-range or NaN value gives lo, anything else clamp(r + out_zp, lo, 255), with r first
    saturated to int16 as the pack does (which changes nothing after the clamp). lo = 0, or out_zp for
    a fused ReLU. Written with selects only, so that LLVM vectorises the loop.
    """
    r = np.rint((np.float32(raw) + bias_term) * mult)
    bad = not ((r >= np.float32(-2147483648.0)) & (r < np.float32(2147483648.0)))
    r = r if r > np.float32(-32768.0) else np.float32(-32768.0)
    r = r if r < np.float32(32767.0) else np.float32(32767.0)
    q = np.int32(r) + np.int32(out_zp)
    q = q if q > lo else np.int32(lo)
    q = q if q < 255 else np.int32(255)
    return np.int32(lo) if bad else q


@njit(cache=True, inline="always")
def _srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31) for int32 a, b (nudge +-2^30)."""
    if a == INT32_MIN and b == INT32_MIN:
        return np.int64(2147483647)
    ab = np.int64(a) * np.int64(b)
    t = ab + (np.int64(1 << 30) if ab >= 0 else np.int64(1 - (1 << 30)))
    return t // (1 << 31) if t >= 0 else -((-t) // (1 << 31))    # C division truncates toward zero


@njit(cache=True, inline="always")
def _rounding_divide_by_pot(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True, inline="always")
def fixed_point_epilogue(raw, bias_q, multiplier, shift, out_zp, lo):
    """q = clamp(out_zp + MultiplyByQuantizedMultiplier(raw + bias_q, multiplier, shift), lo, 255).

    Integer only (TFLite / gemmlowp): real multiplier = multiplier * 2^(shift - 31), multiplier in
    [2^30, 2^31). x * 2^max(shift, 0), rounding doubling high multiply, then a rounding right shift.
    """
    x = np.int64(np.int32(np.int64(raw) + bias_q))
    if shift > 0:
        x = np.int64(np.int32(x << shift))
    y = _rounding_divide_by_pot(_srdhm(x, multiplier), max(-shift, 0))
    return min(max(y + out_zp, lo), 255)


# ------------------------------------------------------------------------------------ fused GEMMs
class DynamicEpilogue(NamedTuple):
    """``dynamic_epilogue``: float32 out; mult, bias float32 (N,)."""
    mult: np.ndarray
    bias: np.ndarray
    relu: bool


class RequantEpilogue(NamedTuple):
    """``requant_epilogue``: uint8 out; bias_term, mult float32 (N,) from ``functional.requant_params``."""
    bias_term: np.ndarray
    mult: np.ndarray
    out_zp: int
    lo: int


class FixedPointEpilogue(NamedTuple):
    """``fixed_point_epilogue``: uint8 out; bias_q, multiplier, shift int (N,)."""
    bias_q: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    out_zp: int
    lo: int


def epilogue(ep, raw, j):
    """Output element of column j from raw_ij under the epilogue record ``ep`` (one of the three above).

    Inside Numba the record's type picks the function at compile time (the overload below), so each
    kernel specialisation has a single, inlined epilogue in its inner loop.
    """
    if isinstance(ep, DynamicEpilogue):
        return dynamic_epilogue(raw, ep.mult[j], ep.bias[j], ep.relu)
    if isinstance(ep, RequantEpilogue):
        return requant_epilogue(raw, ep.bias_term[j], ep.mult[j], ep.out_zp, ep.lo)
    return fixed_point_epilogue(raw, ep.bias_q[j], ep.multiplier[j], ep.shift[j], ep.out_zp, ep.lo)


@overload(epilogue, inline="always")
def _epilogue(ep, raw, j):
    kind = getattr(ep, "instance_class", None)
    if kind is DynamicEpilogue:
        return lambda ep, raw, j: dynamic_epilogue(raw, ep.mult[j], ep.bias[j], ep.relu)
    if kind is RequantEpilogue:
        return lambda ep, raw, j: requant_epilogue(raw, ep.bias_term[j], ep.mult[j], ep.out_zp, ep.lo)
    if kind is FixedPointEpilogue:
        return lambda ep, raw, j: fixed_point_epilogue(raw, ep.bias_q[j], ep.multiplier[j], ep.shift[j],
                                                       ep.out_zp, ep.lo)
    return None


PARALLEL_MIN_MACS = 1 << 18     # below this (~262k MACs) waking Numba's thread pool costs more than the work


def register_stored(ep, a, bp, i0, rows, zc32, acc, out) -> bool:
    """Whether the micro-kernel computed rows i0 .. i0 + rows of ``out`` and applied ``ep`` in its registers
    (``vnni.block_vnni_store``, else ``avx2.block_avx2_store``): it does for Requant and Dynamic epilogues, not
    for the fixed-point one (which then runs on the accumulator block). zc32 = z_a * c_j wrapped to int32.
    Inside Numba the record's type decides at compile time (the overload below)."""
    if isinstance(ep, FixedPointEpilogue):
        return False
    (block_vnni_store if USE_VNNI else block_avx2_store)(a, bp, i0, rows, acc, zc32, ep, out)
    return True


@overload(register_stored, inline="always")
def _register_stored(ep, a, bp, i0, rows, zc32, acc, out):
    if getattr(ep, "instance_class", None) in (RequantEpilogue, DynamicEpilogue):
        def stored(ep, a, bp, i0, rows, zc32, acc, out):
            if USE_VNNI:
                block_vnni_store(a, bp, i0, rows, acc, zc32, ep, out)
                return True
            block_avx2_store(a, bp, i0, rows, acc, zc32, ep, out)
            return True
        return stored
    return lambda ep, a, bp, i0, rows, zc32, acc, out: False


@njit(cache=True, inline="always")
def _in_registers(a, b, bp, i0, rows, any_b_zp, pairs, out):
    """Whether a SIMD micro-kernel's sums of rows i0 .. i0 + rows are the ones asked for and can go through
    ``register_stored``: symmetric weights, packed for the kernel, into an ``out`` of contiguous columns, and
    sums that are exact on VNNI, or on the AVX2 kernel's (P) where no code exceeds 128 (there (P) is exact)."""
    if USE_AVX2:                                   # every VNNI CPU has AVX2; the branch is pruned elsewhere
        if bp.shape[0] > 0 and not any_b_zp and out.strides[1] == out.itemsize:
            return (USE_VNNI and not pairs) or not _pairs_may_saturate(a, i0, rows, b.shape[1])
    return False


@njit(cache=True, inline="always")
def _qgemm_block(a, b, bp, i0, rows, zc, zc32, b_zp, any_b_zp, ep, pairs, acc, out):
    """Rows i0 .. i0 + rows of the fused GEMM: the accumulator block -- exact, or in saturating int16 pairs
    (host.py (P)) with ``pairs`` -- then raw_ij (eq. (5), wrapped to int32 like FBGEMM) and the epilogue,
    stored straight into ``out``. Returns how many accumulators (P) made differ from the exact sum.
    Where a SIMD kernel's sums are the ones asked for (``_in_registers``) there is no accumulator block: the
    kernel applies a Requant / Dynamic epilogue in its registers (``register_stored``)."""
    if _in_registers(a, b, bp, i0, rows, any_b_zp, pairs, out):
        if register_stored(ep, a, bp, i0, rows, zc32, acc, out):
            return 0
    clipped = _gemm_block(a, b, bp, i0, rows, acc, pairs)
    for r in range(rows):
        if any_b_zp:
            _store_row_zw(ep, acc[r], zc, np.int64(_row_sum(a, i0 + r)), b_zp, out[i0 + r])
        else:
            _store_row(ep, acc[r], zc, out[i0 + r])
    return clipped


@njit(cache=True, inline="always")
def _store_row(ep, acc_r, zc, out_r):
    """out_r[j] = epilogue(raw_j) with raw_j = acc_r[j] - zc[j] (symmetric weights): no int64 multiply in the
    loop, which then vectorises (AVX2 has none)."""
    for j in range(out_r.shape[0]):
        out_r[j] = epilogue(ep, np.int32(np.int64(acc_r[j]) - zc[j]), j)


@njit(cache=True)
def _store_row_zw(ep, acc_r, zc, rs, b_zp, out_r):
    """out_r[j] = epilogue(raw_j) with raw_j = acc_r[j] - zc[j] - rs * z_w[j] (eq. (5), weight zero points)."""
    for j in range(out_r.shape[0]):
        out_r[j] = epilogue(ep, np.int32(np.int64(acc_r[j]) - zc[j] - rs * b_zp[j]), j)


@njit(cache=True, inline="always")
def _qgemm_rows(a, b, bp, i0, i1, zc, zc32, b_zp, any_b_zp, ep, pairs, out):
    """Rows i0 .. i1 of the fused GEMM on the calling thread: one register-stored call for all of them where the
    kernel's sums are the ones asked for (``_in_registers``; a call per block cost as much as a small block's
    arithmetic), else block by block of ``BLOCK_ROWS`` rows (``_qgemm_block``). Returns ``_qgemm_block``'s count."""
    acc = _acc_buffer(b.shape[0], bp)
    if _in_registers(a, b, bp, i0, i1 - i0, any_b_zp, pairs, out):
        if register_stored(ep, a, bp, i0, i1 - i0, zc32, acc, out):
            return 0
    clipped = 0
    for r in range(i0, i1, BLOCK_ROWS):
        clipped += _qgemm_block(a, b, bp, r, min(BLOCK_ROWS, i1 - r), zc, zc32, b_zp, any_b_zp, ep, pairs, acc, out)
    return clipped


TASK_MIN_MACS = 1 << 17   # a parallel task takes whole blocks until it has this much work (~1 us on VNNI)


@njit(cache=True, parallel=True)
def _qgemm_parallel(a, b, bp, zc, zc32, b_zp, any_b_zp, ep, pairs, out):
    """``_qgemm_rows`` over ranges of whole blocks of at least ``TASK_MIN_MACS`` multiply-adds each (one block
    when a block has that many): small blocks are not each worth a task."""
    m = a.shape[0]
    blocks = (m + BLOCK_ROWS - 1) // BLOCK_ROWS
    block_macs = BLOCK_ROWS * b.shape[0] * max(b.shape[1], 1)
    per_task = min(max((TASK_MIN_MACS + block_macs - 1) // block_macs, 1), blocks)
    tasks = (blocks + per_task - 1) // per_task
    clipped = np.zeros(tasks, np.int64)
    for t in prange(tasks):
        i0 = t * per_task * BLOCK_ROWS
        clipped[t] = _qgemm_rows(a, b, bp, i0, min(m, i0 + per_task * BLOCK_ROWS), zc, zc32, b_zp, any_b_zp, ep,
                                 pairs, out)
    return clipped.sum()


@njit(cache=True)
def qgemm(a, b, bp, a_zp, col_offsets, b_zp, ep, pairs, out):
    """out[i, j] = epilogue(ep, raw_ij, j): the one block loop of every fused int8 GEMM. Returns how many
    accumulators the int16 pairs made differ from the exact sum (0 unless ``pairs``).

    a: uint8 (M, K') activations with zero point a_zp, K' >= K (columns past K must be 0: im2col pads
    K to the VNNI kernel's multiple of 4); b: int8 (N, K) weights, zero points b_zp (N,);
    bp: b packed for VNNI (``vnni.pack_b``) or empty (portable loops; same result);
    col_offsets[j] = sum_k b[j, k] - b_zp[j] * K (int32); ep: a Dynamic / Requant / FixedPoint
    epilogue record; pairs: accumulate as fbgemm without VNNI does (host.py (P)), else exactly;
    out: (M, N), float32 or uint8 as the epilogue produces. Problems of fewer than
    ``PARALLEL_MIN_MACS`` multiply-adds run on the calling thread (no thread-pool launch).
    """
    zc, any_b_zp = _zero_point_terms(a_zp, col_offsets, b_zp)
    zc32 = zc.astype(np.int32)                   # wrapped: raw = acc - zc32 in int32 has raw's residue
    if a.shape[0] * b.shape[0] * b.shape[1] >= PARALLEL_MIN_MACS:
        return _qgemm_parallel(a, b, bp, zc, zc32, b_zp, any_b_zp, ep, pairs, out)
    return _qgemm_rows(a, b, bp, 0, a.shape[0], zc, zc32, b_zp, any_b_zp, ep, pairs, out)


@njit(cache=True)
def qgemm_dynamic(a, b, bp, a_zp, col_offsets, b_zp, mult, bias, relu, pairs, out):
    """out[i, j] = dynamic_epilogue(raw_ij, mult[j], bias[j]) as float32 (M, N); mult = fl32(s_a * s_b[j])."""
    return qgemm(a, b, bp, a_zp, col_offsets, b_zp, DynamicEpilogue(mult, bias, relu), pairs, out)


@njit(cache=True)
def qgemm_requant(a, b, bp, a_zp, col_offsets, b_zp, bias_term, mult, out_zp, relu, pairs, out):
    """out[i, j] = requant_epilogue(raw_ij, bias_term[j], mult[j], out_zp) as uint8 (M, N) (eq. (7))."""
    return qgemm(a, b, bp, a_zp, col_offsets, b_zp, RequantEpilogue(bias_term, mult, out_zp, out_zp if relu else 0),
                 pairs, out)


@njit(cache=True)
def qgemm_fixed_point(a, b, bp, a_zp, col_offsets, b_zp, bias_q, multiplier, shift, out_zp, relu, pairs, out):
    """out[i, j] = fixed_point_epilogue(raw_ij, bias_q[j], multiplier[j], shift[j], out_zp) as uint8.

    bias_q: int32 (N,) bias in units of s_a * s_b[j]; multiplier int32 (N,), shift int (N,).
    """
    return qgemm(a, b, bp, a_zp, col_offsets, b_zp,
                 FixedPointEpilogue(bias_q, multiplier, shift, out_zp, out_zp if relu else 0), pairs, out)
