"""Which ``k`` entries of a short row ``torch.topk(row, k, largest=False)`` returns on the CPU, ties included.

ATen's CPU top-k (``topk_impl_loop``) copies the row into ``(value, index)`` pairs and selects with
the C++ standard library, ordering by ``x < y`` with NaN above every number (NaNs equal to each other):

    k * 64 <= len(row)   std::partial_sort(first, first + k, last)        (heap select)
    otherwise            std::nth_element(first, first + k - 1, last)     (introselect)

and returns the first ``k`` pairs. Among equal values neither algorithm is stable: for the row
``[0, 0, 0, 0]`` and ``k = 2`` torch picks indices {2, 3}, not {0, 1}. Which of the tied entries are
picked depends only on the outcome of the comparisons, so it is a function of the row's *ranks*;
this file replays libstdc++'s algorithms (``bits/stl_algo.h``, ``bits/stl_heap.h``, GCC 4.x to 14)
step by step on them. ``smallest_k`` is that replay; ``nm`` calls it only for rows whose k-th
smallest value is tied (all other rows have one answer), once per distinct rank pattern.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["rank_keys", "smallest_k"]


def rank_keys(rows: np.ndarray) -> np.ndarray:
    """Ranks preserving ``<`` along the last axis, NaN above every number (NaNs tie):
    ``rank[..., i] = #{j : rows[..., j] < rows[..., i]}``.  rows: (..., m) -> (..., m) int"""
    finite = ~np.isnan(rows)
    keys = np.where(finite, rows, np.inf).astype(np.float64)
    less = (keys[..., None, :] < keys[..., :, None]) & finite[..., None, :]   # [..., i, j]: rows[j] < rows[i]
    return np.where(finite, less.sum(axis=-1), finite.sum(axis=-1, keepdims=True))


def smallest_k(keys: Sequence[int], k: int) -> list[int]:
    """Indices of the ``k`` entries torch.topk(largest=False) picks from a row with these rank ``keys``."""
    items = [(int(key), i) for i, key in enumerate(keys)]
    if k <= 0:
        return []
    if k * 64 <= len(items):
        _heap_select(items, 0, k, len(items))
    else:
        _introselect(items, 0, k - 1, len(items), 2 * (len(items).bit_length() - 1))  # 2 * __lg(n)
    return sorted(i for _, i in items[:k])


def _less(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[0]          # values only: the index is carried, never compared


def _introselect(v: list, first: int, nth: int, last: int, depth: int) -> None:
    while last - first > 3:
        if depth == 0:
            _heap_select(v, first, nth + 1, last)
            v[first], v[nth] = v[nth], v[first]
            return
        depth -= 1
        cut = _partition_pivot(v, first, last)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(v, first, last)


def _partition_pivot(v: list, first: int, last: int) -> int:
    mid = first + (last - first) // 2
    _move_median_to_first(v, first, first + 1, mid, last - 1)
    lo, hi = first + 1, last                      # std::__unguarded_partition(first+1, last, pivot=first)
    while True:
        while _less(v[lo], v[first]):
            lo += 1
        hi -= 1
        while _less(v[first], v[hi]):
            hi -= 1
        if not lo < hi:
            return lo
        v[lo], v[hi] = v[hi], v[lo]
        lo += 1


def _move_median_to_first(v: list, result: int, a: int, b: int, c: int) -> None:
    if _less(v[a], v[b]):
        pick = b if _less(v[b], v[c]) else c if _less(v[a], v[c]) else a
    elif _less(v[a], v[c]):
        pick = a
    elif _less(v[b], v[c]):
        pick = c
    else:
        pick = b
    v[result], v[pick] = v[pick], v[result]


def _insertion_sort(v: list, first: int, last: int) -> None:
    for i in range(first + 1, last):
        val = v[i]
        if _less(val, v[first]):
            v[first + 1:i + 1] = v[first:i]
            v[first] = val
        else:                                     # std::__unguarded_linear_insert
            j = i
            while _less(val, v[j - 1]):
                v[j] = v[j - 1]
                j -= 1
            v[j] = val


def _heap_select(v: list, first: int, middle: int, last: int) -> None:
    _make_heap(v, first, middle)
    for i in range(middle, last):
        if _less(v[i], v[first]):                 # std::__pop_heap(first, middle, i)
            value, v[i] = v[i], v[first]
            _adjust_heap(v, first, 0, middle - first, value)


def _make_heap(v: list, first: int, last: int) -> None:
    n = last - first
    if n < 2:
        return
    for parent in range((n - 2) // 2, -1, -1):
        _adjust_heap(v, first, parent, n, v[first + parent])


def _adjust_heap(v: list, first: int, hole: int, n: int, value: tuple) -> None:
    """libstdc++ ``std::__adjust_heap``: sift the hole down to a leaf, then push ``value`` up (max-heap)."""
    top = hole
    child = hole
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if _less(v[first + child], v[first + child - 1]):
            child -= 1
        v[first + hole] = v[first + child]
        hole = child
    if n % 2 == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        v[first + hole] = v[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2                       # std::__push_heap
    while hole > top and _less(v[first + parent], value):
        v[first + hole] = v[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    v[first + hole] = value

