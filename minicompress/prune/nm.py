"""N:M semi-structured sparsity: keep ``n`` of every ``m`` consecutive weights along the input dimension.

The mask is that of ``torch.ao.pruning.WeightNormSparsifier(sparsity_level=1.0,
sparse_block_shape=(1, m), zeros_per_block=m - n)`` (2:4 is the default), entry for entry::

    W2   = t.reshape(out, -1)                 Linear (out, in); Conv (out, in/groups, kh, kw) -> (out, in*kh*kw)
    s    = W2 * W2                            the sparsifier's default norm (L2), in t's dtype            (1)
    pad  s with NaN to (ceil(out/r)*r, ceil(cols/c)*c)      blocks (r, c) = block_shape, from index 0
    in each r x c block (entries read row by row), zero the m - n of smallest s,
    chosen as torch.topk(block, m - n, largest=False) chooses on the CPU (``selection``)               (2)

Facts of torch's sparsifier this reproduces (and the two places it is left):

- ``sparse_block_shape=(1, 4)`` is (block rows, block cols) of the 2-D weight: 1 output row x 4
  consecutive *input* columns, so 2:4 runs along ``in``.
- Ties are not broken by position: topk runs libstdc++'s ``nth_element`` (``heap select`` when
  ``64 * (m - n) <= m``), so for a block of four equal magnitudes it prunes entries 2 and 3.
  Squares (1) tie more often than magnitudes: 1e-23 and 2e-23 both square to 0 in float32.
- A last, partial block (``cols % m != 0``) is padded with NaN, which topk ranks above every number:
  its ``m - n`` smallest *real* entries are pruned, so a block with ``<= m - n`` real entries is pruned
  entirely (2:4 on ``in = 6`` prunes the last two columns of every row).
- Left: torch then hands back the *padded* mask, (out, 8) for a (out, 6) weight, which its own
  ``FakeSparsity`` refuses on the next forward; here the mask is cropped to the weight.
- Left: torch's sparsifier fails on 4-D Conv2d weights (it reads ``shape[-2:]`` as the matrix);
  here a Conv weight is its GEMM matrix (out, in*kh*kw), PyTorch's memory order, the order of the
  engine's im2col columns (c, kh, kw): groups of four are consecutive in the convolution's
  reduction dimension, and the masks equal torch's sparsifier run on ``weight.flatten(1)``.

Any ``block_shape`` (r, c) with r*c = m generalises this unchanged (torch's other block shapes);
``n`` may be anything in [1, m - 1].
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.module import Module
from .base import BasePruningMethod
from .selection import rank_keys, smallest_k

__all__ = ["nm_mask", "NMStructured", "nm_structured"]


def nm_mask(t: np.ndarray, n: int, m: int, block_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean keep-mask of ``t``'s shape: ``n`` kept of every block of ``m`` entries, by (1)-(2)."""
    r, c = _check(t.shape, n, m, block_shape)
    w2 = t.reshape(t.shape[0], -1)                                      # (out, cols)
    h, w = w2.shape
    hp, wp = -(-h // r) * r, -(-w // c) * c
    s = np.full((hp, wp), np.nan, dtype=np.result_type(t.dtype, np.float32))
    s[:h, :w] = w2 * w2                                                 # (1), NaN padding
    blocks = s.reshape(hp // r, r, wp // c, c).transpose(0, 2, 1, 3).reshape(-1, m)  # (B, m), rows of a block in order
    zeros = m - n
    pruned = np.zeros(blocks.shape, dtype=bool)
    nan = np.isnan(blocks)
    order = np.lexsort((np.where(nan, 0, blocks), nan), axis=-1)       # NaN last, then by value
    ranked = np.take_along_axis(blocks, order, axis=-1)
    ranked_nan = np.take_along_axis(nan, order, axis=-1)
    tied = (ranked_nan[:, zeros - 1] == ranked_nan[:, zeros]) & (
        ranked_nan[:, zeros - 1] | (ranked[:, zeros - 1] == ranked[:, zeros]))
    np.put_along_axis(pruned, order[:, :zeros], True, axis=-1)          # untied blocks: one answer
    if tied.any():                                                      # tied at the cut: replay topk (2)
        patterns, which = np.unique(rank_keys(blocks[tied]), axis=0, return_inverse=True)
        chosen = np.zeros(patterns.shape, dtype=bool)                   # once per distinct rank pattern
        for p, keys in enumerate(patterns):
            chosen[p, smallest_k(keys, zeros)] = True
        pruned[tied] = chosen[which.reshape(-1)]
    keep = ~pruned.reshape(hp // r, wp // c, r, c).transpose(0, 2, 1, 3).reshape(hp, wp)
    return keep[:h, :w].reshape(t.shape)


def _check(shape: tuple[int, ...], n: int, m: int, block_shape: tuple[int, int] | None) -> tuple[int, int]:
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, (int, np.integer)) \
            or not isinstance(m, (int, np.integer)):
        raise TypeError(f"N:M sparsity: n and m must be integers, got n={n!r}, m={m!r}")
    if not 1 <= n < m:
        raise ValueError(f"N:M sparsity keeps n of every m entries and needs 1 <= n < m, got n={n}, m={m}")
    r, c = (1, m) if block_shape is None else tuple(block_shape)
    if r < 1 or c < 1 or r * c != m:
        raise ValueError(f"N:M sparsity: block_shape {block_shape} must hold m={m} entries (rows * cols = m)")
    if len(shape) < 2:
        raise ValueError(f"N:M sparsity needs a weight with an output and an input dimension (>= 2 dims), "
                         f"got shape {shape}")
    return int(r), int(c)


class NMStructured(BasePruningMethod):
    """Keep the ``n`` of largest ``t * t`` in every ``block_shape`` block of ``m`` (default (1, m):
    ``m`` consecutive inputs of one output), as (1)-(2); entries ``default_mask`` removed stay removed.

    ``PRUNING_TYPE = 'global'``: pruning again (a container) hands this method the whole current
    tensor, whose pruned entries are 0 and therefore the first chosen, as when torch's sparsifier
    steps again on its masked weight.
    """

    PRUNING_TYPE = "global"

    def __init__(self, n: int = 2, m: int = 4, block_shape: tuple[int, int] | None = None) -> None:
        if block_shape is not None:
            block_shape = tuple(block_shape)
        _check((1, 1), n, m, block_shape)
        self.n, self.m, self.block_shape = n, m, block_shape

    def compute_mask(self, t: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        keep = nm_mask(t, self.n, self.m, self.block_shape)
        return default_mask * keep.astype(default_mask.dtype)


def nm_structured(module: Module, name: str, n: int = 2, m: int = 4,
                  block_shape: tuple[int, int] | None = None, importance_scores: Any = None) -> Module:
    """Prune ``module.<name>`` to N:M sparsity (``NMStructured``), re-parametrised as ``<name>_orig``
    and ``<name>_mask``; returns ``module``."""
    try:
        NMStructured.apply(module, name, n, m, block_shape, importance_scores=importance_scores)
    except ValueError as err:
        raise ValueError(f"{module._name()}.{name}: {err}") from None
    return module
