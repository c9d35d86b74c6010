"""Merges as leaf modules, so that every tool (tracing, pruning, quantization) sees them.

``Add``, ``Mul`` and ``Cat`` take several inputs, ``forward(*inputs)``, and their ``backward(dout)``
returns one gradient per input (a tuple). Inputs broadcast as in NumPy; the gradient of a broadcast
input is summed back to its shape. ``FloatFunctional`` is PyTorch's eager-quantization helper
(``add``, ``add_relu``, ``mul``, ``cat``, ``add_scalar``, ``mul_scalar``), for code ported from
torchvision's quantizable models: each call but the two scalar ones passes its result through
``activation_post_process`` (Identity; an observer after ``prepare``; PyTorch does not observe
``add_scalar`` / ``mul_scalar``, whose quantized forms choose their own output qparams), and ``backward``
answers the latest call not yet used.
Its methods go through the module call (``self("add", x, y)``), so hooks and tracing see them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..functional import activation as A
from ..module import Module
from ._utils import check_array, check_grad
from .misc import Identity


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes NumPy broadcast to reach it from ``shape`` (d of a broadcast input)."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad


def _broadcast_shape(module: Module, inputs: Sequence[np.ndarray]) -> tuple[int, ...]:
    for x in inputs:
        check_array(module, x)
    try:
        return np.broadcast_shapes(*(x.shape for x in inputs))
    except ValueError:
        raise ValueError(f"{module._name()}: inputs of shapes {[x.shape for x in inputs]} do not broadcast "
                         f"to one shape") from None


def add_forward(*inputs: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x_1 + x_2 + ... ; cache: the input shapes."""
    y = inputs[0]
    for x in inputs[1:]:
        y = y + x
    return y, tuple(x.shape for x in inputs)


def add_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, ...]:
    """dx_k = dy (summed over the axes input k was broadcast along): a residual's paths each get dy."""
    return tuple(unbroadcast(dy, shape) for shape in cache)


def mul_forward(x: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x * other (elementwise, broadcasting; 0-d inputs give a 0-d array); cache: both inputs."""
    return np.asarray(x * other), (x, other)


def mul_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray]:
    """dx = dy * other,  d other = dy * x   (each summed back to its input's shape)."""
    x, other = cache
    return unbroadcast(dy * other, x.shape), unbroadcast(dy * x, other.shape)


def cat_forward(inputs: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, tuple]:
    """y = concatenate(inputs, dim); cache: (dim, the inputs' sizes along dim)."""
    return np.concatenate(inputs, axis=dim), (dim, [x.shape[dim] for x in inputs])


def cat_backward(dy: np.ndarray, cache: tuple) -> tuple[np.ndarray, ...]:
    """dx_k = the slice of dy that input k filled."""
    dim, sizes = cache
    return tuple(np.split(dy, np.cumsum(sizes)[:-1], axis=dim))


class Add(Module):
    """y = x_1 + x_2 + ... (two or more inputs, broadcasting); backward returns one gradient per input."""

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        if len(inputs) < 2:
            raise ValueError(f"{self._name()}: expected two or more inputs, got {len(inputs)}")
        _broadcast_shape(self, inputs)
        y, cache = add_forward(*inputs)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> tuple[np.ndarray, ...]:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        return add_backward(grad_output, cache)


class Mul(Module):
    """y = x * other (broadcasting, e.g. a squeeze-excitation gate (N, C, 1, 1) on (N, C, H, W))."""

    def forward(self, x: np.ndarray, other: np.ndarray) -> np.ndarray:
        _broadcast_shape(self, (x, other))
        y, cache = mul_forward(x, other)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        return mul_backward(grad_output, cache)


class Cat(Module):
    """y = concatenate(inputs, dim), as ``torch.cat`` in a module; backward splits the gradient."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        for x in inputs:
            check_array(self, x)
        shapes = [x.shape for x in inputs]
        ndim = inputs[0].ndim if inputs else 0
        if not inputs or not -ndim <= self.dim < ndim or any(
                x.ndim != ndim or np.delete(x.shape, self.dim % ndim).tolist() != np.delete(shapes[0], self.dim % ndim).tolist()
                for x in inputs):
            raise ValueError(f"{self._name()}: cannot concatenate inputs of shapes {shapes} along dim {self.dim}")
        y, cache = cat_forward(inputs, self.dim)
        self._save_for_backward((y.shape, cache))
        return y

    def backward(self, grad_output: np.ndarray) -> tuple[np.ndarray, ...]:
        shape, cache = self._saved()
        check_grad(self, grad_output, shape)
        return cat_backward(grad_output, cache)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class FloatFunctional(Module):
    """``torch.ao.nn.quantized.FloatFunctional``: tensor ops as methods, each result passed through
    ``activation_post_process`` (so that ``prepare`` can observe it; ``convert`` makes it QFunctional).

    ``forward(op, *args)`` runs one of the methods by name (the methods call it, so that hooks see
    every op; PyTorch's ``forward`` raises instead). ``backward(dout)`` undoes the latest method call
    not yet used and returns its input gradients (one per tensor input; a tuple for two or more).
    """

    OPS = ("add", "add_relu", "mul", "cat", "add_scalar", "mul_scalar")

    def __init__(self) -> None:
        super().__init__()
        self.activation_post_process = Identity()

    def forward(self, op: str, *args: Any) -> np.ndarray:
        if op not in self.OPS:
            raise ValueError(f"FloatFunctional: unknown op {op!r}; expected one of {self.OPS} (call the methods)")
        if op == "cat":
            xs, dim = args
            for x in xs:
                check_array(self, x)
            out, cache = cat_forward(list(xs), dim)
        elif op in ("add_scalar", "mul_scalar"):
            x, c = args
            check_array(self, x)
            out, cache = (x + x.dtype.type(c), None) if op == "add_scalar" else (x * x.dtype.type(c), c)
        else:
            x, y = args
            _broadcast_shape(self, (x, y))
            out, cache = mul_forward(x, y) if op == "mul" else add_forward(x, y)
            if op == "add_relu":
                out, relu_cache = A.relu_forward(out)
                cache = (cache, relu_cache)
        self._save_for_backward((op, out.shape, cache))
        return out if op in ("add_scalar", "mul_scalar") else self.activation_post_process(out)

    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x + y."""
        return self("add", x, y)

    def add_relu(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """relu(x + y)."""
        return self("add_relu", x, y)

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x * y."""
        return self("mul", x, y)

    def cat(self, xs: Sequence[np.ndarray], dim: int = 0) -> np.ndarray:
        """concatenate(xs, dim) (PyTorch's default dim 0)."""
        return self("cat", list(xs), dim)

    def add_scalar(self, x: np.ndarray, y: float) -> np.ndarray:
        """x + y for a Python number y."""
        return self("add_scalar", x, y)

    def mul_scalar(self, x: np.ndarray, y: float) -> np.ndarray:
        """x * y for a Python number y."""
        return self("mul_scalar", x, y)

    def backward(self, grad_output: np.ndarray) -> Any:
        op, shape, cache = self._saved()
        dy = grad_output if op in ("add_scalar", "mul_scalar") else self.activation_post_process.backward(grad_output)
        check_grad(self, dy, shape)
        if op == "add":
            return add_backward(dy, cache)
        if op == "add_relu":
            return add_backward(A.relu_backward(dy, cache[1]), cache[0])
        if op == "mul":
            return mul_backward(dy, cache)
        if op == "cat":
            return cat_backward(dy, cache)
        if op == "add_scalar":
            return dy
        return dy * dy.dtype.type(cache)
