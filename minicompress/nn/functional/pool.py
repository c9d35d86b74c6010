"""Pooling as forward/backward pairs: max, average, adaptive average (2-D; 1-D is H = 1).

Max and average pooling loop over the KH*KW kernel offsets (p, q); each offset reads one strided
slice of the padded input, the same slice the backward adds its gradient back into:

    window(p, q) = xp[:, :, p*dh : p*dh + sh*(OH - 1) + 1 : sh,  q*dw : ... : sw]      (1)
"""
from __future__ import annotations

import math

import numpy as np

Pair = tuple[int, int]


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape:

    OH = floor_or_ceil((H + 2 ph - dh*(KH - 1) - 1) / sh) + 1, and with ceil_mode the last window must
    start inside the input or the left padding: if (OH - 1)*sh >= H + ph then OH -= 1.
    """
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _windows(kernel: Pair, out: Pair, stride: Pair, dilation: Pair = (1, 1)):
    """Yield (k, rows, cols): the flat offset index k = p*KW + q and the slices (1) of offset (p, q)."""
    for p in range(kernel[0]):
        rows = slice(p * dilation[0], p * dilation[0] + stride[0] * (out[0] - 1) + 1, stride[0])
        for q in range(kernel[1]):
            cols = slice(q * dilation[1], q * dilation[1] + stride[1] * (out[1] - 1) + 1, stride[1])
            yield p * kernel[1] + q, rows, cols


def _pad_for_windows(x: np.ndarray, kernel: Pair, out: Pair, stride: Pair, padding: Pair,
                     dilation: Pair, value: float) -> np.ndarray:
    """x padded with ``value``: ``padding`` before, and after as far as the last window reaches."""
    pads = [(0, 0), (0, 0)]
    for axis in range(2):
        reach = (out[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        pads.append((padding[axis], max(reach - x.shape[2 + axis] - padding[axis], 0)))
    if not any(a or b for a, b in pads):
        return x
    return np.pad(x, pads, constant_values=value)


def max_pool2d_forward(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair = (0, 0),
                       dilation: Pair = (1, 1), ceil_mode: bool = False) -> tuple[np.ndarray, tuple]:
    """y[n, c, i, j] = max_{p, q} xp[n, c, i*sh + p*dh, j*sw + q*dw]      (xp: x padded with -inf)

    The gradient goes to the *first* maximum in window order (p, then q), as PyTorch's: the cache holds
    one boolean mask per kernel offset, ``first[k]`` = "offset k is the first maximum of its window".
    A NaN in a window makes the output NaN, as PyTorch's (the gradient then goes to no element); so
    does a dilated window lying entirely in the padding, whose output is -inf.
    x: (N, C, H, W)  ->  y: (N, C, OH, OW)
    """
    out = tuple(pool_output_size(x.shape[2 + a], kernel_size[a], stride[a], padding[a], dilation[a], ceil_mode)
                for a in range(2))
    xp = _pad_for_windows(x, kernel_size, out, stride, padding, dilation, -np.inf)
    windows = list(_windows(kernel_size, out, stride, dilation))
    y = xp[:, :, windows[0][1], windows[0][2]].copy()
    for _, rows, cols in windows[1:]:
        np.maximum(y, xp[:, :, rows, cols], out=y)
    first = np.empty((len(windows),) + y.shape, dtype=bool)  # (KH*KW, N, C, OH, OW)
    free = np.ones(y.shape, dtype=bool)                      # no maximum found yet in this window
    for k, rows, cols in windows:
        np.equal(xp[:, :, rows, cols], y, out=first[k])
        first[k] &= free
        free ^= first[k]
    return y, (x.shape, xp.shape, first, kernel_size, stride, padding, dilation)


def max_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dx[n, c, i*sh + p*dh - ph, j*sw + q*dw - pw] += dy[n, c, i, j]   for the arg-max (p, q) of output (i, j).

    dy: (N, C, OH, OW)  ->  dx: (N, C, H, W)
    """
    x_shape, xp_shape, first, kernel_size, stride, padding, dilation = cache
    H, W = x_shape[2:]
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    disjoint = all(s >= d * (k - 1) + 1 for s, d, k in zip(stride, dilation, kernel_size))
    for k, rows, cols in _windows(kernel_size, dy.shape[2:], stride, dilation):
        if disjoint:  # windows do not overlap: write straight into the strided slice
            np.multiply(dy, first[k], out=dxp[:, :, rows, cols])
        else:
            dxp[:, :, rows, cols] += dy * first[k]
    return _crop(dxp, padding, H, W)


def _crop(xp: np.ndarray, padding: Pair, H: int, W: int) -> np.ndarray:
    if xp.shape[2:] == (H, W):
        return xp
    return np.ascontiguousarray(xp[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W])


def _avg_divisors(size: int, out: int, kernel: int, stride: int, pad: int, count_include_pad: bool) -> np.ndarray:
    """Per output index i along one axis: how many rows window i averages over (PyTorch's rule).

    start = i*s - pad, end = min(start + k, size + pad): the padding counts (if count_include_pad),
    the overhang past it in ceil_mode never does; without count_include_pad clip to [0, size).
    """
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


def avg_pool2d_forward(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair = (0, 0),
                       ceil_mode: bool = False, count_include_pad: bool = True,
                       divisor_override: int | None = None) -> tuple[np.ndarray, tuple]:
    """y[n, c, i, j] = (1 / D[i, j]) sum_{p, q} xp[n, c, i*sh + p, j*sw + q]      (xp: x zero-padded)

    D[i, j] = rows(i) * cols(j) from ``_avg_divisors`` (or ``divisor_override``).
    x: (N, C, H, W)  ->  y: (N, C, OH, OW)
    """
    N, C, H, W = x.shape
    out = tuple(pool_output_size(x.shape[2 + a], kernel_size[a], stride[a], padding[a], 1, ceil_mode)
                for a in range(2))
    if divisor_override is not None:
        inv_d = np.full(out, 1.0 / divisor_override)
    else:
        rows, cols = (_avg_divisors(x.shape[2 + a], out[a], kernel_size[a], stride[a], padding[a],
                                    count_include_pad) for a in range(2))
        inv_d = 1.0 / np.outer(rows, cols)  # (OH, OW)
    inv_d = inv_d.astype(x.dtype)
    xp = _pad_for_windows(x, kernel_size, out, stride, padding, (1, 1), 0.0)
    y = np.zeros((N, C) + out, dtype=x.dtype)
    for _, rows, cols in _windows(kernel_size, out, stride):
        y += xp[:, :, rows, cols]
    y *= inv_d
    return y, (x.shape, xp.shape, inv_d, kernel_size, stride, padding)


def avg_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dx[n, c, i*sh + p - ph, j*sw + q - pw] += dy[n, c, i, j] / D[i, j]   for every kernel offset (p, q).

    dy: (N, C, OH, OW)  ->  dx: (N, C, H, W)
    """
    x_shape, xp_shape, inv_d, kernel_size, stride, padding = cache
    g = dy * inv_d
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    for _, rows, cols in _windows(kernel_size, dy.shape[2:], stride):
        dxp[:, :, rows, cols] += g
    return _crop(dxp, padding, *x_shape[2:])


def adaptive_bins(size: int, out: int) -> np.ndarray:
    """Averaging matrix A: (out, size) of PyTorch's adaptive bins.

    Bin i covers [floor(i*size/out), ceil((i + 1)*size/out)) with weight 1 / (bin length).
    """
    A = np.zeros((out, size))
    for i in range(out):
        start, end = (i * size) // out, math.ceil((i + 1) * size / out)
        A[i, start:end] = 1.0 / (end - start)
    return A


def adaptive_avg_pool2d_forward(x: np.ndarray, output_size: Pair) -> tuple[np.ndarray, tuple]:
    """y = A_h x A_w^T   per (n, c): the mean over each rectangular bin is separable into rows and columns.

    x: (N, C, H, W)   A_h: (OH, H)   A_w: (OW, W)   ->   y: (N, C, OH, OW)
    """
    A_h = adaptive_bins(x.shape[2], output_size[0]).astype(x.dtype)
    A_w = adaptive_bins(x.shape[3], output_size[1]).astype(x.dtype)
    y = np.matmul(np.matmul(A_h, x), A_w.T)
    return y, (A_h, A_w)


def adaptive_avg_pool2d_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = A_h^T dy A_w      dy: (N, C, OH, OW)  ->  dx: (N, C, H, W)"""
    A_h, A_w = cache
    return np.matmul(np.matmul(A_h.T, dy), A_w)
