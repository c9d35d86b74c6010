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

from .host import FEATURES
from .vnni import tile

MR = 4                 # rows of a per tile; the tile has 16 columns (one panel of ``vnni.pack_b``)
USE_AVX2 = bool(FEATURES.get("avx2", False))


def _micro_kernel(detect: bool):
    def typer(typingctx, a, a0, lda, bp, nb, acc, r0):
        return _ukernel_typing(detect, a, a0, lda, bp, nb, acc, r0)

    typer.__name__ = typer.__qualname__ = f"ukernel_avx2_4x16{'_detect' if detect else ''}"
    return intrinsic(typer)


def _ukernel_typing(detect, a, a0, lda, bp, nb, acc, r0):
    """acc[r0 + r, 16 nb + j] = (P) over k < K of a[a0 + r*lda + k] and w[16 nb + j, k], r < 4, j < 16,
    K = 4 * bp.shape[1]; returns whether an int16 pair sum reached a limit (always False without ``detect``).
    a: uint8 1-D (a flat view), each row with K readable bytes; acc: int32 (rows, >= 16 (nb + 1))."""
    sig = types.boolean(a, a0, lda, bp, nb, acc, r0)

    def codegen(context, builder, signature, args):
        a_v, a0_v, lda_v, bp_v, nb_v, acc_v, r0_v = args
        A = context.make_array(signature.args[0])(context, builder, a_v)
        B = context.make_array(signature.args[3])(context, builder, bp_v)
        C = context.make_array(signature.args[5])(context, builder, acc_v)
        i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v8, v16w, v32b = ir.VectorType(i32, 8), ir.VectorType(i16, 16), ir.VectorType(i8, 32)
        maddubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16w, [v32b, v32b]),
                                                 "llvm.x86.avx2.pmadd.ub.sw")
        maddwd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v16w, v16w]),
                                                "llvm.x86.avx2.pmadd.wd")
        a0_64, lda_64, nb_64, r0_64 = [builder.sext(v, i64) if v.type.width < 64 else v
                                       for v in (a0_v, lda_v, nb_v, r0_v)]
        groups = builder.extract_value(B.shape, 1)                  # K / 4
        ldc = builder.extract_value(C.shape, 1)
        const = lambda v: ir.Constant(i64, v)                        # noqa: E731
        rows = [builder.gep(A.data, [builder.add(a0_64, builder.mul(const(r), lda_64))]) for r in range(MR)]
        panel = builder.gep(B.data, [builder.mul(nb_64, builder.mul(groups, const(64)))])
        ones = ir.Constant(v16w, [1] * 16)
        lo, hi = ir.Constant(v16w, [-32768] * 16), ir.Constant(v16w, [32767] * 16)
        slots = [cgutils.alloca_once_value(builder, ir.Constant(v8, [0] * 8)) for _ in range(2 * MR)]
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
        for r in range(MR):
            base = builder.mul(builder.add(r0_64, const(r)), ldc)
            for h in range(2):
                idx = builder.add(base, builder.add(builder.mul(nb_64, const(16)), const(8 * h)))
                builder.store(builder.load(slots[2 * r + h]),
                              builder.bitcast(builder.gep(C.data, [idx]), v8.as_pointer()), align=4)
        at_limit = builder.or_(builder.icmp_signed("==", builder.load(low), lo),
                               builder.icmp_signed("==", builder.load(high), hi))
        bits = builder.bitcast(at_limit, ir.IntType(16))
        return builder.icmp_unsigned("!=", bits, ir.Constant(ir.IntType(16), 0))

    return sig, codegen


_ukernel = _micro_kernel(False)
_ukernel_detect = _micro_kernel(True)


@njit(cache=True)
def block_avx2(a, bp, i0, rows, acc, detect):
    """acc[r, j] = (P) of a[i0 + r] and w[j] for r < rows (acc: >= roundup(rows, 4) rows, >= N_pad columns);
    returns whether a pair sum reached an int16 limit (``detect`` only). Full 4-row tiles of an ``a`` whose K
    is a multiple of 4 are read in place; others go through a zero-padded 4 x K_pad copy (``vnni.tile``)."""
    kp = bp.shape[1] * 4
    buf = np.zeros((MR, kp), a.dtype)
    hit = False
    for r0 in range(0, rows, MR):
        flat, start = tile(a, i0, r0, rows, buf)
        for nb in range(bp.shape[0]):
            if detect:
                hit |= _ukernel_detect(flat, start, kp, bp, nb, acc, r0)
            else:
                _ukernel(flat, start, kp, bp, nb, acc, r0)
    return hit
