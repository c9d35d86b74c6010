"""Convolutions as forward/backward pairs, by im2col and one matrix product per group and sample.

The column matrix of sample n lists, for every output position, the input values its kernel sees:

    cols[n, (c, p, q), (i, j)] = xp[n, c, i*sh + p*dh, j*sw + q*dw]      (1)
    cols: (N, C*KH*KW, OH*OW),   xp = x zero-padded

so that a convolution is y[n] = W cols[n] (per group), and the output comes out in (N, O, OH, OW)
order without a transpose. Conv1d is the same computation with H = 1 (one formula, one place).

Padding is given per spatial axis as an int (both sides) or a (before, after) pair, which is what
``padding='same'`` needs for even kernels (PyTorch puts the extra row/column after).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import kernels

Pads = Sequence["int | tuple[int, int]"]
SMALL_MAP = 256   # output positions per channel up to which col2im runs the Numba kernel (bench/engine.py)


def pad_pairs(padding: Pads) -> tuple[tuple[int, int], ...]:
    """Per-axis padding as (before, after) pairs: ``(1, (0, 1))`` -> ``((1, 1), (0, 1))``."""
    return tuple((p, p) if np.isscalar(p) else (int(p[0]), int(p[1])) for p in padding)


def conv_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int) -> int:
    """OH = floor((H + pad_before + pad_after - dh*(KH - 1) - 1) / sh) + 1."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def _pad(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` (no copy when there is nothing to pad)."""
    if not any(pads[0] + pads[1]):
        return x
    return np.pad(x, ((0, 0), (0, 0)) + tuple(pads), constant_values=value)


def im2col(xp: np.ndarray, kernel: tuple[int, int], out: tuple[int, int],
           stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """The column matrices (1) of a padded input xp: (N, C, Hp, Wp) -> (N, C*KH*KW, OH*OW)."""
    N, C = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    windows = as_strided(xp, shape=(N, C, kernel[0], kernel[1], out[0], out[1]),
                         strides=(sN, sC, dilation[0] * sH, dilation[1] * sW, stride[0] * sH, stride[1] * sW),
                         writeable=False)
    return windows.reshape(N, C * kernel[0] * kernel[1], out[0] * out[1])  # one copy


def col2im(dcols: np.ndarray, x_shape: tuple[int, ...], pads: tuple[tuple[int, int], tuple[int, int]],
           kernel: tuple[int, int], out: tuple[int, int],
           stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """Adjoint of ``im2col``: add every column entry back onto the input pixel it was read from.

    One strided slice per kernel offset (p, q), which is much faster than ``np.add.at``.
    dcols: (N, C*KH*KW, OH*OW)  ->  dx: (N, C, H, W) (a view into the padded buffer when padded)
    """
    N, C, H, W = x_shape
    (top, bottom), (left, right) = pads
    KH, KW = kernel
    dcols = dcols.reshape(N, C, KH, KW, out[0], out[1])
    dxp = np.zeros((N, C, H + top + bottom, W + left + right), dtype=dcols.dtype)
    if out[0] * out[1] <= SMALL_MAP:      # small maps: one Numba pass beats KH*KW strided NumPy adds
        kernels.col2im_add(np.ascontiguousarray(dcols), dxp, stride[0], stride[1], dilation[0], dilation[1])
        return dxp[:, :, top:top + H, left:left + W]
    for p in range(KH):
        rows = slice(p * dilation[0], p * dilation[0] + stride[0] * (out[0] - 1) + 1, stride[0])
        for q in range(KW):
            cols = slice(q * dilation[1], q * dilation[1] + stride[1] * (out[1] - 1) + 1, stride[1])
            dxp[:, :, rows, cols] += dcols[:, :, p, q]
    return dxp[:, :, top:top + H, left:left + W]


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                   stride: tuple[int, int] = (1, 1), padding: Pads = (0, 0),
                   dilation: tuple[int, int] = (1, 1), groups: int = 1) -> tuple[np.ndarray, tuple]:
    """y[n, o, i, j] = b[o] + sum_{c, p, q} W[o, c, p, q] * xp[n, g*Cg + c, i*sh + p*dh, j*sw + q*dw]

    where g = o // (O/G) is the group of output channel o and Cg = C/G its input channels.
    Per sample n and group g, with (1):   y[n, g] = W_g cols[n, g]
        W_g: (O/G, Cg*KH*KW)   cols[n, g]: (Cg*KH*KW, OH*OW)   y[n, g]: (O/G, OH*OW)

    x: (N, C, H, W)   W: (O, C/G, KH, KW)   b: (O,) or None   ->   y: (N, O, OH, OW)
    with OH = floor((H + pad_top + pad_bottom - dh*(KH - 1) - 1) / sh) + 1 (same for OW).
    Returns ``(y, cache)``.
    """
    N, C, H, W = x.shape
    O, Cg, KH, KW = weight.shape
    G = groups
    pads = pad_pairs(padding)
    OH = conv_output_size(H, KH, stride[0], pads[0], dilation[0])
    OW = conv_output_size(W, KW, stride[1], pads[1], dilation[1])
    cols = im2col(_pad(x, pads), (KH, KW), (OH, OW), stride, dilation)
    cols = cols.reshape(N, G, Cg * KH * KW, OH * OW)
    w = weight.reshape(G, O // G, Cg * KH * KW)
    y = np.matmul(w, cols).reshape(N, O, OH, OW)  # (N, G, O/G, OH*OW): one BLAS call per sample and group
    if bias is not None:
        y += bias.reshape(1, O, 1, 1)
    return y, (x.shape, cols, weight, stride, pads, dilation)


def conv2d_backward(dy: np.ndarray, cache: tuple,
                    needs_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Per sample n and group g, with dy[n, g]: (O/G, OH*OW):

    dW_g = sum_n dy[n, g] cols[n, g]^T      dcols[n, g] = W_g^T dy[n, g]      dx = col2im(dcols)
    db[o] = sum_{n, i, j} dy[n, o, i, j]

    dy: (N, O, OH, OW)  ->  dx: (N, C, H, W) (None unless ``needs_input_grad``),  dW: (O, C/G, KH, KW),  db: (O,)
    """
    x_shape, cols, weight, stride, pads, dilation = cache
    N, G = cols.shape[:2]
    O, Cg, KH, KW = weight.shape
    OH, OW = dy.shape[2:]
    dy_g = dy.reshape(N, G, O // G, OH * OW)
    db = dy.sum(axis=(0, 2, 3))
    dW = np.matmul(dy_g, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(weight.shape)
    if not needs_input_grad:
        return None, dW, db
    w = weight.reshape(G, O // G, Cg * KH * KW)
    dcols = np.matmul(w.transpose(0, 2, 1), dy_g)  # (N, G, Cg*KH*KW, OH*OW)
    dx = col2im(dcols.reshape(N, -1, OH * OW), x_shape, pads, (KH, KW), (OH, OW), stride, dilation)
    return dx, dW, db


def conv1d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                   stride: int = 1, padding: "int | tuple[int, int]" = 0,
                   dilation: int = 1, groups: int = 1) -> tuple[np.ndarray, tuple]:
    """y[n, o, i] = b[o] + sum_{c, p} W[o, c, p] * xp[n, g*Cg + c, i*s + p*d]:  ``conv2d_forward`` with H = 1.

    x: (N, C, L)   W: (O, C/G, K)   ->   y: (N, O, OL)
    """
    y, cache = conv2d_forward(x[:, :, None, :], weight[:, :, None, :], bias,
                              (1, stride), (0, padding), (1, dilation), groups)
    return y[:, :, 0, :], cache


def conv1d_backward(dy: np.ndarray, cache: tuple,
                    needs_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``conv2d_backward`` with H = 1.   dy: (N, O, OL) -> dx: (N, C, L), dW: (O, C/G, K), db: (O,)"""
    dx, dW, db = conv2d_backward(dy[:, :, None, :], cache, needs_input_grad)
    return (None if dx is None else dx[:, :, 0, :]), dW[:, :, 0, :], db
