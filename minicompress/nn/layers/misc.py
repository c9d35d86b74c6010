"""Flatten, Dropout, Identity: thin Modules around ``functional.misc``."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..functional.misc import dropout_backward, dropout_forward, flatten_backward, flatten_forward
from ..module import Module
from ..random import get_rng
from ._utils import check_array, check_grad


class Flatten(Module):
    """Merge axes start_dim..end_dim into one (a reshape), as ``torch.nn.Flatten``."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        n = max(x.ndim, 1)
        if not (-n <= self.start_dim < n and -n <= self.end_dim < n) or self.start_dim % n > self.end_dim % n:
            raise ValueError(f"{self._name()}: cannot flatten dims {self.start_dim}..{self.end_dim} "
                             f"of an input of shape {x.shape}")
        y, cache = flatten_forward(x, self.start_dim, self.end_dim)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        return flatten_backward(grad_output, cache)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Inverted dropout, as ``torch.nn.Dropout``: in training y = x * m / (1 - p), m ~ Bernoulli(1 - p);
    in evaluation y = x.

    The masks are drawn from ``rng`` (a Generator, or a seed fixed here), else from the global
    generator at each call (``minicompress.manual_seed``).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rng=None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace
        self._rng = None if rng is None else get_rng(rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        if not self.training or self.p == 0:
            self._save_for_backward((x.shape, None))
            return x
        y, mask = dropout_forward(x, self.p, get_rng(self._rng), self.inplace)
        self._save_for_backward((y.shape, mask))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, mask = self._saved()
        check_grad(self, grad_output, shape)
        return grad_output if mask is None else dropout_backward(grad_output, mask)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Identity(Module):
    """y = x, as ``torch.nn.Identity`` (constructor arguments are accepted and ignored)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, grad_output: Any) -> Any:
        return grad_output
