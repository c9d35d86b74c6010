"""An ONNX file as plain Python: nodes, initializers as ndarrays, inputs with their shapes, the opset.

Only this file touches the ``onnx`` package's protobuf classes (``onnx`` is the ``[onnx]`` extra,
imported here at call time). Attributes become Python values (ints, floats, strings, lists, ndarrays
for tensors); a graph attribute (If / Loop / Scan bodies) is kept as the string ``'<graph>'`` so the
converter table refuses its node by op type.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..limits import ByteBudget

SUPPORTED_OPSETS = range(13, 22)


@dataclass
class OnnxNode:
    name: str
    op_type: str
    inputs: list[str]          # '' marks an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, k: int) -> str:
        """Input ``k``, or '' when it is omitted."""
        return self.inputs[k] if k < len(self.inputs) else ""


@dataclass
class OnnxInput:
    name: str
    shape: tuple[int | str | None, ...]    # an int, a symbolic name, or None (unknown)
    dtype: np.dtype


@dataclass
class OnnxGraph:
    nodes: list[OnnxNode]
    initializers: dict[str, np.ndarray]
    inputs: list[OnnxInput]                # graph inputs that are not initializers
    outputs: list[str]
    opset: int


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("load_onnx needs the onnx package: pip install 'minicompress[onnx]'") from None
    return onnx


def read_onnx(path: str, max_bytes: int | None = None) -> OnnxGraph:
    """Parse ``path`` (checked by ``onnx.checker``) into an ``OnnxGraph``; refuses opsets outside 13-21.

    Only single-file models are read (an initializer whose data lives in an external file is refused:
    such a file names other paths to read). The initializers' arrays count against ``max_bytes``
    (``io.limits``: default 256 MiB + 64 x the file's size), checked from their shapes before any is built.
    """
    onnx = import_onnx()
    from onnx import helper, numpy_helper
    name = os.fspath(path)
    budget = ByteBudget(name, os.path.getsize(name), max_bytes)
    try:
        model = onnx.load(name, load_external_data=False)
    except Exception as e:
        raise ValueError(f"load_onnx: {path} is not a valid ONNX model ({type(e).__name__}: {e})") from None
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"load_onnx: {path}: initializer {t.name!r} keeps its data in an external file; "
                             f"only single-file models are read (onnx.save_model(..., save_as_external_data=False))")
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        budget.spend(int(np.prod(t.dims, dtype=np.int64)) * itemsize, f"initializer {t.name!r} {list(t.dims)}")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ValueError(f"load_onnx: {path} is not a valid ONNX model ({type(e).__name__}: {e})") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"load_onnx: {path} uses opset {opset} of the default domain; opsets "
                         f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} are supported")
    g = model.graph
    initializers = {t.name: numpy_helper.to_array(t) for t in g.initializer}

    def value(a: Any) -> Any:
        v = helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            return numpy_helper.to_array(v)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, (onnx.GraphProto,)) or (isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto)):
            return "<graph>"
        return list(v) if isinstance(v, (list, tuple)) or type(v).__name__.endswith("Container") else v

    nodes = []
    for k, n in enumerate(g.node):
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        nodes.append(OnnxNode(n.name or f"{n.op_type}_{k}", op, list(n.input), list(n.output),
                              {a.name: value(a) for a in n.attribute}))
    inputs = []
    for i in g.input:
        if i.name in initializers:
            continue
        t = i.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        inputs.append(OnnxInput(i.name, dims, helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return OnnxGraph(nodes, initializers, inputs, [o.name for o in g.output], opset)
