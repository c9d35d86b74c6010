"""Arithmetic layers for imported graphs: an operation with a constant operand, Sub, MatMul, Erf.

``ConstantOperand(op, constant, constant_first)`` is ONNX's Add / Sub / Mul / Div with one operand
known at load time (GELU's ``/ sqrt 2`` and ``* 0.5``, attention's ``* 1/sqrt(sqrt d)``); the constant
is a buffer (saved, never trained). A trainable operand (a ViT's position embedding) is a Parameter of
the graph instead, fed to ``nn.Add`` / ``nn.Mul`` (see ``nn.GraphModule``). The gradient of a broadcast
input is summed back to its shape, as for the merges.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..functional.activation import _erf
from ..module import Module
from ._utils import check_array, check_grad
from .merge import _broadcast_shape, unbroadcast

OPS = ("add", "sub", "mul", "div")


def constant_op_forward(x: np.ndarray, c: np.ndarray, op: str, constant_first: bool) -> np.ndarray:
    """y = x + c,  x - c (c - x if constant_first),  x * c,  x / c (c / x if constant_first).

    0-d operands give a 0-d array (NumPy would return a scalar): a dynamic quantization scale is one."""
    a, b = (c, x) if constant_first else (x, c)
    if op == "add":
        return np.asarray(a + b)
    if op == "sub":
        return np.asarray(a - b)
    return np.asarray(a * b if op == "mul" else a / b)


def constant_op_backward(dy: np.ndarray, x: np.ndarray, y: np.ndarray, c: np.ndarray, op: str,
                         constant_first: bool) -> np.ndarray:
    """dx = dy (add),  +-dy (sub),  dy * c (mul),  dy / c (x / c),  -dy * y / x (c / x: d(c/x) = -c / x^2);
    summed back to x's shape."""
    if op == "add":
        dx = dy
    elif op == "sub":
        dx = -dy if constant_first else dy
    elif op == "mul":
        dx = dy * c
    else:
        dx = -dy * y / x if constant_first else dy / c
    return unbroadcast(dx, x.shape)


class ConstantOperand(Module):
    """y = x (op) constant, op one of add / sub / mul / div (``constant_first``: constant (op) x)."""

    def __init__(self, op: str, constant: Any, constant_first: bool = False) -> None:
        super().__init__()
        if op not in OPS:
            raise ValueError(f"ConstantOperand: op must be one of {OPS}, got {op!r}")
        self.op, self.constant_first = op, bool(constant_first)
        self.register_buffer("constant", np.asarray(constant))

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        c = self.constant.astype(x.dtype, copy=False)
        _broadcast_shape(self, (x, c))
        y = constant_op_forward(x, c, self.op, self.constant_first)
        self._save_for_backward((y.shape, x if self.op in ("mul", "div") else x.shape, y))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, x, y = self._saved()
        check_grad(self, grad_output, shape)
        if not isinstance(x, np.ndarray):                # add / sub kept only the input's shape
            x = np.broadcast_to(np.zeros((), grad_output.dtype), x)
        c = self.constant.astype(grad_output.dtype, copy=False)
        return constant_op_backward(grad_output, x, y, c, self.op, self.constant_first)

    def extra_repr(self) -> str:
        value = self.constant.item() if self.constant.size == 1 else f"array{self.constant.shape}"
        return f"{self.op!r}, {value}" + (", constant_first=True" if self.constant_first else "")


class Sub(Module):
    """y = x - other (broadcasting); dx = dy, d other = -dy (each summed back to its shape)."""

    def forward(self, x: np.ndarray, other: np.ndarray) -> np.ndarray:
        _broadcast_shape(self, (x, other))
        y = x - other
        self._save_for_backward((y.shape, x.shape, other.shape))
        return y

    def backward(self, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape, x_shape, other_shape = self._saved()
        check_grad(self, grad_output, shape)
        return unbroadcast(grad_output, x_shape), unbroadcast(-grad_output, other_shape)


class MatMul(Module):
    """y = a @ b of two activations (numpy.matmul: batched over the leading axes, broadcasting; both at
    least 2-D), attention's q k^T and p v.   da = dy @ b^T,  db = a^T @ dy (summed back to their shapes)."""

    def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        check_array(self, a), check_array(self, b)
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"{self._name()}: cannot multiply inputs of shapes {a.shape} and {b.shape}")
        y = np.matmul(a, b)
        self._save_for_backward((y.shape, a, b))
        return y

    def backward(self, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape, a, b = self._saved()
        check_grad(self, grad_output, shape)
        da = np.matmul(grad_output, np.swapaxes(b, -1, -2))
        db = np.matmul(np.swapaxes(a, -1, -2), grad_output)
        return unbroadcast(da, a.shape), unbroadcast(db, b.shape)


class Erf(Module):
    """y = erf(x) (in float64, rounded to x's dtype);  dx = dy * 2 / sqrt(pi) * exp(-x^2)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        y = _erf(x).astype(x.dtype)
        self._save_for_backward((y.shape, x))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, x = self._saved()
        check_grad(self, grad_output, shape)
        return grad_output * (2.0 / np.sqrt(np.pi) * np.exp(-np.square(x))).astype(grad_output.dtype)
