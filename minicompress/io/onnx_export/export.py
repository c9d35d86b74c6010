"""``export_onnx``: trace the model once, write one ONNX node group per traced module call.

The walk: ``nn.trace_graph(model, *inputs)`` gives the calls in order with their input sources; each call
goes to the emitter of its class (``int8_ops.INT8_EMITTERS`` when an input is an int8 activation or the
module is int8, else ``attention.ATTENTION_EMITTERS`` + ``float_ops.FLOAT_EMITTERS``). Every class without an emitter is collected first and
refused in one error naming each module and class. The non-array arguments of FloatFunctional /
QFunctional calls (``add``, ``cat`` and its dim...) and MultiheadAttention calls (need_weights,
average_attn_weights) are recorded by a forward pre-hook during the same trace.
The batch axis of every input and output is dynamic (``'batch'``); the file is written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import nn, quant
from ...nn.graph import Source, trace_graph
from ...nn.module import Module
from ..atomic import atomic_write
from .attention import ATTENTION_EMITTERS
from .builder import Graph, QEdge, require_onnx
from .float_ops import FLOAT_EMITTERS
from .int8_ops import FLOAT_INPUT_INT8, INT8_EMITTERS

INT8_FORMATS = ("qdq", "qoperator")
OPSETS = range(13, 22)
RECORDED_ARGS = (nn.FloatFunctional, quant.QFunctional, nn.MultiheadAttention)
FLOAT_TABLE = ATTENTION_EMITTERS + FLOAT_EMITTERS


@dataclass
class Call:
    """One traced module call as the emitters see it."""

    name: str
    module: Module
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]
    args: tuple = field(default_factory=tuple)      # non-array arguments (FloatFunctional: op name, dim...)


def _emitter(module: Module, int8: bool) -> Any:
    """The emitter of ``module``'s class: from the int8 table for a call on int8 activations (or an int8
    module taking floats: Quantize, DynamicQuantizedLinear), else from the float table."""
    for cls, fn in INT8_EMITTERS if int8 else FLOAT_TABLE:
        if isinstance(module, cls):
            return fn
    return None


def _int8_calls(graph: Any) -> list[bool]:
    """Per call: does it run on int8 activations (or is it an int8 module taking floats)? Quantize makes
    int8 activations, DeQuantize and DynamicQuantizedLinear float ones, everything else keeps its inputs'."""
    int8_out: dict[Source, bool] = {}
    flags = []
    for index, node in enumerate(graph.nodes):
        int8_in = any(int8_out.get(s, False) for s in node.inputs)
        flags.append(int8_in or isinstance(node.module, FLOAT_INPUT_INT8))
        out = not isinstance(node.module, (quant.DeQuantize, quant.DynamicQuantizedLinear)) and (
            int8_in or isinstance(node.module, quant.Quantize))
        for j in range(len(node.out_shapes)):
            int8_out[Source(index, j)] = out
    return flags


def _trace(model: Module, inputs: tuple) -> tuple[Any, dict]:
    """The graph, and {(id(module), call number): non-array arguments} of FloatFunctional / QFunctional /
    MultiheadAttention calls (the op name and dim; need_weights, average_attn_weights)."""
    recorded: dict[tuple[int, int], tuple] = {}
    counts: dict[int, int] = {}

    def pre_hook(module: Module, args: tuple) -> None:
        counts[id(module)] = counts.get(id(module), 0) + 1
        recorded[(id(module), counts[id(module)])] = tuple(a for a in args if isinstance(a, (str, int, float)))

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if isinstance(m, RECORDED_ARGS)]
    try:
        graph = trace_graph(model, *inputs)
    finally:
        for h in handles:
            h.remove()
    return graph, recorded


def _refuse_unsupported(graph: Any, int8: list[bool]) -> None:
    missing = []
    for node, q in zip(graph.nodes, int8):
        if _emitter(node.module, q) is None:
            missing.append(f"{node.name} ({type(node.module).__name__}{', on int8 inputs' if q else ''})")
    if missing:
        raise ValueError(f"ONNX export: no ONNX translation for {len(missing)} module(s): {', '.join(missing)}. "
                         f"Supported: {sorted({c.__name__ for c, _ in FLOAT_TABLE + INT8_EMITTERS})}")


def _value_info(onnx: Any, name: str, dtype: Any, shape: tuple, dynamic_batch: bool) -> Any:
    dims = [("batch" if (dynamic_batch and k == 0) else int(d)) for k, d in enumerate(shape)]
    return onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims)


def build_model(model: Module, example_input: Any, int8_format: str = "qdq", opset: int = 17,
                dynamic_batch: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``model`` traced on ``example_input`` (an array or a tuple of arrays)."""
    onnx = require_onnx()
    if int8_format not in INT8_FORMATS:
        raise ValueError(f"export_onnx: int8_format must be one of {INT8_FORMATS}, got {int8_format!r}")
    if opset not in OPSETS:
        raise ValueError(f"export_onnx: opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    inputs = tuple(np.asarray(x) for x in inputs)
    graph, recorded = _trace(model, inputs)
    int8_calls = _int8_calls(graph)
    _refuse_unsupported(graph, int8_calls)
    g = Graph(opset, int8_format)
    params = dict(model.named_parameters())
    edges: dict[Source, Any] = {}
    input_names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    for i, name in enumerate(input_names):
        g.fresh(name)
        edges[Source(-1, i)] = name
    for k, pname in enumerate(graph.params):
        edges[Source(-2, k)] = g.const(pname, np.asarray(params[pname].data, np.float32))
    for index, (node, int8) in enumerate(zip(graph.nodes, int8_calls)):
        xs = [edges[s] for s in node.inputs]
        wants_int8 = int8 and not isinstance(node.module, FLOAT_INPUT_INT8)
        if any(isinstance(x, QEdge) != wants_int8 for x in xs):
            raise ValueError(f"ONNX export: {node.name} ({type(node.module).__name__}) gets inputs "
                             f"{['int8' if isinstance(x, QEdge) else 'float' for x in xs]}; expected all "
                             f"{'int8' if wants_int8 else 'float'}")
        call = Call(node.name, node.module, node.in_shapes, node.out_shapes,
                    recorded.get((id(node.module), node.call), ()))
        for j, out in enumerate(_emitter(node.module, int8)(g, call, xs)):
            edges[Source(index, j)] = out
    outputs = []
    output_names = ["output"] if len(graph.outputs) == 1 else [f"output_{i}" for i in range(len(graph.outputs))]
    out_shapes = [graph.nodes[s.node].out_shapes[s.index] if s.node >= 0 else graph.input_shapes[s.index]
                  for s in graph.outputs]
    for name, src, shape in zip(output_names, graph.outputs, out_shapes):
        edge = edges[src]
        tensor, dtype = (edge.codes, np.uint8) if isinstance(edge, QEdge) else (edge, np.float32)
        g.fresh(name)
        g.nodes.append(onnx.helper.make_node("Identity", [tensor], [name], name=g.fresh(f"{name}/Identity")))
        outputs.append(_value_info(onnx, name, dtype, shape, dynamic_batch))
    graph_inputs = [_value_info(onnx, n, x.dtype, x.shape, dynamic_batch) for n, x in zip(input_names, inputs)]
    proto = g.model(graph_inputs, outputs, producer="minicompress")
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: Module, path: str | os.PathLike, example_input: Any, int8_format: str = "qdq",
                opset: int = 17, dynamic_batch: bool = True) -> None:
    """Write ``model`` as an ONNX file at ``path`` (atomically), traced on ``example_input``.

    Float models become standard ONNX operators (``float_ops``); int8 models (``quant.convert`` /
    ``quant.quantize_dynamic`` output) become QuantizeLinear / DequantizeLinear around float operators
    (``int8_format='qdq'``) or integer operators (``'qoperator'``: QLinearConv, QGemm, QLinearAdd...,
    ``int8_ops``). ``opset`` 13..21 (default 17). Input and output batch axes are dynamic unless
    ``dynamic_batch=False``. Modules without a translation are refused by name, all in one error.
    Needs the ``onnx`` extra (``pip install 'minicompress[onnx]'``).
    """
    proto = build_model(model, example_input, int8_format, opset, dynamic_batch)
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
