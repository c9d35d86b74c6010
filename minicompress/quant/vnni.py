"""An AVX-512 VNNI micro-kernel for the u8 x s8 -> int32 GEMM (used only when the CPU has it).

``vpdpbusd acc, a, b`` adds, in each of 16 int32 lanes, the four products of unsigned bytes of ``a``
with the signed bytes of ``b`` -- 64 exact multiply-adds per instruction, no saturation. Numba cannot
emit it from Python loops (LLVM picks ``vpdpwssd`` on zero-extended words, 1/8 of the work per
instruction), so this file writes the 8 x 32 micro-kernel in LLVM IR through ``numba.extending.intrinsic``.
The result is the same exact integer sum as the plain loops in ``gemm.py``; the tests hold both to
the int64 NumPy product.

Layouts (the "packed B" that fbgemm also builds once per weight)::

    bp[nb, t, c, u] = w[16 * nb + c, 4 * t + u]     int8 (N/16, K/4, 16, 4), zero padded to N % 16 == 0, K % 4 == 0
    a:  8 rows x K_pad uint8 (zero padded)

For each group t of 4 k's: broadcast the 4 bytes a[r, 4t:4t+4] to all lanes, and
``acc[r][h] = vpdpbusd(acc[r][h], bcast, bp[nb0 + h, t])`` for 8 rows r and 2 halves h: 16 zmm
accumulators, each lane one output column -- no horizontal sums.

Set ``MINICOMPRESS_VNNI=0`` to run as on a CPU without VNNI (the AVX2 kernels where the CPU has AVX2, else the
portable loops); the Numba cache is dropped when the setting changes (``_numba_cache``).
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import register_store
from .host import HAS_AVX512_VNNI

MR, NR = 8, 32        # micro-tile: rows of a, columns of the output

USE_VNNI = HAS_AVX512_VNNI and os.environ.get("MINICOMPRESS_VNNI", "1") != "0"


def pack_b(codes: np.ndarray) -> np.ndarray:
    """int8 (N, K) weight -> (N_pad/16, K_pad/4, 16, 4) VNNI layout (module docstring)."""
    n, k = codes.shape
    kp, np_ = -(-k // 4) * 4, -(-n // 16) * 16
    padded = np.zeros((np_, kp), np.int8)
    padded[:n, :k] = codes
    return np.ascontiguousarray(padded.reshape(np_ // 16, 16, kp // 4, 4).transpose(0, 2, 1, 3))


def _micro_kernel(halves: int, gathered: bool = False, store: bool = False):
    """The 8 x (16 * halves) micro-kernel as a Numba intrinsic (``_ukernel``: 32 columns; ``_ukernel16``: the 16
    of a last panel, for a weight of N % 32 == 16 columns -- a 16-channel layer would otherwise compute twice
    the columns it needs). ``gathered``: the rows start at bytes given one by one (``_ukernel_rows``).
    ``store``: the tile goes through an epilogue record in registers to the output (``register_store``) instead
    of being stored as int32 accumulators (``_ukernel_store`` ...)."""
    if store:
        def typer(typingctx, a, a0, lda, bp, nb0, acc, r0, col0, accumulate, zc, ep, out, orow, nrows):
            return _ukernel_typing(halves, gathered, a, a0, lda, bp, nb0, acc, r0, col0, accumulate,
                                   (zc, ep, out, orow, nrows))
    else:
        def typer(typingctx, a, a0, lda, bp, nb0, acc, r0, col0, accumulate):
            return _ukernel_typing(halves, gathered, a, a0, lda, bp, nb0, acc, r0, col0, accumulate, ())

    typer.__name__ = typer.__qualname__ = (f"ukernel_8x{16 * halves}{'_rows' if gathered else ''}"
                                           f"{'_store' if store else ''}")
    return intrinsic(typer)


def _ukernel_typing(halves, gathered, a, a0, lda, bp, nb0, acc, r0, col0, accumulate, store):
    """acc[r0 + r, col0 + j] (+)= sum_k a[a0 + r*lda + k] * w[16 * nb0 + j, k] for r < 8, j < 16 * halves, k < K
    (module docstring), K = 4 * bp.shape[1]; ``accumulate``: add to acc's values instead of replacing them.

    a: a uint8 array of any shape, read from its data pointer on; row r of the tile starts at byte a0 + r*lda and
    must have K readable bytes (an im2col matrix: lda = K_pad; a padded NHWC image: lda = stride * C,
    ``conv_implicit``). ``gathered``: a0 is an int64 array of 8 row starts and lda one offset added to each --
    row r starts at byte a0[r] + lda.
    ``store`` = (zc, ep, out, orow, nrows): the sums are not stored in acc but go through the epilogue record
    ep into out[orow + r, col0 + j] for r < nrows (``register_store``).
    """
    if store:
        register_store.check(store[1], store[0], store[2])
    sig = types.void(a, a0, lda, bp, nb0, acc, r0, col0, accumulate, *store)

    def codegen(context, builder, signature, args):
        a_v, a0_v, lda_v, bp_v, nb0_v, acc_v, r0_v, col0_v, accumulate_v = args[:9]
        A = context.make_array(signature.args[0])(context, builder, a_v)
        B = context.make_array(signature.args[3])(context, builder, bp_v)
        C = context.make_array(signature.args[5])(context, builder, acc_v)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        v16 = ir.VectorType(i32, 16)
        dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                                "llvm.x86.avx512.vpdpbusd.512")
        as64 = [builder.sext(v, i64) if v.type.width < 64 else v for v in (lda_v, nb0_v, r0_v, col0_v)]
        lda_64, nb0_64, r0_64, col0_64 = as64
        a0_64 = None if gathered else (builder.sext(a0_v, i64) if a0_v.type.width < 64 else a0_v)
        groups = builder.extract_value(B.shape, 1)                  # K / 4
        ldc = builder.extract_value(C.shape, 1)
        const = lambda v: ir.Constant(i64, v)                        # noqa: E731
        if gathered:
            starts = context.make_array(signature.args[1])(context, builder, a0_v).data
            rows = [builder.gep(A.data, [builder.add(builder.load(builder.gep(starts, [const(r)])), lda_64)])
                    for r in range(MR)]
        else:
            rows = [builder.gep(A.data, [builder.add(a0_64, builder.mul(const(r), lda_64))]) for r in range(MR)]
        panel = builder.mul(groups, const(64))                      # bytes per 16-column panel
        panels = [builder.gep(B.data, [builder.mul(builder.add(nb0_64, const(h)), panel)]) for h in range(halves)]
        zero = ir.Constant(v16, [0] * 16)
        acc_ptrs = [[builder.bitcast(builder.gep(C.data, [builder.add(builder.mul(builder.add(r0_64, const(r)), ldc),
                                                                      builder.add(col0_64, const(16 * h)))]),
                                     v16.as_pointer()) for h in range(halves)] for r in range(MR)]
        slots = [cgutils.alloca_once_value(builder, builder.select(accumulate_v, builder.load(p, align=4), zero))
                 for row in acc_ptrs for p in row]
        with cgutils.for_range(builder, groups) as loop:
            t = loop.index
            bvec = [builder.load(builder.bitcast(builder.gep(p, [builder.mul(t, const(64))]), v16.as_pointer()),
                                 align=1) for p in panels]
            for r in range(MR):
                word = builder.load(builder.bitcast(builder.gep(rows[r], [builder.mul(t, const(4))]),
                                                    i32.as_pointer()), align=1)
                lane0 = builder.insert_element(ir.Constant(v16, None), word, ir.Constant(i32, 0))
                bcast = builder.shuffle_vector(lane0, ir.Constant(v16, None), ir.Constant(v16, [0] * 16))
                for h in range(halves):
                    slot = slots[halves * r + h]
                    builder.store(builder.call(dpbusd, [builder.load(slot), bcast, bvec[h]]), slot)
        sums = [[builder.load(slots[halves * r + h]) for h in range(halves)] for r in range(MR)]
        if store:
            register_store.emit(context, builder, signature.args[9:], args[9:], sums, col0_64, 16)
        else:
            for r in range(MR):
                for h in range(halves):
                    builder.store(sums[r][h], acc_ptrs[r][h], align=4)
        return context.get_dummy_value()

    return sig, codegen


_ukernel = _micro_kernel(2)
_ukernel16 = _micro_kernel(1)
_ukernel_rows = _micro_kernel(2, gathered=True)
_ukernel16_rows = _micro_kernel(1, gathered=True)
_ukernel_store = _micro_kernel(2, store=True)
_ukernel16_store = _micro_kernel(1, store=True)
_ukernel_rows_store = _micro_kernel(2, gathered=True, store=True)
_ukernel16_rows_store = _micro_kernel(1, gathered=True, store=True)


@njit(cache=True, inline="always")
def panels(flat, a0, lda, bp, acc, r0, accumulate):
    """Every column panel of bp against one 8-row tile: 32 columns at a time, a last 16 alone."""
    ncols = bp.shape[0] * 16
    for jb in range(ncols // NR):
        _ukernel(flat, a0, lda, bp, jb * 2, acc, r0, jb * NR, accumulate)
    if ncols % NR:
        _ukernel16(flat, a0, lda, bp, ncols // 16 - 1, acc, r0, ncols - 16, accumulate)


@njit(cache=True, inline="always")
def panels_rows(flat, starts, offset, bp, acc, accumulate):
    """``panels`` for a tile whose 8 rows start at bytes starts[r] + offset (an implicit convolution's output
    positions, ``conv_implicit``)."""
    ncols = bp.shape[0] * 16
    for jb in range(ncols // NR):
        _ukernel_rows(flat, starts, offset, bp, jb * 2, acc, 0, jb * NR, accumulate)
    if ncols % NR:
        _ukernel16_rows(flat, starts, offset, bp, ncols // 16 - 1, acc, 0, ncols - 16, accumulate)


@njit(cache=True, inline="always")
def panels_store(flat, a0, lda, bp, acc, accumulate, zc, ep, out, orow, nrows):
    """``panels`` through the epilogue record ep in registers (``register_store``): out[orow + r] for r < nrows;
    ``accumulate`` adds acc[r] (rows from 0) to the sums first."""
    ncols = bp.shape[0] * 16
    for jb in range(ncols // NR):
        _ukernel_store(flat, a0, lda, bp, jb * 2, acc, 0, jb * NR, accumulate, zc, ep, out, orow, nrows)
    if ncols % NR:
        _ukernel16_store(flat, a0, lda, bp, ncols // 16 - 1, acc, 0, ncols - 16, accumulate, zc, ep, out, orow,
                         nrows)


@njit(cache=True, inline="always")
def panels_rows_store(flat, starts, offset, bp, acc, accumulate, zc, ep, out, orow, nrows):
    """``panels_rows`` with the register store of ``panels_store``."""
    ncols = bp.shape[0] * 16
    for jb in range(ncols // NR):
        _ukernel_rows_store(flat, starts, offset, bp, jb * 2, acc, 0, jb * NR, accumulate, zc, ep, out, orow, nrows)
    if ncols % NR:
        _ukernel16_rows_store(flat, starts, offset, bp, ncols // 16 - 1, acc, 0, ncols - 16, accumulate, zc, ep, out,
                              orow, nrows)


@njit(cache=True, inline="always")
def tile(a, i0, r0, rows, buf):
    """(array, byte offset of the first row) of the tile of rows i0 + r0 .. of a, buf.shape[0] rows of K_pad =
    buf.shape[1] bytes each: a itself when the tile is full and a's rows are K_pad contiguous bytes (a row stride
    of K_pad, whatever the layout Numba typed), else a zero-padded copy in buf. The micro-kernels read only the
    array's data pointer, so a matrix is read in place without a flat view (whose construction per tile cost
    as much as a small tile's arithmetic)."""
    mr, kp = buf.shape
    k = a.shape[1]
    rr = min(mr, rows - r0)
    if rr == mr and k == kp and a.strides[1] == a.itemsize and a.strides[0] == kp * a.itemsize:
        return a, (i0 + r0) * kp
    if rr < mr:
        buf[:, :] = 0
    buf[:rr, :k] = a[i0 + r0:i0 + r0 + rr]
    return buf, 0


@njit(cache=True)
def block_vnni(a, bp, i0, rows, acc):
    """acc[r, j] = sum_k a[i0 + r, k] * w[j, k] for r < rows (acc: >= roundup(rows, 8) rows, >= N_pad cols).

    Full 8-row tiles of an ``a`` whose K is a multiple of 4 and whose rows are contiguous are read in place;
    others go through a zero-padded 8 x K_pad copy (``tile``).
    """
    kp = bp.shape[1] * 4
    buf = np.zeros((MR, kp), a.dtype)
    for r0 in range(0, rows, MR):
        flat, start = tile(a, i0, r0, rows, buf)
        panels(flat, start, kp, bp, acc, r0, False)


@njit(cache=True)
def block_vnni_store(a, bp, i0, rows, acc, zc, ep, out):
    """out[i0 + r] = the epilogue record ep applied to rows i0 + r of a @ w^T for r < rows, in the micro-kernel's
    registers (``panels_store``; zc int32 (N,), acc: any int32 array of >= 8 rows and N_pad columns, read for its
    type only). Tiles are read as ``block_vnni`` reads them."""
    kp = bp.shape[1] * 4
    buf = np.zeros((MR, kp), a.dtype)
    for r0 in range(0, rows, MR):
        flat, start = tile(a, i0, r0, rows, buf)
        panels_store(flat, start, kp, bp, acc, False, zc, ep, out, i0 + r0, min(MR, rows - r0))
