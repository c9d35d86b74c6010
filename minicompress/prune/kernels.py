"""Sparse x dense product for unstructured-sparse inference: a Numba CSR kernel and its NumPy twin.

A weight W (M, K) with most entries zero is stored in CSR form::

    indptr  (M + 1,) uint32  row j's nonzeros are at positions indptr[j] .. indptr[j+1] - 1
    indices (nnz,)   uint32  their column numbers
    data    (nnz,)           their values

and ``y = x W^T`` is ``y[b, j] = sum_p data[p] * x[b, indices[p]]`` over row j's positions, added
in order from 0 in the weight's dtype. Work is nnz * B multiply-adds instead of M * K * B.
The kernel and the twin add the same products in the same order, so they agree bit for bit
(no fastmath: no reassociation, no fused multiply-add). Indices are *unsigned* on purpose: Numba
then skips the negative-index wrap-around test on every gather, which makes the loop ~2.5x faster.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["dense_to_csr", "csr_matmul", "csr_matmul_reference"]


def dense_to_csr(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of the nonzeros of ``weight`` (M, K), row by row, columns ascending."""
    if weight.ndim != 2:
        raise ValueError(f"dense_to_csr: expected a 2-D weight (M, K), got shape {weight.shape}")
    if weight.size >= 2**32:
        raise ValueError(f"dense_to_csr: weight of shape {weight.shape} is too large for uint32 indices")
    rows, cols = np.nonzero(weight)
    indptr = np.zeros(weight.shape[0] + 1, dtype=np.uint32)
    np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.uint32), np.ascontiguousarray(weight[rows, cols])


@njit(cache=True)
def _row_sum(x: np.ndarray, indices: np.ndarray, data: np.ndarray, acc, start: int, stop: int):
    """acc + data[p] * x[indices[p]] for p = start, ..., stop - 1, added in that order."""
    for p in range(start, stop):
        acc += data[p] * x[indices[p]]
    return acc


@njit(cache=True)
def _csr_rows_single(x: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                     out: np.ndarray) -> None:
    """Batch 1: x (K,), out (M,) zeros on entry.

    Four rows advance in lockstep (their common length, then each row's tail), so four independent
    addition chains are in flight instead of one; each row still adds its products in order.
    That is ~1.4x faster than one row at a time and bit-identical to it.
    """
    m = indptr.shape[0] - 1
    j = 0
    while j + 4 <= m:
        p0, p1, p2, p3, p4 = indptr[j], indptr[j + 1], indptr[j + 2], indptr[j + 3], indptr[j + 4]
        n = min(p1 - p0, p2 - p1, p3 - p2, p4 - p3)
        a0, a1, a2, a3 = out[j], out[j + 1], out[j + 2], out[j + 3]
        for k in range(n):
            a0 += data[p0 + k] * x[indices[p0 + k]]
            a1 += data[p1 + k] * x[indices[p1 + k]]
            a2 += data[p2 + k] * x[indices[p2 + k]]
            a3 += data[p3 + k] * x[indices[p3 + k]]
        out[j] = _row_sum(x, indices, data, a0, p0 + n, p1)
        out[j + 1] = _row_sum(x, indices, data, a1, p1 + n, p2)
        out[j + 2] = _row_sum(x, indices, data, a2, p2 + n, p3)
        out[j + 3] = _row_sum(x, indices, data, a3, p3 + n, p4)
        j += 4
    for r in range(j, m):
        out[r] = _row_sum(x, indices, data, out[r], indptr[r], indptr[r + 1])


@njit(cache=True)
def _csr_rows_batched(xt: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                      outt: np.ndarray) -> None:
    """Batch B: xt (K, B), outt (M, B) zeros on entry; the inner loop runs along the batch (SIMD)."""
    for j in range(indptr.shape[0] - 1):
        acc = outt[j]  # a view: row j of the output, zeros
        for p in range(indptr[j], indptr[j + 1]):
            v, row = data[p], xt[indices[p]]
            for b in range(xt.shape[1]):
                acc[b] += v * row[b]


def csr_matmul(x: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> np.ndarray:
    """y = x W^T with W in CSR form.   x: (B, K) -> y: (B, M), in ``data``'s dtype."""
    m = indptr.shape[0] - 1
    if x.shape[0] == 1:
        out = np.zeros(m, dtype=data.dtype)
        _csr_rows_single(np.ascontiguousarray(x[0], dtype=data.dtype), indptr, indices, data, out)
        return out[None]
    outt = np.zeros((m, x.shape[0]), dtype=data.dtype)
    _csr_rows_batched(np.ascontiguousarray(x.T, dtype=data.dtype), indptr, indices, data, outt)
    return outt.T


def csr_matmul_reference(x: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> np.ndarray:
    """NumPy twin of ``csr_matmul``: the k-th nonzero of every row is added in step k."""
    x = np.asarray(x, dtype=data.dtype)
    out = np.zeros((x.shape[0], indptr.shape[0] - 1), dtype=data.dtype)
    counts = np.diff(indptr.astype(np.int64))
    start = indptr[:-1].astype(np.int64)
    for k in range(int(counts.max(initial=0))):
        rows = np.flatnonzero(counts > k)
        p = start[rows] + k
        out[:, rows] += data[p] * x[:, indices[p]]
    return out
