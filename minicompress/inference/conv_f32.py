"""Float convolution as an implicit GEMM on a register-tiled micro-kernel: no im2col matrix.

An im2col row of output position p = (b, y, xo) is, kernel row by kernel row, KW*C contiguous values of the
zero-padded channels-last input xp (N, Hp, Wp, C) when the column dilation is 1: kernel row i reads
xp[b, y*sh + i*dh, xo*sw : xo*sw + KW, :], which starts ``i * dh * Wp * C`` values after kernel row 0's window.
So a tile of MR output positions (any MR positions: they need not share an output row) is MR base offsets,
and the micro-kernel sums, for MR rows and NR = LANES * halves output channels at once::

    acc[r, o] = sum_i sum_{k < KW*C} xp_flat[base_r + i * rstride + k] * w[o, i, k]        (columns (i, j, c))
    out[p_r, o] = clamp(acc[r, o] + bias[o], lo, hi)          (a fused ReLU / ReLU6; NaN stays NaN)

held in MR * halves vector registers (``llvm.fma`` on <LANES x float>, LANES = 16 with AVX-512, else 8: LLVM
lowers it to the host's widest FMA), one broadcast of an input value per row and one load of the weight
panel per k. The weight is packed once: ``pack(w)`` -> (OC_pad / LANES, KH*KW*C, LANES), zero columns past OC.

It is the float plans' dense convolution; the sums run in another order than the engine's im2col GEMM, so
results agree with it to float32 rounding (as any two BLAS calls do), not bit for bit.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import errors, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..quant.gemm import PARALLEL_MIN_MACS
from ..quant.host import FEATURES
from ..quant.kernels import pad_nhwc_into, window_starts
from .kernels import clamp

LANES = 16 if FEATURES.get("avx512f", False) else 8
MR = 8 if LANES == 16 else 6          # AVX-512: 8 x 32 in 16 zmm; AVX2: 6 x 16 in 12 ymm (+ weights, broadcast)


def pack(weight: np.ndarray) -> np.ndarray:
    """(OC, C, KH, KW) float weight -> (OC_pad / LANES, KH*KW*C, LANES) panels, columns in (i, j, c) order."""
    oc = weight.shape[0]
    cols = np.ascontiguousarray(weight.transpose(0, 2, 3, 1).reshape(oc, -1))       # (OC, KH*KW*C)
    ocp = -(-oc // LANES) * LANES
    padded = np.zeros((ocp, cols.shape[1]), weight.dtype)
    padded[:oc] = cols
    return np.ascontiguousarray(padded.reshape(ocp // LANES, LANES, -1).transpose(0, 2, 1))


@intrinsic
def _ukernel(typingctx, x, bases, kh, ki, rstride, wp, nb0, acc, col0, mr, halves):
    """acc[r, col0 + j] = sum_{i < kh} sum_{k < ki} x[bases[r] + i*rstride + k] * wp[nb0 + j // LANES, i*ki + k,
    j % LANES] for r < mr, j < LANES * halves (module docstring); mr <= MR and halves in (1, 2) compile-time
    constants. x float32 1-D, bases int64 (>= mr,), wp float32 from ``pack``, acc float32 (>= mr, >= col0 + LANES *
    halves)."""
    if not all(getattr(t, "dtype", None) == types.float32 for t in (x, wp, acc)):
        raise TypeError(f"float micro-kernel: x, wp and acc must be float32 arrays, got {x}, {wp}, {acc}")
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(halves, types.IntegerLiteral):
        raise errors.RequireLiteralValue("float micro-kernel: mr and halves must be constants")
    return _typing(mr.literal_value, halves.literal_value, x, bases, kh, ki, rstride, wp, nb0, acc, col0, mr, halves)


def _typing(nrows, halves, x, bases, kh, ki, rstride, wp, nb0, acc, col0, mr_t, halves_t):
    sig = types.void(x, bases, kh, ki, rstride, wp, nb0, acc, col0, mr_t, halves_t)

    def codegen(context, builder, signature, args):
        x_v, bases_v, kh_v, ki_v, rs_v, wp_v, nb0_v, acc_v, col0_v = args[:9]
        X = context.make_array(signature.args[0])(context, builder, x_v)
        Bs = context.make_array(signature.args[1])(context, builder, bases_v)
        W = context.make_array(signature.args[5])(context, builder, wp_v)
        C = context.make_array(signature.args[7])(context, builder, acc_v)
        i64 = ir.IntType(64)
        vec = ir.VectorType(ir.FloatType(), LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                             f"llvm.fma.v{LANES}f32")
        wide = lambda v: builder.sext(v, i64) if v.type.width < 64 else v     # noqa: E731
        const = lambda v: ir.Constant(i64, v)                                  # noqa: E731
        kh_64, ki_64, rs_64, nb0_64, col0_64 = (wide(v) for v in (kh_v, ki_v, rs_v, nb0_v, col0_v))
        rows = [builder.gep(X.data, [builder.load(builder.gep(Bs.data, [const(r)]))]) for r in range(nrows)]
        ktot = builder.extract_value(W.shape, 1)
        panel = builder.mul(ktot, const(LANES))
        panels = [builder.gep(W.data, [builder.mul(builder.add(nb0_64, const(h)), panel)]) for h in range(halves)]
        slots = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANES)) for _ in range(nrows * halves)]
        undef = ir.Constant(vec, None)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        with cgutils.for_range(builder, kh_64) as outer:
            off = builder.mul(outer.index, rs_64)
            wrow0 = builder.mul(outer.index, ki_64)
            with cgutils.for_range(builder, ki_64) as inner:
                k = inner.index
                woff = builder.mul(builder.add(wrow0, k), const(LANES))
                bvec = [builder.load(builder.bitcast(builder.gep(p, [woff]), vec.as_pointer()), align=4)
                        for p in panels]
                xoff = builder.add(off, k)
                for r in range(nrows):
                    scalar = builder.load(builder.gep(rows[r], [xoff]))
                    lane0 = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
                    bcast = builder.shuffle_vector(lane0, undef, splat)
                    for h in range(halves):
                        slot = slots[halves * r + h]
                        builder.store(builder.call(fma, [bcast, bvec[h], builder.load(slot)]), slot)
        ldc = builder.extract_value(C.shape, 1)
        for r in range(nrows):
            base = builder.mul(const(r), ldc)
            for h in range(halves):
                idx = builder.add(base, builder.add(col0_64, const(LANES * h)))
                builder.store(builder.load(slots[halves * r + h]),
                              builder.bitcast(builder.gep(C.data, [idx]), vec.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _sweep(x, bases, kh, ki, rstride, wpk, acc, mr):
    """acc[:mr] = the tile of mr rows against every panel: two at a time, a last one alone."""
    npanels = wpk.shape[0]
    for nb in range(0, npanels - 1, 2):
        _ukernel(x, bases, kh, ki, rstride, wpk, nb, acc, nb * LANES, mr, 2)
    if npanels % 2:
        _ukernel(x, bases, kh, ki, rstride, wpk, npanels - 1, acc, (npanels - 1) * LANES, mr, 1)


@njit(cache=True)
def _tiles(xp_flat, t0, t1, m, oh, ow, hp, wp_, c, kh, ki, sh, sw, rstride, wpk, bias, lo, hi, out):
    """Tiles t0 .. t1 - 1 of MR output positions each: window starts, the micro-kernel over every panel, the
    epilogue. A last tile of fewer than MR positions runs as tiles of 4, 2 and 1 rows (a batch of one image at
    1x1 would otherwise compute MR times its work)."""
    oc = out.shape[1]
    acc = np.empty((MR, wpk.shape[0] * LANES), out.dtype)
    bases = np.empty(MR, np.int64)
    for t in range(t0, t1):
        m0 = t * MR
        rows = min(MR, m - m0)
        window_starts(m0, rows, oh, ow, hp, wp_, sh, sw, c, bases)
        if rows == MR:
            _sweep(xp_flat, bases, kh, ki, rstride, wpk, acc, MR)
        else:
            if rows & 4:
                _sweep(xp_flat, bases, kh, ki, rstride, wpk, acc, 4)
            if rows & 2:
                r0 = rows & 4
                _sweep(xp_flat, bases[r0:], kh, ki, rstride, wpk, acc[r0:], 2)
            if rows & 1:
                _sweep(xp_flat, bases[rows - 1:], kh, ki, rstride, wpk, acc[rows - 1:], 1)
        for r in range(rows):
            for o in range(oc):
                out[m0 + r, o] = clamp(acc[r, o] + bias[o], lo, hi)


@njit(cache=True, parallel=True)
def _tiles_parallel(xp_flat, ntiles, chunk, m, oh, ow, hp, wp_, c, kh, ki, sh, sw, rstride, wpk, bias, lo, hi, out):
    for j in prange(-(-ntiles // chunk)):
        _tiles(xp_flat, j * chunk, min(ntiles, (j + 1) * chunk), m, oh, ow, hp, wp_, c, kh, ki, sh, sw, rstride,
               wpk, bias, lo, hi, out)


@njit(cache=True)
def conv2d_nhwc(xp, kh, kw, sh, sw, dh, oh, ow, wpk, bias, lo, hi, out):
    """The convolution (module docstring) of the zero-padded NHWC input xp (N, Hp, Wp, C), C-contiguous, with
    column dilation 1: out (N*OH*OW, OC) NHWC rows, = clamp(bias + sum over the taps, lo, hi); wpk from
    ``pack``. Fewer than ``PARALLEL_MIN_MACS`` multiply-adds run on the calling thread."""
    n, hp, wp_, c = xp.shape
    m = n * oh * ow
    ntiles = -(-m // MR)
    ki = kw * c
    flat = xp.reshape(-1)
    if m * out.shape[1] * kh * ki >= PARALLEL_MIN_MACS:
        _tiles_parallel(flat, ntiles, 16, m, oh, ow, hp, wp_, c, kh, ki, sh, sw, dh * wp_ * c, wpk, bias, lo, hi,
                        out)
    else:
        _tiles(flat, 0, ntiles, m, oh, ow, hp, wp_, c, kh, ki, sh, sw, dh * wp_ * c, wpk, bias, lo, hi, out)


@njit(cache=True)
def conv2d_step(x, geometry, padded, wpk, bias, lo, hi, out):
    """A float plan's convolution in one call (one dispatch, not two): x (N, H, W, C) C-contiguous; geometry int64
    (KH, KW, sh, sw, dh, ph, pw, OH, OW); with padding, x is first copied into the interior of ``padded``
    (N, H + 2ph, W + 2pw, C), whose zero border the caller wrote once; then ``conv2d_nhwc``."""
    kh, kw, sh, sw, dh, ph, pw, oh, ow = geometry
    xp = x
    if ph or pw:
        pad_nhwc_into(x, ph, pw, padded.reshape(-1))
        xp = padded
    conv2d_nhwc(xp, kh, kw, sh, sw, dh, oh, ow, wpk, bias, lo, hi, out)
