"""Shape layers for imported graphs: Reshape, Slice, Split, Take (a constant-index gather), Expand.

Each rearranges or copies elements without arithmetic, so each backward routes the gradient back to
where its elements came from: a reshape back, a slice into zeros, a split concatenated, a gather
scatter-added, an expansion summed over the broadcast axes. They are what ONNX's Reshape / Squeeze /
Unsqueeze / Flatten, Slice, Split, Gather (on activations) and Expand become in ``io.load_onnx``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..module import Module
from ._utils import check_array, check_grad
from .merge import unbroadcast
from .misc import _Reshaping


def reshape_target(in_shape: tuple[int, ...], shape: Sequence[int]) -> tuple[int, ...]:
    """ONNX Reshape's target (allowzero=0): an entry 0 copies the input's size on that axis, one -1 is
    inferred (size(x) / product of the others); raises ValueError when no such shape holds x."""
    target = [in_shape[i] if s == 0 and i < len(in_shape) else int(s) for i, s in enumerate(shape)]
    size = int(np.prod(in_shape, dtype=np.int64))
    if target.count(-1) > 1 or any(s < -1 for s in target) or (0 in shape and len(shape) > len(in_shape)
                                                             and 0 in shape[len(in_shape):]):
        raise ValueError(f"reshape: target {tuple(shape)} is not a valid shape for an input of shape {in_shape}")
    if -1 in target:
        known = int(np.prod([s for s in target if s != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot infer the -1 of {tuple(shape)} for an input of shape {in_shape}")
        target[target.index(-1)] = size // known
    if int(np.prod(target, dtype=np.int64)) != size:
        raise ValueError(f"reshape: an input of shape {in_shape} ({size} elements) cannot become {tuple(target)}")
    return tuple(target)


class Reshape(_Reshaping):
    """y = x.reshape(target), target = ``shape`` with ONNX's rules: 0 copies the input's size on that axis
    (keeps the batch axis of a batch-agnostic model), one -1 is inferred. dx = dy.reshape(x.shape)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self._name()}: expected a NumPy array, got {type(x).__name__}")
        try:
            target = reshape_target(x.shape, self.shape)
        except ValueError as e:
            raise ValueError(f"{self._name()}: {e}") from None
        return self._reshaped(x, target)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _slices(shape: tuple[int, ...], starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
            steps: Sequence[int]) -> tuple[slice, ...]:
    """Python slices of ONNX Slice's (starts, ends, axes, steps): negative values count from the end and
    out-of-range ones clamp, exactly as Python's slicing does."""
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % len(shape)] = slice(int(start), int(end), int(step))
    return tuple(index)


class Slice(Module):
    """y = x[starts_k : ends_k : steps_k along axes_k] (ONNX Slice with constant inputs);
    dx = zeros like x with dx[slices] = dy."""

    def __init__(self, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
                 steps: Sequence[int] | None = None) -> None:
        super().__init__()
        self.starts, self.ends, self.axes = (tuple(int(v) for v in a) for a in (starts, ends, axes))
        self.steps = (1,) * len(self.axes) if steps is None else tuple(int(v) for v in steps)
        if not len(self.starts) == len(self.ends) == len(self.axes) == len(self.steps) or 0 in self.steps:
            raise ValueError(f"{self._name()}: starts, ends, axes and steps must have one entry per axis, "
                             f"steps non-zero")

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        if any(not -x.ndim <= a < x.ndim for a in self.axes):
            raise ValueError(f"{self._name()}: axes {self.axes} are out of range for an input of shape {x.shape}")
        index = _slices(x.shape, self.starts, self.ends, self.axes, self.steps)
        y = x[index]
        self._save_for_backward((y.shape, x.shape, index))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, in_shape, index = self._saved()
        check_grad(self, grad_output, shape)
        dx = np.zeros(in_shape, grad_output.dtype)
        dx[index] = grad_output
        return dx

    def extra_repr(self) -> str:
        return f"starts={self.starts}, ends={self.ends}, axes={self.axes}, steps={self.steps}"


class Split(Module):
    """(y_1, ..., y_k) = x cut along ``axis`` into pieces of ``sizes``; dx = concatenate(dy_1..dy_k, axis)."""

    def __init__(self, sizes: Sequence[int], axis: int = 0) -> None:
        super().__init__()
        self.sizes, self.axis = tuple(int(s) for s in sizes), int(axis)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        check_array(self, x)
        if not -x.ndim <= self.axis < x.ndim or sum(self.sizes) != x.shape[self.axis]:
            raise ValueError(f"{self._name()}: cannot split an input of shape {x.shape} into {self.sizes} "
                             f"along axis {self.axis}")
        ys = tuple(np.split(x, np.cumsum(self.sizes)[:-1], axis=self.axis))
        self._save_for_backward(tuple(y.shape for y in ys))
        return ys

    def backward(self, grad_output: Sequence[np.ndarray]) -> np.ndarray:
        shapes = self._saved()
        if len(grad_output) != len(shapes):
            raise ValueError(f"{self._name()}: backward expected {len(shapes)} gradients, got {len(grad_output)}")
        for g, shape in zip(grad_output, shapes):
            check_grad(self, g, shape)
        return np.concatenate(grad_output, axis=self.axis)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, axis={self.axis}"


class Take(Module):
    """y = take(x, indices, axis) for constant integer ``indices`` (ONNX Gather on an activation: a scalar
    index drops the axis, ViT's class-token selection x[:, 0]); dx = zeros, scatter-added with dy."""

    def __init__(self, indices: Any, axis: int = 0) -> None:
        super().__init__()
        self.indices, self.axis = np.asarray(indices, np.int64), int(axis)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_array(self, x)
        if not -x.ndim <= self.axis < x.ndim or np.any(self.indices >= x.shape[self.axis]) \
                or np.any(self.indices < -x.shape[self.axis]):
            raise ValueError(f"{self._name()}: indices in [{self.indices.min()}, {self.indices.max()}] do not fit "
                             f"axis {self.axis} of an input of shape {x.shape}")
        y = np.take(x, self.indices, axis=self.axis)
        self._save_for_backward((y.shape, x.shape))
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        shape, in_shape = self._saved()
        check_grad(self, grad_output, shape)
        axis = self.axis % len(in_shape)
        dx = np.zeros(in_shape, grad_output.dtype)
        moved = np.moveaxis(dx, axis, 0)                               # a view: (in_shape[axis], ...)
        dy = grad_output.reshape(in_shape[:axis] + (self.indices.size,) + in_shape[axis + 1:])
        np.add.at(moved, self.indices.reshape(-1) % in_shape[axis], np.moveaxis(dy, axis, 0))
        return dx

    def extra_repr(self) -> str:
        return f"indices={self.indices.tolist()}, axis={self.axis}"


class Expand(Module):
    """y = broadcast(x, shape) (ONNX Expand: NumPy broadcasting of x and ``shape`` both ways);
    dx = dy summed over the broadcast axes.

    ``batch_from_input=True``: the module takes ``(x, reference)`` and ``shape[0]`` is the reference's
    axis 0 at each call (a class token expanded to the batch, ``class_token.expand(n, -1, -1)``); the
    reference only gives a size and gets no gradient (None).
    """

    def __init__(self, shape: Sequence[int], batch_from_input: bool = False) -> None:
        super().__init__()
        self.shape, self.batch_from_input = tuple(int(s) for s in shape), bool(batch_from_input)

    def forward(self, x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        check_array(self, x)
        shape = self.shape
        if self.batch_from_input:
            if reference is None or np.ndim(reference) == 0:
                raise ValueError(f"{self._name()}: expected a reference input giving the batch size")
            shape = (np.shape(reference)[0],) + shape[1:]
        try:
            out_shape = np.broadcast_shapes(x.shape, shape)
        except ValueError:
            raise ValueError(f"{self._name()}: an input of shape {x.shape} cannot expand to {shape}") from None
        y = np.broadcast_to(x, out_shape).copy()
        self._save_for_backward((y.shape, x.shape))
        return y

    def backward(self, grad_output: np.ndarray) -> Any:
        shape, in_shape = self._saved()
        check_grad(self, grad_output, shape)
        dx = unbroadcast(grad_output, in_shape)
        return (dx, None) if self.batch_from_input else dx

    def extra_repr(self) -> str:
        return f"shape={self.shape}" + (", batch_from_input=True" if self.batch_from_input else "")
