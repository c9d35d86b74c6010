"""Activation layers: thin Modules around ``functional.activation``."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..functional import activation as F
from ..module import Module, Parameter
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


class Hardtanh(_Activation):
    """y = clamp(x, min_val, max_val), as ``torch.nn.Hardtanh``; the gradient passes where min_val < x < max_val."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        if max_val <= min_val:
            raise ValueError(f"Hardtanh: max_val must be greater than min_val, got min_val={min_val}, "
                             f"max_val={max_val}")
        self.min_val, self.max_val, self.inplace = float(min_val), float(max_val), inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, F.hardtanh_forward, self.min_val, self.max_val, self.inplace)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, F.hardtanh_backward)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """y = min(max(x, 0), 6), as ``torch.nn.ReLU6`` (MobileNet's activation): Hardtanh(0, 6)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class _InplaceElementwise(_Activation):
    """An elementwise activation with only ``inplace``: the functional pair named by the subclass."""

    _pair: tuple[Callable, Callable]

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, type(self)._pair[0], self.inplace)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self._grad(grad_output, type(self)._pair[1])

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Hardsigmoid(_InplaceElementwise):
    """y = relu6(x + 3) / 6, as ``torch.nn.Hardsigmoid`` (MobileNetV3's gate; repr without inplace, as PyTorch's)."""

    _pair = (F.hardsigmoid_forward, F.hardsigmoid_backward)

    def extra_repr(self) -> str:
        return ""


class Hardswish(_InplaceElementwise):
    """y = x * relu6(x + 3) / 6, as ``torch.nn.Hardswish`` (repr without inplace, as PyTorch's)."""

    _pair = (F.hardswish_forward, F.hardswish_backward)

    def extra_repr(self) -> str:
        return ""


class SiLU(_InplaceElementwise):
    """y = x * sigmoid(x), as ``torch.nn.SiLU``."""

    _pair = (F.silu_forward, F.silu_backward)


class PReLU(Module):
    """y = x if x > 0 else a * x with a learned slope ``weight``: one shared (num_parameters=1) or one
    per channel (axis 1 of the input), as ``torch.nn.PReLU`` (init 0.25, state-dict key ``weight``)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, dtype=None) -> None:
        super().__init__()
        if not isinstance(num_parameters, int) or num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be a positive int, got {num_parameters!r}")
        self.num_parameters = num_parameters
        self.init = init
        self.weight = Parameter(np.full(num_parameters, init, dtype=np.dtype(np.float32 if dtype is None else dtype)))

    def reset_parameters(self) -> None:
        self.weight.data[...] = self.init

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = self.array("weight")
        check_array(self, x, weight.dtype)
        channels = x.shape[1] if x.ndim >= 2 else 1
        if self.num_parameters != 1 and channels != self.num_parameters:
            raise ValueError(f"{self._name()}: expected input (N, {self.num_parameters}, *) "
                             f"(one slope per channel), got {x.shape}")
        y, cache = F.prelu_forward(x, weight)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        dx, dweight = F.prelu_backward(grad_output, cache)
        self.accumulate_grad("weight", dweight)
        return dx

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"
