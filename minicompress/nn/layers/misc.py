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


class Permute(Module):
    """y = x.transpose(dims), as ``torchvision.ops.Permute``; backward applies the inverse permutation."""

    def __init__(self, dims: Any) -> None:
        super().__init__()
        self.dims = [int(d) for d in dims]

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        if sorted(d % max(x.ndim, 1) for d in self.dims) != list(range(x.ndim)) or len(self.dims) != x.ndim:
            raise ValueError(f"{self._name()}: dims {self.dims} are not a permutation of the {x.ndim} axes of "
                             f"an input of shape {x.shape}")
        y = x.transpose(self.dims)
        self._save_for_backward(y.shape)
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape = self._saved()
        check_grad(self, grad_output, shape)
        return grad_output.transpose(np.argsort([d % grad_output.ndim for d in self.dims]))

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class _Reshaping(Module):
    """A layer that only reshapes: y = x.reshape(target); dx = dy.reshape(x.shape)."""

    def _reshaped(self, x: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
        y = x.reshape(target)
        self._save_for_backward((y.shape, x.shape))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, in_shape = self._saved()
        check_grad(self, grad_output, shape)
        return grad_output.reshape(in_shape)


class Unflatten(_Reshaping):
    """Split axis ``dim`` into ``unflattened_size`` (a reshape), as ``torch.nn.Unflatten``."""

    def __init__(self, dim: int, unflattened_size: Any) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(int(n) for n in unflattened_size)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        n = max(x.ndim, 1)
        if not -n <= self.dim < n:
            raise ValueError(f"{self._name()}: dim {self.dim} is out of range for an input of shape {x.shape}")
        d = self.dim % n
        sizes = list(self.unflattened_size)
        if sizes.count(-1) == 1:
            known = int(np.prod([s for s in sizes if s != -1]))
            sizes[sizes.index(-1)] = x.shape[d] // known if known else 0
        if int(np.prod(sizes)) != x.shape[d]:
            raise ValueError(f"{self._name()}: cannot split axis {self.dim} of size {x.shape[d]} (input {x.shape}) "
                             f"into {self.unflattened_size}")
        return self._reshaped(x, x.shape[:d] + tuple(sizes) + x.shape[d + 1:])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
