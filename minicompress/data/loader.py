"""Mini-batch iteration over in-memory arrays, like ``torch.utils.data.DataLoader``."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..nn.random import get_rng


class DataLoader:
    """Iterate ``(xb, yb)`` batches of ``x`` and ``y`` (first axis = samples).

    ``shuffle`` draws a new permutation every epoch from ``rng`` (or the global generator);
    ``drop_last`` drops the final short batch.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int = 64, shuffle: bool = False,
                 drop_last: bool = False, rng: np.random.Generator | int | None = None) -> None:
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"DataLoader: x and y have different lengths: x {x.shape}, y {y.shape}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.rng = rng if rng is None else get_rng(rng)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self.x)
        order = get_rng(self.rng).permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]
