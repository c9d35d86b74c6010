"""Dense int8 convolution as an implicit GEMM on the int8 micro-kernels: no im2col matrix.

An im2col row of output position p = (b, y, xo) is, kernel row by kernel row, KW*C contiguous bytes of the padded
channels-last input: kernel row i reads xp[b, y*sh + i*dh, xo*sw : xo*sw + KW, :] (dilation_w = 1), which starts
i*dh*Wp*C bytes after kernel row 0's window. So a tile of any MR output positions -- consecutive in (b, y, xo)
order, across output rows and samples, so that the narrow maps of a ResNet's last stages fill their tiles -- is MR
start bytes, and accumulates KH micro-kernel calls (``panels_rows``), one per kernel row against that row's slice
of the weight (packed per row, ``pack_rows``); the last call applies the ordinary epilogue to the sums in its
registers and stores the codes (``panels_rows_store``, ``register_store``)::

    acc[m, o] = sum_i sum_{k < KW*C} xp_i[m, k] * w[o, i, k]          (= the im2col GEMM's acc, same columns)
    out[m, o] = requant_epilogue(acc[m, o] - z_a c_o, bias_term[o], mult[o], z_out, lo)

with c_o = sum_k w[o, k] (weights symmetric, z_w = 0: the x86 default; otherwise ``functional.conv2d`` takes
the im2col path). The micro-kernel is the VNNI one (``vnni.py``, MR = 8, exact sums), else the AVX2 one
(``avx2.py``, MR = 4), whose int16 pair sums are exact only while no code exceeds 128: ``conv_requant`` then
refuses an input with a larger code (the x86 qconfig's activations take 0..127, so it rarely does). When KW*C is
not a multiple of 4 the packed rows are zero padded, and the kernel reads up to 3 bytes past a window: those meet
zero weights. A last tile of fewer than MR positions repeats its last position (computed, never stored: the store
is masked to the tile's rows). Reading past a window needs the ``SLACK`` bytes that the caller's padded buffer
holds after the image (``PreparedConv2d`` allocates them; ``kernels.pad_nhwc_into`` fills the image). The
integers are the im2col path's exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import avx2, vnni
from .gemm import PARALLEL_MIN_MACS, RequantEpilogue
from .kernels import window_starts
from .vnni import USE_VNNI, pack_b

# the micro-kernel of this CPU: VNNI's 8 x 32 tiles, else AVX2's 4 x 16 ((P) sums: exact for codes <= 128)
MR = vnni.MR if USE_VNNI else avx2.MR
panels_rows = vnni.panels_rows if USE_VNNI else avx2.panels_rows
panels_rows_store = vnni.panels_rows_store if USE_VNNI else avx2.panels_rows_store

def applies(groups: int, dilation_w: int, zero_points: np.ndarray, rows_packed: bool) -> bool:
    """Whether conv2d takes this path: a dense convolution, unit column dilation, symmetric weights, the weight
    packed per kernel row (``pack_rows``: on a CPU with VNNI or AVX2)."""
    return groups == 1 and dilation_w == 1 and not np.any(zero_points) and rows_packed


def pack_rows(codes: np.ndarray, kh: int) -> np.ndarray:
    """The (OC, KH*KW*C) weight codes (columns (i, j, c)) as KH VNNI panels, one per kernel row:
    (KH, N_pad/16, ceil(KW*C/4), 16, 4) int8."""
    return np.ascontiguousarray(np.stack([pack_b(np.ascontiguousarray(part)) for part in np.split(codes, kh, axis=1)]))


SLACK = 4
"""Bytes a tile may read past the padded image: up to 3 past a window (KW*C rounded up to 4)."""


@njit(cache=True)
def _tiles(xp_flat, t0, t1, m, oh, ow, hp, wp, c, kh, sh, sw, rstride, rows_packed, zc, ep, out):
    """Tiles t0 .. t1 - 1 of MR output positions: start bytes, KH micro-kernel calls, the last one applying the
    requantisation record ep to the sums in its registers and storing the codes (``panels_rows_store``)."""
    acc = np.empty((MR, rows_packed.shape[1] * 16), np.int32)
    starts = np.empty(MR, np.int64)
    for t in range(t0, t1):
        m0 = t * MR
        rows = min(MR, m - m0)
        window_starts(m0, rows, oh, ow, hp, wp, sh, sw, c, starts)
        for i in range(kh - 1):
            panels_rows(xp_flat, starts, i * rstride, rows_packed[i], acc, i > 0)
        panels_rows_store(xp_flat, starts, (kh - 1) * rstride, rows_packed[kh - 1], acc, kh > 1, zc, ep, out, m0,
                          rows)


@njit(cache=True, parallel=True)
def _tiles_parallel(xp_flat, ntiles, chunk, m, oh, ow, hp, wp, c, kh, sh, sw, rstride, rows_packed, zc, ep, out):
    for j in prange(-(-ntiles // chunk)):
        _tiles(xp_flat, j * chunk, min(ntiles, (j + 1) * chunk), m, oh, ow, hp, wp, c, kh, sh, sw, rstride,
               rows_packed, zc, ep, out)


@njit(cache=True)
def _max_code(xp_flat):
    top = np.uint8(0)
    for v in xp_flat:
        top = max(top, v)
    return top


@njit(cache=True)
def conv_requant(xp_flat, n, hp, wp, c, kh, kw, sh, sw, dh, oh, ow, rows_packed, col_offsets, a_zp, bias_term, mult,
                 out_zp, relu, out):
    """The implicit GEMM (module docstring): xp_flat the padded NHWC image plus ``SLACK`` bytes; rows_packed
    from ``pack_rows``; col_offsets int32 (OC,) = sum_k w[o, k]; bias_term / mult float32 (OC,) (``functional.requant_params``);
    out uint8 (N*OH*OW, OC), NHWC rows. lo = out_zp for a fused ReLU, else 0. Fewer than
    ``PARALLEL_MIN_MACS`` multiply-adds run on the calling thread. Returns False, computing nothing, where the
    kernel's sums would not be exact: on the AVX2 kernel when a code of xp_flat exceeds 128 (its int16 pairs
    could saturate, ``host.py`` (P)); the caller then takes im2col, whose GEMM reproduces them."""
    if not USE_VNNI:
        if _max_code(xp_flat) > 128:
            return False
    oc = out.shape[1]
    if out.strides[1] != 1:
        raise ValueError("conv_requant: out's columns must be contiguous")
    ep = RequantEpilogue(bias_term, mult, np.int32(out_zp), np.int32(out_zp) if relu else np.int32(0))
    zc = np.empty(oc, np.int32)
    for o in range(oc):
        zc[o] = np.int32(np.int64(a_zp) * col_offsets[o])        # wrapped: acc - zc in int32 has raw's residue
    m = n * oh * ow
    ntiles = -(-m // MR)
    if m * oc * kh * kw * c >= PARALLEL_MIN_MACS:
        _tiles_parallel(xp_flat, ntiles, 8, m, oh, ow, hp, wp, c, kh, sh, sw, dh * wp * c, rows_packed, zc, ep, out)
    else:
        _tiles(xp_flat, 0, ntiles, m, oh, ow, hp, wp, c, kh, sh, sw, dh * wp * c, rows_packed, zc, ep, out)
    return True
