"""Argument normalisation and input checks shared by the layers (clear errors naming the layer)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..module import Module


def ntuple(value: Any, n: int, what: str, owner: str) -> tuple[int, ...]:
    """An int or an n-sequence of ints as an n-tuple (PyTorch's _single/_pair)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{owner}: {what} must be an int or a tuple of {n} ints, got {value!r}")
    return tuple(int(v) for v in items)


def check_array(module: Module, x: Any, dtype: np.dtype | None = None) -> None:
    """x must be a floating-point ndarray (of ``dtype`` when given: the layer's parameter dtype)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{module._name()}: expected a NumPy array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{module._name()}: expected a floating-point input, got dtype {x.dtype} "
                        f"with shape {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{module._name()}: input dtype {x.dtype} (shape {x.shape}) does not match the "
                        f"parameter dtype {dtype}; cast the input or call .to({dtype})")


def check_grad(module: Module, dy: Any, shape: tuple[int, ...]) -> None:
    """The gradient given to backward must have the shape of the forward output."""
    if not isinstance(dy, np.ndarray) or dy.shape != shape:
        got = dy.shape if isinstance(dy, np.ndarray) else type(dy).__name__
        raise ValueError(f"{module._name()}: backward expected a gradient of shape {shape} "
                         f"(the forward output), got {got}")


def batched(module: Module, x: np.ndarray, spatial: int, channels: int | None = None) -> tuple[np.ndarray, bool]:
    """(N, C, *spatial) unchanged, or an unbatched (C, *spatial) with a batch axis added (as PyTorch).

    Returns ``(x, unbatched)``. Raises a ValueError naming the layer and shapes otherwise.
    """
    names = ("L",) if spatial == 1 else ("H", "W")
    c = "C" if channels is None else str(channels)
    if not (spatial + 1 <= x.ndim <= spatial + 2) or (channels is not None and x.shape[-spatial - 1] != channels):
        raise ValueError(f"{module._name()}: expected input ({', '.join(('N', c) + names)}) or "
                         f"({', '.join((c,) + names)}), got {x.shape}")
    if x.ndim == spatial + 1:
        return x[None], True
    return x, False


def backward_without_input_grad(module: Module, grad_output: np.ndarray) -> None:
    """``module.backward(grad_output)`` with ``needs_input_grad`` False for this one call (Linear, Conv)."""
    needs = module.needs_input_grad
    module.needs_input_grad = False
    try:
        module.backward(grad_output)
    finally:
        module.needs_input_grad = needs
