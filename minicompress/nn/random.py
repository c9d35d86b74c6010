"""The global random generator: ``manual_seed(n)`` makes every default draw reproducible."""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Re-seed the global ``np.random.Generator`` used when a function gets no ``rng=``."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def get_rng(rng: np.random.Generator | int | None = None) -> np.random.Generator:
    """``rng`` if given (a Generator, or a seed), else the global generator."""
    if rng is None:
        return _generator
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
