"""Dense int8 convolution as an implicit GEMM on the VNNI micro-kernel: no im2col matrix.

An im2col row of output position (b, y, xo) is, kernel row by kernel row, KW*C contiguous bytes of the padded
channels-last input: kernel row i reads xp[b, y*sh + i*dh, xo*sw : xo*sw + KW, :] (dilation_w = 1). Eight
neighbouring positions of one output row start sw*C bytes apart, which is exactly a tile of the micro-kernel
with row stride lda = sw*C (``vnni._ukernel``). So each tile of 8 positions accumulates KH micro-kernel calls,
one per kernel row against that row's slice of the weight (packed per row, ``pack_rows``), and then the
ordinary epilogue runs on the tile::

    acc[m, o] = sum_i sum_{k < KW*C} xp_i[m, k] * w[o, i, k]          (= the im2col GEMM's acc, same columns)
    out[m, o] = requant_epilogue(acc[m, o] - z_a c_o, bias_term[o], mult[o], z_out, lo)

with c_o = sum_k w[o, k] (weights symmetric, z_w = 0: the x86 default; otherwise ``functional.conv2d`` takes
the im2col path). When KW*C is not a multiple of 4 the packed rows are zero padded, and the kernel reads up to
3 bytes past a window: those meet zero weights. A last tile of fewer than 8 positions still reads 8 rows
(the others are dropped, never stored). Both only read the ``slack`` bytes that the caller's padded buffer
holds after the image (``PreparedConv2d`` allocates them; ``kernels.pad_nhwc_into`` fills the image). The
integers are the im2col path's exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import PARALLEL_MIN_MACS, requant_epilogue
from .vnni import MR, pack_b, panels

def applies(groups: int, dilation_w: int, zero_points: np.ndarray, vnni_packed: bool, out_width: int = 8) -> bool:
    """Whether conv2d takes this path: a dense convolution, unit column dilation, symmetric weights, VNNI, and
    output rows that fill the 8-position tiles to at least 80 % (narrow maps -- a ResNet's 4x4 and 2x2 stages --
    would waste most of each tile; im2col packs their rows densely)."""
    tiles = -(-out_width // MR) * MR
    return (groups == 1 and dilation_w == 1 and not np.any(zero_points) and vnni_packed
            and out_width >= 0.8 * tiles)


def pack_rows(codes: np.ndarray, kh: int) -> np.ndarray:
    """The (OC, KH*KW*C) weight codes (columns (i, j, c)) as KH VNNI panels, one per kernel row:
    (KH, N_pad/16, ceil(KW*C/4), 16, 4) int8."""
    return np.ascontiguousarray(np.stack([pack_b(np.ascontiguousarray(part)) for part in np.split(codes, kh, axis=1)]))


def slack(stride_w: int, channels: int) -> int:
    """Bytes a tile may read past the padded image: 8 rows stride*C apart, each up to 3 bytes past its window."""
    return MR * stride_w * channels + 4


@njit(cache=True)
def _conv_row(xp_flat, b, y, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, zc, bias_term, mult, out_zp, lo,
              out):
    """Output row (b, y): ceil(OW / 8) tiles of KH micro-kernel calls each, then the epilogue."""
    oc = out.shape[1]
    ncols = rows_packed.shape[1] * 16
    acc = np.empty((MR, ncols), np.int32)
    for xo0 in range(0, ow, MR):
        rows = min(MR, ow - xo0)
        for i in range(kh):
            base = ((b * hp + y * sh + i * dh) * wp + xo0 * sw) * c
            panels(xp_flat, base, sw * c, rows_packed[i], acc, 0, i > 0)
        row0 = (b * oh + y) * ow + xo0
        for r in range(rows):
            for o in range(oc):
                raw = np.int32(np.int64(acc[r, o]) - zc[o])
                out[row0 + r, o] = requant_epilogue(raw, bias_term[o], mult[o], out_zp, lo)


@njit(cache=True, parallel=True)
def _conv_parallel(xp_flat, n, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, zc, bias_term, mult, out_zp, lo,
                   out):
    for by in prange(n * oh):
        _conv_row(xp_flat, by // oh, by % oh, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, zc, bias_term,
                  mult, out_zp, lo, out)


@njit(cache=True)
def conv_requant(xp_flat, n, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, col_offsets, a_zp, bias_term, mult,
                 out_zp, relu, out):
    """The implicit GEMM (module docstring): xp_flat the padded NHWC image plus ``slack`` bytes; rows_packed
    from ``pack_rows``; col_offsets int32 (OC,) = sum_k w[o, k]; bias_term / mult float32 (OC,) (``functional.requant_params``);
    out uint8 (N*OH*OW, OC), NHWC rows. lo = out_zp for a fused ReLU, else 0. Fewer than
    ``PARALLEL_MIN_MACS`` multiply-adds run on the calling thread."""
    oc = out.shape[1]
    lo = np.int32(out_zp) if relu else np.int32(0)
    zc = np.empty(oc, np.int64)
    for o in range(oc):
        zc[o] = np.int64(a_zp) * col_offsets[o]
    if out.shape[0] * oc * kh * kw * c >= PARALLEL_MIN_MACS:
        _conv_parallel(xp_flat, n, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, zc, bias_term, mult, out_zp,
                       lo, out)
    else:
        for by in range(n * oh):
            _conv_row(xp_flat, by // oh, by % oh, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, zc, bias_term,
                      mult, out_zp, lo, out)
