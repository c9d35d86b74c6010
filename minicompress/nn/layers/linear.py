"""Linear layer: a thin Module around ``functional.linear``."""
from __future__ import annotations

import numpy as np

from .. import init
from ..functional.linear import linear_backward, linear_forward
from ..module import Module, Parameter
from ._utils import backward_without_input_grad, check_array, check_grad


class Linear(Module):
    """y = x W^T + b,  as ``torch.nn.Linear`` (same arguments, defaults, attributes, state-dict keys).

    Parameters: ``weight`` (out_features, in_features), ``bias`` (out_features,) unless ``bias=False``.
    Initialisation: W, b ~ U(-1/sqrt(in_features), 1/sqrt(in_features)) (PyTorch's default).
    ``rng`` (Generator or seed) draws the initial weights; ``dtype`` defaults to float32.
    ``backward_params`` (the input was data, as ``train.fit`` knows) skips d loss / d input for one
    call; ``needs_input_grad = False`` skips it for every call (``backward`` then returns None).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype=None, rng=None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.needs_input_grad = True
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        init.default_weight_and_bias_(self.weight, self.bias, rng=rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        weight = self.array("weight")
        check_array(self, x, weight.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self._name()}: expected input (*, {self.in_features}), got {x.shape}")
        y, cache = linear_forward(x, weight, self.array("bias"))
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray | None:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        dx, dW, db = linear_backward(grad_output, cache, self.needs_input_grad)
        self.accumulate_grad("weight", dW, fresh=True)
        if self.array("bias") is not None:
            self.accumulate_grad("bias", db, fresh=True)
        return dx

    def backward_params(self, grad_output: np.ndarray) -> None:
        """dW and db of ``backward``, without the d input GEMM dx = dy W (the input was data)."""
        backward_without_input_grad(self, grad_output)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
