"""Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Gather, Expand, Identity.

Every shape input (Reshape's shape, Slice's bounds, Squeeze's axes, Split's sizes: inputs since
opset 13) must be known at load time; a shape that follows the batch size becomes a Reshape entry 0
(copy the input's batch axis) or -1 (``builder.batch_template``).
"""
from __future__ import annotations

import numpy as np

from ....nn import layers as L
from ....nn.init import skip_init
from ..builder import PROBE_BATCHES, Builder, batch_template, refuse
from ..fold import FOLD
from ..reader import OnnxNode
from ._weights import set_tensor


def _reshape_to(b: Builder, node: OnnxNode, out_shapes: tuple) -> None:
    """A Reshape from input 0's shapes to ``out_shapes`` (one per probe)."""
    b.emit(node, L.Reshape(batch_template(node, b.shapes(node, 0), out_shapes)), [b.data(node, 0)])


def _folded_shapes(b: Builder, node: OnnxNode) -> tuple:
    """The output shape of a pure shape op at each probe, computed on zeros of the input's shapes."""
    consts = [None if not v else (b.values[v].probes if b.values[v].kind == "const" else None) for v in node.inputs]
    out = []
    for p, shape in enumerate(b.shapes(node, 0)):
        xs = [np.zeros(shape, np.float32)] + [None if c is None else c[p] for c in consts[1:]]
        out.append(FOLD[node.op_type](node, xs).shape)
    return tuple(out)


def reshape(b: Builder, node: OnnxNode) -> None:
    if node.attr("allowzero", 0):
        raise refuse(node, "allowzero=1 is not supported")
    b.const(node, 1, "shape")
    _reshape_to(b, node, _folded_shapes(b, node))


def flatten(b: Builder, node: OnnxNode) -> None:
    """ONNX Flatten(axis) is always 2-D: (prod shape[:axis], prod shape[axis:]); axis 1 is nn.Flatten."""
    shapes = b.shapes(node, 0)
    axis = int(node.attr("axis", 1)) % (len(shapes[0]) + 1)
    if axis == 1 and len(shapes[0]) >= 2:
        b.emit(node, L.Flatten(1, -1), [b.data(node, 0)])
        return
    _reshape_to(b, node, tuple((int(np.prod(s[:axis])), int(np.prod(s[axis:]))) for s in shapes))


def squeeze_like(b: Builder, node: OnnxNode) -> None:
    """Squeeze / Unsqueeze (axes an input since opset 13): a Reshape."""
    if node.input(1):
        b.static(node, 1, "axes")
    _reshape_to(b, node, _folded_shapes(b, node))


def transpose(b: Builder, node: OnnxNode) -> None:
    ndim = len(b.shapes(node, 0)[0])
    perm = node.attr("perm", list(range(ndim))[::-1])
    b.emit(node, L.Permute(perm), [b.data(node, 0)])


def concat(b: Builder, node: OnnxNode) -> None:
    ins = [b.operand(node, k) for k in range(len(node.inputs))]
    b.emit(node, L.Cat(int(node.attr("axis"))), ins)


def split(b: Builder, node: OnnxNode) -> None:
    """Sizes from the ``split`` input (opset >= 13), else ``num_outputs`` (opset 18) or equal parts:
    ceil(n / k) each, the last one smaller."""
    shape = b.shapes(node, 0)[0]
    axis = int(node.attr("axis", 0)) % len(shape)
    if node.input(1):
        sizes = [int(s) for s in b.static(node, 1, "split")]
    else:
        k = int(node.attr("num_outputs", len(node.outputs)))
        part = -(-shape[axis] // k)
        sizes = [min(part, shape[axis] - i * part) for i in range(k)]
    if axis == 0 and b.shapes(node, 0)[0][0] != b.shapes(node, 0)[1][0]:
        raise refuse(node, "a split along the batch axis is not supported")
    b.emit(node, L.Split(sizes, axis), [b.data(node, 0)])


def slice_(b: Builder, node: OnnxNode) -> None:
    shapes = b.shapes(node, 0)
    starts, ends = (b.static(node, k, what).reshape(-1) for k, what in ((1, "starts"), (2, "ends")))
    axes = b.static(node, 3, "axes")
    axes = list(range(len(starts))) if axes is None else axes.reshape(-1).tolist()
    steps = b.static(node, 4, "steps")
    steps = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    if any(a % len(shapes[0]) == 0 for a in axes) and shapes[0][0] != shapes[1][0]:
        raise refuse(node, "a slice along the batch axis is not supported")
    b.emit(node, L.Slice(starts.tolist(), ends.tolist(), axes, steps), [b.data(node, 0)])


def gather(b: Builder, node: OnnxNode) -> None:
    """A constant table indexed by integer activations (axis 0) is an Embedding; an activation indexed
    by constant indices is a Take."""
    axis = int(node.attr("axis", 0))
    if b.is_const(node, 0):
        table = b.static(node, 0, "table")
        if axis != 0 or table.ndim != 2:
            raise refuse(node, f"a constant table of shape {table.shape} gathered along axis {axis}: only 2-D "
                               f"tables along axis 0 (an embedding) are supported")
        with skip_init():
            module = L.Embedding(table.shape[0], table.shape[1])
        set_tensor(module, "weight", table)
        b.emit(node, module, [b.data(node, 1, "indices")], node.input(0).removesuffix(".weight"))
        return
    indices = b.static(node, 1, "indices")
    if axis % len(b.shapes(node, 0)[0]) == 0 and b.shapes(node, 0)[0][0] != b.shapes(node, 0)[1][0]:
        raise refuse(node, "a gather along the batch axis is not supported")
    b.emit(node, L.Take(indices, axis), [b.data(node, 0)])


def expand(b: Builder, node: OnnxNode) -> None:
    """Expand(x, shape); a shape whose first entry is the batch size reads it from the graph's first input."""
    x = b.operand(node, 0)
    s1, s2 = (s.reshape(-1).tolist() for s in b.const(node, 1, "shape"))
    if s1 == s2:
        b.emit(node, L.Expand(s1), [x])
        return
    first = b.graph.inputs[0].name
    if s1[1:] != s2[1:] or (s1[0], s2[0]) != tuple(np.shape(b.values[first].probes[p])[0] for p in range(2)):
        raise refuse(node, f"its shape depends on the batch size other than through its first entry ({s1} at batch "
                           f"{PROBE_BATCHES[0]}, {s2} at batch {PROBE_BATCHES[1]})")
    b.emit(node, L.Expand(s1, batch_from_input=True), [x, first])


def identity(b: Builder, node: OnnxNode) -> None:
    b.alias(node.outputs[0], b.data(node, 0))


SHAPES = {"Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze_like, "Unsqueeze": squeeze_like,
          "Transpose": transpose, "Concat": concat, "Split": split, "Slice": slice_, "Gather": gather,
          "Expand": expand, "Identity": identity}
