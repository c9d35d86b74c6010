"""Shared helpers for the distillation tests: centred finite differences in float64."""
from typing import Callable

import numpy as np
import pytest


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Centred differences (f(x + h e_i) - f(x - h e_i)) / 2h for every element of float64 ``x``."""
    assert x.dtype == np.float64
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f(x)
        flat[i] = old - h
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a| + |b|) over elements (cs231n's relative error, guarded at 0)."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))


@pytest.fixture(scope="session")
def fd():
    return numeric_grad


@pytest.fixture(scope="session")
def relerr():
    return rel_error
