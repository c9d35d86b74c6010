"""Convolutions as forward/backward pairs, by im2col and one matrix product per group.

The column matrix lists, for every output position of every sample, the input values its kernel sees:

    cols[(c, p, q), (n, i, j)] = xp[n, c, i*sh + p*dh, j*sw + q*dw]      (1)
    cols: (C*KH*KW, N*OH*OW),   xp = x zero-padded

so that a convolution is one GEMM per group over the whole batch, y[:, g] = W_g cols_g, and its
backward two more (dW_g = dy_g cols_g^T, dcols_g = W_g^T dy_g). The batch sits in the columns, so the
GEMMs are large even on 8x8 maps; the price is one transpose of y (and of dy) between (O, N, OH, OW)
and the engine's (N, O, OH, OW). ``im2col_batch`` builds (1) with one strided copy; its adjoint, the
scatter-add ``col2im``, runs as the Numba kernel ``kernels.col2im``. ``im2col`` / ``col2im`` below are
the same two maps in the per-sample layout cols[n, (c, p, q), (i, j)], in plain NumPy: ``col2im`` is the
kernel's twin, bit for bit.
Conv1d is the same computation with H = 1 (one formula, one place).

Padding is given per spatial axis as an int (both sides) or a (before, after) pair, which is what
``padding='same'`` needs for even kernels (PyTorch puts the extra row/column after).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import kernels

Pads = Sequence["int | tuple[int, int]"]


def pad_pairs(padding: Pads) -> tuple[tuple[int, int], ...]:
    """Per-axis padding as (before, after) pairs: ``(1, (0, 1))`` -> ``((1, 1), (0, 1))``."""
    return tuple((p, p) if np.isscalar(p) else (int(p[0]), int(p[1])) for p in padding)


def conv_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int) -> int:
    """OH = floor((H + pad_before + pad_after - dh*(KH - 1) - 1) / sh) + 1."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def _pad(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """x zero-padded on its last two axes (x itself when there is nothing to pad)."""
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x
    N, C, H, W = x.shape
    xp = np.zeros((N, C, H + top + bottom, W + left + right), dtype=x.dtype)
    xp[:, :, top:top + H, left:left + W] = x
    return xp


def im2col_batch(x: np.ndarray, kernel: tuple[int, int], out: tuple[int, int], pads: tuple[tuple[int, int], ...],
                 stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """The column matrix (1) of x: (N, C, H, W) -> (C*KH*KW, N*OH*OW), zero padding included."""
    xp = _pad(x, pads)
    N, C = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    windows = as_strided(xp, shape=(C, kernel[0], kernel[1], N, out[0], out[1]),
                         strides=(sC, dilation[0] * sH, dilation[1] * sW, sN, stride[0] * sH, stride[1] * sW),
                         writeable=False)
    return windows.reshape(C * kernel[0] * kernel[1], N * out[0] * out[1])  # one copy


def im2col(xp: np.ndarray, kernel: tuple[int, int], out: tuple[int, int],
           stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """The column matrices (1) of a padded input xp per sample: (N, C, Hp, Wp) -> (N, C*KH*KW, OH*OW);
    ``im2col_batch(x, ...) == im2col(xp, ...).transpose(1, 0, 2).reshape(C*KH*KW, N*OH*OW)``."""
    N, C = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    windows = as_strided(xp, shape=(N, C, kernel[0], kernel[1], out[0], out[1]),
                         strides=(sN, sC, dilation[0] * sH, dilation[1] * sW, stride[0] * sH, stride[1] * sW),
                         writeable=False)
    return windows.reshape(N, C * kernel[0] * kernel[1], out[0] * out[1])  # one copy


def col2im(dcols: np.ndarray, x_shape: tuple[int, ...], pads: tuple[tuple[int, int], tuple[int, int]],
           kernel: tuple[int, int], out: tuple[int, int],
           stride: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """The NumPy twin of ``kernels.col2im``, the adjoint of ``im2col``: add every column entry back onto
    the input pixel it was read from, one strided slice per kernel offset (p, q), in that order.

    dcols: (N, C*KH*KW, OH*OW)  ->  dx: (N, C, H, W) (a view into the padded buffer when padded)
    """
    N, C, H, W = x_shape
    (top, bottom), (left, right) = pads
    KH, KW = kernel
    dcols = dcols.reshape(N, C, KH, KW, out[0], out[1])
    dxp = np.zeros((N, C, H + top + bottom, W + left + right), dtype=dcols.dtype)
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
    Per group g, with (1):   y_g = W_g cols_g      (one GEMM over the whole batch)
        W_g: (O/G, Cg*KH*KW)   cols_g: (Cg*KH*KW, N*OH*OW)   y_g: (O/G, N*OH*OW)

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
    cols = im2col_batch(x, (KH, KW), (OH, OW), pads, stride, dilation)  # (C*KH*KW, N*OH*OW)
    w = weight.reshape(G, O // G, Cg * KH * KW)
    y_t = np.matmul(w, cols.reshape(G, Cg * KH * KW, N * OH * OW))         # (G, O/G, N*OH*OW)
    y_t = y_t.reshape(O, N, OH * OW).transpose(1, 0, 2)                     # (N, O, OH*OW), a view
    y = np.empty((N, O, OH, OW), dtype=y_t.dtype)
    if bias is None:
        y.reshape(N, O, OH * OW)[...] = y_t
    else:
        np.add(y_t, bias.reshape(1, O, 1), out=y.reshape(N, O, OH * OW))  # the transpose and + b in one pass
    return y, (x.shape, cols, weight, bias is not None, stride, pads, dilation)


def conv2d_backward(dy: np.ndarray, cache: tuple,
                    needs_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Per group g, with dy_g: (O/G, N*OH*OW) (dy with the batch moved into the columns):

    dW_g = dy_g cols_g^T      dcols_g = W_g^T dy_g      dx = col2im(dcols)
    db[o] = sum_{n, i, j} dy[n, o, i, j]

    dy: (N, O, OH, OW)  ->  dx: (N, C, H, W) (None unless ``needs_input_grad``),  dW: (O, C/G, KH, KW),
    db: (O,) (None when the forward had no bias)
    """
    x_shape, cols, weight, has_bias, stride, pads, dilation = cache
    N, C, H, W = x_shape
    O, Cg, KH, KW = weight.shape
    G = C // Cg
    OH, OW = dy.shape[2:]
    dy_t = np.ascontiguousarray(dy.reshape(N, O, OH * OW).transpose(1, 0, 2))  # (O, N, OH*OW)
    db = dy_t.sum(axis=(1, 2)) if has_bias else None
    dy_g = dy_t.reshape(G, O // G, N * OH * OW)
    cols_g = cols.reshape(G, Cg * KH * KW, N * OH * OW)
    dW = np.matmul(dy_g, cols_g.transpose(0, 2, 1)).reshape(weight.shape)
    if not needs_input_grad:
        return None, dW, db
    w = weight.reshape(G, O // G, Cg * KH * KW)
    dcols = np.matmul(w.transpose(0, 2, 1), dy_g)                          # (G, Cg*KH*KW, N*OH*OW)
    dx = kernels.col2im(dcols.reshape(C * KH * KW, N * OH * OW), N, C, H, W, KH, KW, stride[0], stride[1],
                        pads[0][0], pads[1][0], dilation[0], dilation[1], OH, OW)
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
