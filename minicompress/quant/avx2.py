"""An AVX2 micro-kernel for the u8 x s8 GEMM: fbgemm's (and MLAS's) arithmetic on CPUs without VNNI.

``vpmaddubsw t, a, b`` multiplies the 32 unsigned bytes of ``a`` by the 32 signed bytes of ``b`` and adds each
two neighbouring products into a *saturating* int16; ``vpmaddwd s, t, ones`` adds neighbouring int16 into an
exact int32. So one pair of instructions accumulates, per int32 lane (one output column), four k's::

    acc += sat16(a_4t b_4t + a_4t+1 b_4t+1) + sat16(a_4t+2 b_4t+2 + a_4t+3 b_4t+3)              (host.py (P))

which is the exact sum unless a pair leaves int16 -- only possible when an activation code exceeds 128.
The weight layout is the VNNI kernel's (``vnni.pack_b``: 4 k's of 16 columns per 64 bytes, two ymm of 8
columns each); a tile is 4 rows x 16 columns (8 accumulators, so that nothing spills from the 16 ymm
registers). With ``detect`` the kernel also reports whether any int16 pair sum reached -32768 or 32767: the
only ones that can have saturated (``gemm`` then measures what saturation changed on that block).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import register_store
from .host import FEATURES
from .vnni import tile

MR = 4                 # rows of a per tile; the tile has 16 columns (one panel of ``vnni.pack_b``)
USE_AVX2 = bool(FEATURES.get("avx2", False))


def _micro_kernel(detect: bool, gathered: bool = False, store: bool = False):
    """The 4 x 16 micro-kernel as a Numba intrinsic; ``detect``: report int16 limits (``_ukernel_detect``);
    ``gathered``: the rows start at bytes given one by one (``_ukernel_rows``, an implicit convolution's
    positions); ``store``: the tile goes through an epilogue record in registers to the output
    (``register_store``) instead of being stored as int32 accumulators."""
    if store:
        def typer(typingctx, a, a0, lda, bp, nb, acc, r0, accumulate, zc, ep, out, orow, nrows):
            return _ukernel_typing(detect, gathered, a, a0, lda, bp, nb, acc, r0, accumulate,
                                   (zc, ep, out, orow, nrows))
    else:
        def typer(typingctx, a, a0, lda, bp, nb, acc, r0, accumulate):
            return _ukernel_typing(detect, gathered, a, a0, lda, bp, nb, acc, r0, accumulate, ())

    typer.__name__ = typer.__qualname__ = (f"ukernel_avx2_4x16{'_detect' if detect else ''}"
                                           f"{'_rows' if gathered else ''}{'_store' if store else ''}")
    return intrinsic(typer)


def _ukernel_typing(detect, gathered, a, a0, lda, bp, nb, acc, r0, accumulate, store):
    """acc[r0 + r, 16 nb + j] (+)= (P) over k < K of a[a0 + r*lda + k] and w[16 nb + j, k], r < 4, j < 16,
    K = 4 * bp.shape[1]; returns whether an int16 pair sum reached a limit (always False without ``detect``).
    a: a uint8 array read from its data pointer on (``vnni.tile``), each row with K readable bytes;
    acc: int32 (rows, >= 16 (nb + 1));
    ``accumulate``: add to acc's values. ``gathered``: a0 is an int64 array of 4 row starts and lda one offset
    added to each. ``store`` = (zc, ep, out, orow, nrows): the sums go through the epilogue record ep into
    out[orow + r, 16 nb + j] for r < nrows (``register_store``) instead of into acc."""
    if store:
        register_store.check(store[1], store[0], store[2])
    sig = types.boolean(a, a0, lda, bp, nb, acc, r0, accumulate, *store)

    def codegen(context, builder, signature, args):
        a_v, a0_v, lda_v, bp_v, nb_v, acc_v, r0_v, accumulate_v = args[:8]
        A = context.make_array(signature.args[0])(context, builder, a_v)
        B = context.make_array(signature.args[3])(context, builder, bp_v)
        C = context.make_array(signature.args[5])(context, builder, acc_v)
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v8, v16w, v32b = ir.VectorType(i32, 8), ir.VectorType(i16, 16), ir.VectorType(i8, 32)
        maddubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16w, [v32b, v32b]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
        maddwd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v16w, v16w]),
                                                "llvm.x86.avx2.pmadd.wd")
        lda_64, nb_64, r0_64 = [builder.sext(v, i64) if v.type.width < 64 else v for v in (lda_v, nb_v, r0_v)]
        groups = builder.extract_value(B.shape, 1)                  # K / 4
        ldc = builder.extract_value(C.shape, 1)
        const = lambda v: ir.Constant(i64, v)                        # noqa: E731
        if gathered:
            starts = context.make_array(signature.args[1])(context, builder, a0_v).data
            rows = [builder.gep(A.data, [builder.add(builder.load(builder.gep(starts, [const(r)])), lda_64)])
                    for r in range(MR)]
        else:
            a0_64 = builder.sext(a0_v, i64) if a0_v.type.width < 64 else a0_v
            rows = [builder.gep(A.data, [builder.add(a0_64, builder.mul(const(r), lda_64))]) for r in range(MR)]
        panel = builder.gep(B.data, [builder.mul(nb_64, builder.mul(groups, const(64)))])
        ones = ir.Constant(v16w, [1] * 16)
        lo, hi = ir.Constant(v16w, [-32768] * 16), ir.Constant(v16w, [32767] * 16)
        zero = ir.Constant(v8, [0] * 8)
        acc_ptrs = [[builder.bitcast(builder.gep(C.data, [builder.add(builder.mul(builder.add(r0_64, const(r)), ldc),
                                                                      builder.add(builder.mul(nb_64, const(16)),
                                                                                  const(8 * h)))]),
                                     v8.as_pointer()) for h in range(2)] for r in range(MR)]
        slots = [cgutils.alloca_once_value(builder, builder.select(accumulate_v, builder.load(p, align=4), zero))
                 for row in acc_ptrs for p in row]
        low = cgutils.alloca_once_value(builder, ir.Constant(v16w, [0] * 16))        # running min / max of the
        high = cgutils.alloca_once_value(builder, ir.Constant(v16w, [0] * 16))       # pair sums, per lane
        with cgutils.for_range(builder, groups) as loop:
            t = loop.index
            bvec = [builder.load(builder.bitcast(builder.gep(panel, [builder.add(builder.mul(t, const(64)),
                                                                                  const(32 * h))]),
                                                 v32b.as_pointer()), align=1) for h in range(2)]
            for r in range(MR):
                word = builder.load(builder.bitcast(builder.gep(rows[r], [builder.mul(t, const(4))]),
                                                    i32.as_pointer()), align=1)
                lane0 = builder.insert_element(ir.Constant(v8, None), word, ir.Constant(i32, 0))
                bcast = builder.bitcast(builder.shuffle_vector(lane0, ir.Constant(v8, None),
                                                               ir.Constant(v8, [0] * 8)), v32b)
                for h in range(2):
                    pairs = builder.call(maddubs, [bcast, bvec[h]])
                    if detect:
                        old_low, old_high = builder.load(low), builder.load(high)
                        builder.store(builder.select(builder.icmp_signed("<", pairs, old_low), pairs, old_low), low)
                        builder.store(builder.select(builder.icmp_signed(">", pairs, old_high), pairs, old_high),
                                      high)
                    slot = slots[2 * r + h]
                    builder.store(builder.add(builder.load(slot), builder.call(maddwd, [pairs, ones])), slot)
        sums = [[builder.load(slots[2 * r + h]) for h in range(2)] for r in range(MR)]
        if store:
            register_store.emit(context, builder, signature.args[8:], args[8:], sums, builder.mul(nb_64, const(16)),
                                8)
        else:
            for r in range(MR):
                for h in range(2):
                    builder.store(sums[r][h], acc_ptrs[r][h], align=4)
        at_limit = builder.or_(builder.icmp_signed("==", builder.load(low), lo),
                               builder.icmp_signed("==", builder.load(high), hi))
        bits = builder.bitcast(at_limit, ir.IntType(16))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(16), 0))

    return sig, codegen


_ukernel = _micro_kernel(False)
_ukernel_detect = _micro_kernel(True)
_ukernel_store = _micro_kernel(False, store=True)
_ukernel_rows = _micro_kernel(False, gathered=True)
_ukernel_rows_store = _micro_kernel(False, gathered=True, store=True)


@njit(cache=True)
def block_avx2(a, bp, i0, rows, acc, detect):
    """acc[r, j] = (P) of a[i0 + r] and w[j] for r < rows (acc: >= roundup(rows, 4) rows, >= N_pad columns);
    returns whether a pair sum reached an int16 limit (``detect`` only). Full 4-row tiles of an ``a`` whose K
    is a multiple of 4 and whose rows are contiguous are read in place; others go through a zero-padded
    4 x K_pad copy (``vnni.tile``)."""
    kp = bp.shape[1] * 4
    buf = np.zeros((MR, kp), a.dtype)
    hit = False
    for r0 in range(0, rows, MR):
        flat, start = tile(a, i0, r0, rows, buf)
        for nb in range(bp.shape[0]):
            if detect:
                hit |= _ukernel_detect(flat, start, kp, bp, nb, acc, r0, False)
            else:
                _ukernel(flat, start, kp, bp, nb, acc, r0, False)
    return hit


@njit(cache=True)
def block_avx2_store(a, bp, i0, rows, acc, zc, ep, out):
    """out[i0 + r] = the epilogue record ep applied to (P) of rows i0 + r of a and w, r < rows, in the
    micro-kernel's registers (``register_store``; zc int32 (N,), acc: any int32 array of >= 4 rows and N_pad
    columns, read for its type only). Exact sums when no code exceeds 128 (the caller's condition)."""
    kp = bp.shape[1] * 4
    buf = np.zeros((MR, kp), a.dtype)
    for r0 in range(0, rows, MR):
        flat, start = tile(a, i0, r0, rows, buf)
        for nb in range(bp.shape[0]):
            _ukernel_store(flat, start, kp, bp, nb, acc, 0, False, zc, ep, out, i0 + r0, min(MR, rows - r0))


@njit(cache=True, inline="always")
def panels_rows(flat, starts, offset, bp, acc, accumulate):
    """acc[r, :N_pad] (+)= (P) of the 4 rows starting at bytes starts[r] + offset against every panel of bp
    (``vnni.panels_rows``' contract on this kernel)."""
    for nb in range(bp.shape[0]):
        _ukernel_rows(flat, starts, offset, bp, nb, acc, 0, accumulate)


@njit(cache=True, inline="always")
def panels_rows_store(flat, starts, offset, bp, acc, accumulate, zc, ep, out, orow, nrows):
    """``panels_rows`` through the epilogue record ep in registers into out[orow + r] for r < nrows."""
    for nb in range(bp.shape[0]):
        _ukernel_rows_store(flat, starts, offset, bp, nb, acc, 0, accumulate, zc, ep, out, orow, nrows)
