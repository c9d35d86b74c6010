"""Load-time evaluation of the constant part of an ONNX graph (shape arithmetic), in NumPy.

torch's exporter computes many shapes at run time: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
``load_onnx`` knows every activation's shape (it runs the graph being built on two probe batches), so
such chains are constants here and are evaluated once, by the functions below; only the result (a
Reshape's target, a Slice's bounds) reaches a module. None of these become modules: their inputs do
not depend on the data. Each takes the node and its input arrays ('' inputs are None).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .reader import OnnxNode


def _axes(node: OnnxNode, xs: list[Any], k: int) -> list[int] | None:
    """Axes from input ``k`` (opset >= 13) or the ``axes`` attribute."""
    if len(xs) > k and xs[k] is not None:
        return [int(a) for a in np.asarray(xs[k]).reshape(-1)]
    return node.attr("axes")


def _unsqueeze(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    x, axes = np.asarray(xs[0]), _axes(node, xs, 1)
    out_ndim = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(a % out_ndim for a in axes)))


def _squeeze(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    axes = _axes(node, xs, 1)
    return np.squeeze(xs[0], axis=None if axes is None else tuple(axes))


def _slice(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    x = np.asarray(xs[0])
    starts, ends = np.asarray(xs[1]).reshape(-1), np.asarray(xs[2]).reshape(-1)
    axes = _axes(node, xs, 3) or list(range(len(starts)))
    steps = np.asarray(xs[4]).reshape(-1) if len(xs) > 4 and xs[4] is not None else np.ones(len(starts), np.int64)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _reshape(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    from ...nn.layers.shape import reshape_target
    return np.asarray(xs[0]).reshape(reshape_target(np.shape(xs[0]), np.asarray(xs[1]).reshape(-1).tolist()))


def _div(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    a, b = np.asarray(xs[0]), np.asarray(xs[1])
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":          # ONNX integer Div truncates toward zero
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(np.result_type(a, b))
    return a / b


def _mod(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    return np.fmod(xs[0], xs[1]) if node.attr("fmod", 0) else np.mod(xs[0], xs[1])


# Shape arithmetic never needs large arrays: a constant this evaluates has at most this many elements
# (a file asking ConstantOfShape / Expand / Range for more is refused before anything is allocated).
MAX_FOLDED_ELEMENTS = 1 << 22


def _sized(shape: Any, node: OnnxNode) -> tuple[int, ...]:
    shape = tuple(int(s) for s in np.asarray(shape).reshape(-1))
    if any(s < 0 for s in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_FOLDED_ELEMENTS:
        raise ValueError(f"node {node.name!r} ({node.op_type}) asks for a constant of shape {shape}; at most "
                         f"{MAX_FOLDED_ELEMENTS} elements are evaluated at load time")
    return shape


def _constant_of_shape(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    value = node.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return np.full(_sized(xs[0], node), value.reshape(-1)[0], value.dtype)


def _range(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    start, limit, delta = (np.asarray(x).item() for x in xs[:3])
    _sized([max(int(np.ceil((limit - start) / delta)), 0) if delta else -1], node)
    return np.arange(start, limit, delta, dtype=np.asarray(xs[0]).dtype)


def _expand(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    x = np.asarray(xs[0])
    shape = np.broadcast_shapes(x.shape, _sized(xs[1], node))
    _sized(shape, node)
    return np.broadcast_to(x, shape).copy()


def _cast(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    from onnx import helper
    return np.asarray(xs[0]).astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))


def _shape(node: OnnxNode, xs: list[Any]) -> np.ndarray:
    return shape_of(np.shape(xs[0]), node)


def shape_of(shape: tuple[int, ...], node: OnnxNode) -> np.ndarray:
    """ONNX Shape (with opset 15's start / end) of an array of ``shape``."""
    end = node.attr("end")
    return np.array(shape[node.attr("start", 0):end], np.int64)


def _binary(fn: Callable) -> Callable:
    return lambda node, xs: np.asarray(fn(np.asarray(xs[0]), np.asarray(xs[1])))


FOLD: dict[str, Callable[[OnnxNode, list[Any]], np.ndarray]] = {
    "Identity": lambda node, xs: np.asarray(xs[0]),
    "Cast": _cast,
    "Shape": _shape,
    "Size": lambda node, xs: np.array(np.size(xs[0]), np.int64),
    "Gather": lambda node, xs: np.take(xs[0], np.asarray(xs[1]), axis=node.attr("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda node, xs: np.concatenate([np.asarray(x) for x in xs], axis=node.attr("axis")),
    "Slice": _slice,
    "Reshape": _reshape,
    "Transpose": lambda node, xs: np.transpose(xs[0], node.attr("perm")),
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _div,
    "Mod": _mod, "Min": lambda node, xs: np.minimum.reduce([np.asarray(x) for x in xs]),
    "Max": lambda node, xs: np.maximum.reduce([np.asarray(x) for x in xs]),
    "Equal": _binary(np.equal), "Less": _binary(np.less), "Greater": _binary(np.greater),
    "Where": lambda node, xs: np.where(xs[0], xs[1], xs[2]),
    "Not": lambda node, xs: np.logical_not(xs[0]),
    "Neg": lambda node, xs: np.negative(xs[0]), "Abs": lambda node, xs: np.abs(xs[0]),
    "Sqrt": lambda node, xs: np.sqrt(xs[0]), "Floor": lambda node, xs: np.floor(xs[0]),
    "Ceil": lambda node, xs: np.ceil(xs[0]), "Pow": _binary(np.power),
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Expand": _expand,
    "ReduceProd": lambda node, xs: np.prod(xs[0], axis=None if _axes(node, xs, 1) is None else tuple(_axes(node, xs, 1)),
                                           keepdims=bool(node.attr("keepdims", 1))),
}


def constant_node_value(node: OnnxNode) -> np.ndarray:
    """The value of an ONNX Constant node (``value`` tensor, or one of the ``value_*`` attributes)."""
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype)
    raise ValueError(f"load_onnx: Constant node {node.name!r} has no value this reader knows "
                     f"(attributes {sorted(node.attrs)})")
