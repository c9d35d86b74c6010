"""The UCI 8x8 handwritten digits (1,797 images), bundled; see ``README.md`` beside this file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_FILE = Path(__file__).with_name("digits.npz")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def stratified_split(labels: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): per class, shuffle with ``default_rng(seed)``, first round(f*n) to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(flatten: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, y_train, x_test, y_test)`` of the bundled digits.

    x: float32 in [0, 1], shape (N, 1, 8, 8) (or (N, 64) with ``flatten=True``); y: int64 in 0..9.
    The split is fixed and stratified: 1,437 train / 360 test samples.
    """
    with np.load(_FILE) as f:
        images, labels = f["images"], f["labels"]
    x = (images.astype(np.float32) / np.float32(16.0))[:, None, :, :]   # (N, 1, 8, 8)
    if flatten:
        x = x.reshape(len(x), -1)                                        # (N, 64)
    y = labels.astype(np.int64)
    train, test = stratified_split(y)
    return x[train], y[train], x[test], y[test]
