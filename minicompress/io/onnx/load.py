"""``load_onnx(path)``: an ONNX model as an ``nn.GraphModule`` of the engine's own layers."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ...nn.graph_module import GraphModule
from .builder import PROBE_BATCHES, Builder, OnnxImportError, Value, refuse
from .converters import CONVERTERS
from .fold import FOLD, constant_node_value, shape_of
from .qdq_fusion import fuse_qdq_groups
from .reader import OnnxGraph, read_onnx


def unsupported(graph: OnnxGraph) -> OrderedDict[str, list[str]]:
    """``{op type: [node names]}`` of every node no converter and no load-time evaluation handles."""
    found: OrderedDict[str, list[str]] = OrderedDict()
    for node in graph.nodes:
        if node.op_type not in CONVERTERS and node.op_type not in FOLD and node.op_type != "Constant":
            found.setdefault(node.op_type, []).append(node.name)
    return found


def _refuse_unsupported(path: str, graph: OnnxGraph) -> None:
    found = unsupported(graph)
    if found:
        parts = [f"{op} x{len(names)} (node{'s' if len(names) > 1 else ''} "
                 f"{', '.join(repr(n) for n in names[:5])}{', ...' if len(names) > 5 else ''})"
                 for op, names in found.items()]
        raise OnnxImportError(f"load_onnx: {path} has {sum(map(len, found.values()))} nodes of unsupported "
                              f"operators: {'; '.join(parts)}. Supported: {', '.join(sorted(CONVERTERS))} (and "
                              f"shape arithmetic on constants: {', '.join(sorted(set(FOLD) - set(CONVERTERS)))})")


def _probe_inputs(b: Builder, rng: np.random.Generator) -> None:
    """Random probe batches for each graph input; only axis 0 (the batch) may be dynamic."""
    for inp in b.graph.inputs:
        dims = list(inp.shape)
        bad = [(k, d) for k, d in enumerate(dims) if k > 0 and not (isinstance(d, int) and d > 0)]
        if bad or not dims:
            raise OnnxImportError(f"load_onnx: input {inp.name!r} has shape {tuple(inp.shape)}: every axis but the "
                                  f"first (the batch) must have a fixed size")
        batches = (dims[0],) * 2 if isinstance(dims[0], int) and dims[0] > 0 else PROBE_BATCHES
        probes = []
        for n in batches:
            shape = (n, *dims[1:])
            probes.append(rng.standard_normal(shape).astype(inp.dtype) if np.dtype(inp.dtype).kind == "f"
                          else np.zeros(shape, inp.dtype))
        b.values[inp.name] = Value("data", tuple(probes))


def _fold(b: Builder, node: Any) -> bool:
    """Evaluate ``node`` now if every input is a constant (or it asks only for an activation's shape)."""
    given = [k for k in range(len(node.inputs)) if node.input(k)]
    if node.op_type in ("Shape", "Size") and b.value(node, 0).kind != "const":
        shapes = b.shapes(node, 0)
        b.set_const(node.outputs[0], [shape_of(s, node) if node.op_type == "Shape" else
                                      np.array(int(np.prod(s)), np.int64) for s in shapes])
        return True
    if node.op_type not in FOLD or len(node.outputs) != 1 or not all(b.is_const(node, k) for k in given):
        return False
    if node.op_type in KEEP_TRAINABLE and any(_trainable(b.value(node, k)) for k in given):
        return False
    outs = []
    for p in range(2):
        xs = [b.values[v].probes[p] if v else None for v in node.inputs]
        try:
            outs.append(FOLD[node.op_type](node, xs))
        except Exception as e:
            raise refuse(node, f"cannot evaluate it on its constant inputs ({type(e).__name__}: {e})") from None
    b.set_const(node.outputs[0], outs)
    if node.op_type == "Identity":
        b.values[node.outputs[0]].initializer = b.value(node, 0).initializer
    return True


# Ops that keep a float initializer trainable instead of folding it away (a class token expanded to the
# batch and concatenated): their converters make it a Parameter of the graph.
KEEP_TRAINABLE = ("Expand", "Concat")


def _trainable(value: Value) -> bool:
    return value.initializer is not None and value.probes[0].dtype.kind == "f" and value.probes[0].size > 1


def load_onnx(path: str, *, fuse_qdq: bool = True, seed: int = 0, max_bytes: int | None = None) -> GraphModule:
    """The ONNX model at ``path`` as an ``nn.GraphModule`` (eval mode) made of the engine's layers.

    Weights come from the initializers; shape arithmetic is evaluated at load time (``fold.py``); the
    first axis of each input may be dynamic (the batch), every other must be fixed. A model with an
    operator this loader has no converter for is refused with each such operator, where it sits and how
    many there are. ``seed`` draws the random probe batches that run each layer once while building;
    ``max_bytes`` bounds the initializers' arrays (``io.limits``; default 256 MiB + 64 x the file's size).
    Needs the ``onnx`` package (``pip install 'minicompress[onnx]'``).

    int8 files (QOperator or QDQ, e.g. from onnxruntime's ``quantize_static``) run with onnxruntime 1.32's CPU
    arithmetic (``quant.onnxruntime_modules``). ``fuse_qdq`` (default, as an onnxruntime session with its
    default graph optimisations): the DequantizeLinear -> op -> QuantizeLinear groups onnxruntime fuses become
    its integer operators (``qdq_fusion.py``); False: every node as written (``ORT_DISABLE_ALL``).
    """
    return build_onnx(path, fuse_qdq=fuse_qdq, seed=seed, max_bytes=max_bytes)[0]


def build_onnx(path: str, *, fuse_qdq: bool = True, seed: int = 0,
               max_bytes: int | None = None) -> tuple[GraphModule, Builder]:
    """``load_onnx``'s work: (the model, the Builder that made it -- its graph (after QDQ fusion), the value
    kinds and the aliases ``renamed``, which map ONNX value names to the GraphModule's)."""
    graph = read_onnx(path, max_bytes)
    if fuse_qdq:
        graph = fuse_qdq_groups(graph)
    _refuse_unsupported(path, graph)
    b = Builder(graph)
    _probe_inputs(b, np.random.default_rng(seed))
    for node in graph.nodes:
        if node.op_type == "Constant":
            value = constant_node_value(node)
            b.set_const(node.outputs[0], (value, value))
        elif not _fold(b, node):
            if node.op_type not in CONVERTERS:
                raise refuse(node, f"{node.op_type} of an activation is not supported (only of constants, "
                                   f"evaluated at load time)")
            CONVERTERS[node.op_type](b, node)
    outputs = []
    for name in graph.outputs:
        if b.values[name].kind == "const":
            raise OnnxImportError(f"load_onnx: output {name!r} of {path} is a constant, not computed from the inputs")
        outputs.append(b.renamed.get(name, name))
    model = GraphModule(b.modules, b.nodes, [i.name for i in graph.inputs], outputs, b.param_values, b.params)
    return model.eval(), b
