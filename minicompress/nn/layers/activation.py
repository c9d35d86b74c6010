"""Activation layers: thin Modules around ``functional.activation``."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..functional import activation as F
from ..module import Module
from ._utils import check_array, check_grad


class _Activation(Module):
    """Elementwise (or along ``dim``) layer: forward caches what the functional backward needs."""

    def _run(self, x: np.ndarray, forward: Callable[..., tuple[np.ndarray, Any]], *args: Any) -> np.ndarray:
        check_array(self, x)
        y, cache = forward(x, *args)
        self._save_for_backward((y.shape, cache))
        return y

    def _grad(self, grad_output: np.ndarray, backward: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        return backward(grad_output, cache, *args)


class ReLU(_Activation):
    """y = max(x, 0), as ``torch.nn.ReLU`` (``inplace=True`` overwrites the input)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, F.relu_forward, self.inplace)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, F.relu_backward)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(_Activation):
    """y = x if x > 0 else negative_slope * x, as ``torch.nn.LeakyReLU``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, F.leaky_relu_forward, self.negative_slope, self.inplace)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, F.leaky_relu_backward)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Tanh(_Activation):
    """y = tanh(x), as ``torch.nn.Tanh``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, F.tanh_forward)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, F.tanh_backward)


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x)), as ``torch.nn.Sigmoid``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, F.sigmoid_forward)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, F.sigmoid_backward)


class GELU(_Activation):
    """y = x * Phi(x) (approximate='none'), or its tanh approximation (approximate='tanh'), as ``torch.nn.GELU``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, F.gelu_forward, self.approximate)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, F.gelu_backward)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class _SoftmaxBase(_Activation):
    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def _dim(self, x: np.ndarray) -> int:
        """``dim``, or PyTorch's legacy implicit choice when None: 0 for 0-, 1- and 3-D inputs, else 1."""
        dim = self.dim if self.dim is not None else (0 if x.ndim in (0, 1, 3) else 1)
        if not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
            raise ValueError(f"{self._name()}: dim {dim} is out of range for input of shape {x.shape}")
        return dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """y = exp(x) / sum exp(x) along ``dim``, as ``torch.nn.Softmax``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        dim = self._dim(x)
        y, cache = F.softmax_forward(x, dim)
        self._save_for_backward((y.shape, (cache, dim)))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, lambda dy, c: F.softmax_backward(dy, c[0], c[1]))


class LogSoftmax(_SoftmaxBase):
    """y = x - log sum exp(x) along ``dim``, as ``torch.nn.LogSoftmax``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        dim = self._dim(x)
        y, cache = F.log_softmax_forward(x, dim)
        self._save_for_backward((y.shape, (cache, dim)))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, lambda dy, c: F.log_softmax_backward(dy, c[0], c[1]))
