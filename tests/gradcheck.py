"""Centred finite differences in float64: the torch-free check of every backward.

``numerical_grad(f, x)`` differentiates a scalar function of an array; ``check_module_grads`` runs a
Module forward, takes L = sum(y * dout) for a fixed random dout, and compares d L / d input and
d L / d every parameter from ``backward`` against finite differences.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from minicompress.nn import no_grad


def numerical_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by centred differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps); x is perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views (x must be contiguous)
    assert np.shares_memory(flat, x), "numerical_grad needs a contiguous array"
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f(x)
        flat[i] = old - eps
        minus = f(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / max(||a||, ||n||) (0 when both are 0)."""
    scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    return 0.0 if scale == 0 else float(np.linalg.norm(analytic - numeric) / scale)


def check_module_grads(module, x: np.ndarray, dout: np.ndarray | None = None, eps: float = 1e-6,
                       tol: float = 1e-6, seed: int = 0) -> dict[str, float]:
    """Assert that ``module.backward`` matches finite differences for the input and every parameter.

    The module is cast to float64 in place. Returns the relative error per checked array.
    """
    module.to(np.float64)
    x = np.array(x, dtype=np.float64)
    y = module(x)
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(np.shape(y))

    def loss(_: np.ndarray) -> float:
        with no_grad():                      # the perturbed forwards keep no cache
            return float(np.sum(module(x) * dout))

    module.zero_grad()
    module(x)
    dx = module.backward(dout)
    errors = {"input": rel_error(dx, numerical_grad(loss, x, eps))}
    for name, p in module.named_parameters():
        errors[name] = rel_error(p.grad, numerical_grad(loss, p.data, eps))
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"{module!r}: finite-difference relative errors above {tol}: {bad}"
    return errors
