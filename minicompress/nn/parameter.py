"""The small value types of the engine: Parameter, hook handles, parametrized-tensor records, load results."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .half import note as note_half


class Parameter:
    """A learned array: ``data`` (ndarray) and ``grad`` (ndarray of the same shape, or None)."""

    __slots__ = ("data", "grad")

    def __init__(self, data: Any, grad: np.ndarray | None = None) -> None:
        self.data = np.array(data, dtype=getattr(data, "dtype", np.float32), copy=True)
        self.grad = grad
        note_half(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class RemovableHandle:
    """Returned by ``register_*_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, hooks: dict, key: Any) -> None:
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class Parametrized(NamedTuple):
    """A parametrized tensor: the Parameter under attribute ``original`` passes through ``chain`` in order."""

    original: str
    chain: tuple


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]
