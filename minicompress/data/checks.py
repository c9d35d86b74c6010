"""Checks of user data: every problem a clear error naming the array, before any training.

Images must be real numbers (no complex, object or string arrays), finite, laid out (N, C, H, W);
labels integers in [0, K) for a model of K classes. A model's class count is never inferred from a
label that happens to be large: the training labels must be exactly 0 .. K-1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_images", "check_labels", "check_class_labels"]


def check_images(x: Any, name: str) -> np.ndarray:
    """``x`` as a float32 (N, C, H, W) array: real, finite, non-empty; channels-last is named as such."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype} (shape {x.shape})")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images (N, C, H, W), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name}: holds no samples (shape {x.shape})")
    if x.shape[3] in (1, 3, 4) and x.shape[3] < x.shape[1]:       # (N, H, W, C) with few channels
        raise ValueError(f"{name}: shape {x.shape} looks channels-last (N, H, W, C); minicompress takes "
                         f"(N, C, H, W): use x.transpose(0, 3, 1, 2)")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: {int(bad.sum())} values are NaN or infinite (the first at {first})")
    return x


def check_labels(y: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """``y`` as int64 (N,) class labels: integers (an integral float is accepted), >= 0, < ``num_classes``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected labels (N,), got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][:3]
            raise ValueError(f"{name}: labels must be integers, got {bad.tolist()}")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
    labels = y.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {int(labels.min())}")
    if num_classes is not None and len(labels) and labels.max() >= num_classes:
        raise ValueError(f"{name}: label {int(labels.max())} is out of range for {num_classes} classes "
                         f"(labels are 0 .. {num_classes - 1})")
    return labels


def check_class_labels(y: Any, name: str) -> tuple[np.ndarray, int]:
    """Training labels and their class count K: every class 0 .. K-1 must occur (none skipped)."""
    labels = check_labels(y, name)
    if len(labels) == 0:
        raise ValueError(f"{name}: holds no samples")
    present = np.unique(labels)
    k = int(present[-1]) + 1
    if len(present) != k:
        missing = np.setdiff1d(np.arange(min(k, 10 ** 6)), present)[:5].tolist()
        raise ValueError(f"{name}: labels must be the classes 0 .. K-1 with none missing; labels go up to "
                         f"{k - 1} but {missing} never occur{' (labels 1 .. K? subtract 1)' if present[0] == 1 else ''}")
    return labels, k
