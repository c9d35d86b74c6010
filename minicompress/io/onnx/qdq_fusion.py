"""onnxruntime's QDQ node-group fusion (``QDQSelectorActionTransformer``, on by default), as a graph rewrite.

A QDQ file writes each int8 operator as ``DequantizeLinear -> float op -> QuantizeLinear``. With graph
optimisations on (its default), onnxruntime 1.32's CPU provider replaces such groups by integer operators,
which round differently from the float op between the pairs. ``fuse_qdq_groups`` applies the same
replacements to an ``OnnxGraph``, so that ``load_onnx`` then builds the QOperator modules:

    DQ(x), DQ(w), [DQ(b int32)] -> Conv -> [Relu] -> Q      QLinearConv
    DQ(a), DQ(B), [DQ(C int32)] -> Gemm -> [Relu] -> Q      com.microsoft QGemm  (alpha 1, transA 0, beta 1)
    DQ(a), DQ(B) -> MatMul -> Q                             QLinearMatMul
    DQ(a), DQ(b) -> Add / Mul -> Q                          com.microsoft QLinearAdd / QLinearMul
    DQ(x) -> GlobalAveragePool / Sigmoid / LeakyRelu -> Q   com.microsoft QLinearGlobalAveragePool / ...
    DQ(x1), DQ(x2), ... -> Concat -> Q                      com.microsoft QLinearConcat
    DQ(x) -> MaxPool / Flatten / Reshape / ... -> Q         the op on the codes (equal scale and zero point)

Conditions (read in ``qdq_selectors.cc`` and checked by the tests on whole models): scales and zero points are
initializers; the op's output feeds exactly one Q (or one Relu whose only consumer is a Q with the dtype's
minimum as zero point: then the Relu is redundant) and is no graph output; activations, Q and DQ are uint8 and
per tensor; weights uint8 / int8 initializers, per tensor or per output channel; biases int32. A DQ read by
several nodes serves each of them (onnxruntime first gives every consumer its own copy,
``EnsureUniqueDQForNodeUnit``); a DQ left without a reader is dropped. Not reproduced (those groups stay float
here, so such files differ from a default onnxruntime session): int8 (s8) activations, whose fusion depends on
the CPU (``QDQS8ToU8``), a Gemm or MatMul without a Q after it (MatMulIntegerToFloat / QGemm with a float
output), AveragePool and Softmax, Add / Mul with a constant operand.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable

import numpy as np

from .reader import OnnxGraph, OnnxNode

MOVES = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Expand"}
UNARY = {"GlobalAveragePool": "com.microsoft.QLinearGlobalAveragePool", "Sigmoid": "com.microsoft.QLinearSigmoid",
         "LeakyRelu": "com.microsoft.QLinearLeakyRelu"}
BINARY = {"Add": "com.microsoft.QLinearAdd", "Mul": "com.microsoft.QLinearMul"}


class _Graph:
    """Producers, consumers and constants of the graph being rewritten."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.consumers = Counter(v for n in graph.nodes for v in n.inputs if v)
        self.outputs = set(graph.outputs)

    def const(self, name: str) -> np.ndarray | None:
        return self.graph.initializers.get(name) if name else None

    def dq(self, value: str, data: bool) -> OnnxNode | None:
        """The DequantizeLinear making ``value``, with constant qparams; ``data``: of uint8 per-tensor
        activations (else of an initializer: a weight or bias)."""
        node = self.producer.get(value)
        if node is None or node.op_type != "DequantizeLinear" or node.attr("block_size", 0):
            return None
        scale = self.const(node.input(1))
        if scale is None or (node.input(2) and self.const(node.input(2)) is None):
            return None
        if data:
            ok = self.const(node.input(0)) is None and scale.size == 1 and self.code_dtype(node) == np.uint8
        else:
            ok = self.const(node.input(0)) is not None
        return node if ok else None

    def code_dtype(self, qdq: OnnxNode) -> np.dtype:
        zp = self.const(qdq.input(2))
        return np.dtype(np.uint8) if zp is None else zp.dtype

    def single_q(self, node: OnnxNode) -> tuple[OnnxNode, list[OnnxNode]] | None:
        """(the Q after ``node``'s only output, [a redundant Relu between them]) or None."""
        value, between = node.outputs[0], []
        for _ in range(2):
            readers = [n for n in self.graph.nodes if value in n.inputs]
            if value in self.outputs or len(readers) != 1 or self.consumers[value] != 1:
                return None
            reader = readers[0]
            if reader.op_type == "QuantizeLinear":
                q = reader
                scale, zp = self.const(q.input(1)), self.const(q.input(2))
                if scale is None or scale.size != 1 or (q.input(2) and zp is None) or self.code_dtype(q) != np.uint8:
                    return None
                if between and (zp is not None and int(zp) != 0):
                    return None                   # a Relu is redundant only when z_y is uint8's minimum
                return q, between
            if reader.op_type != "Relu" or between:
                return None
            between.append(reader)
            value = reader.outputs[0]
        return None

    def same_qparams(self, dq: OnnxNode, q: OnnxNode) -> bool:
        a, b = self.const(dq.input(1)), self.const(q.input(1))
        za, zb = self.const(dq.input(2)), self.const(q.input(2))
        za = np.zeros(1, np.uint8) if za is None else za
        zb = np.zeros(1, np.uint8) if zb is None else zb
        return bool(a.size == 1 and b.size == 1 and np.float32(a) == np.float32(b) and np.float32(a) > 0
                    and int(za) == int(zb) and za.dtype == zb.dtype)


def _qp(node: OnnxNode) -> list[str]:
    """The codes, scale and zero point names of a Q / DQ node."""
    return [node.input(0), node.input(1), node.input(2)]


def _conv(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    x, w = g.dq(node.input(0), True), g.dq(node.input(1), False)
    bias = g.dq(node.input(2), False) if node.input(2) else None
    if x is None or w is None or (node.input(2) and (bias is None or g.const(bias.input(0)).dtype != np.int32)):
        return None
    if g.const(w.input(0)).dtype not in (np.int8, np.uint8):
        return None
    inputs = _qp(x) + _qp(w) + q.inputs[1:3] + [bias.input(0) if bias else ""]
    return OnnxNode(node.name, "QLinearConv", inputs, [q.outputs[0]], dict(node.attrs))


def _gemm(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    a, w = g.dq(node.input(0), True), g.dq(node.input(1), False)
    bias = g.dq(node.input(2), False) if node.input(2) else None
    if a is None or w is None or node.attr("transA", 0) or float(node.attr("alpha", 1.0)) != 1.0:
        return None
    if node.input(2) and (bias is None or g.const(bias.input(0)).dtype != np.int32 or float(node.attr("beta", 1.0)) != 1.0):
        return None
    inputs = _qp(a) + _qp(w) + [bias.input(0) if bias else ""] + [q.input(1), q.input(2)]
    attrs = {"transB": int(node.attr("transB", 0)), "alpha": 1.0}
    return OnnxNode(node.name, "com.microsoft.QGemm", inputs, [q.outputs[0]], attrs)


def _matmul(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    a, w = g.dq(node.input(0), True), g.dq(node.input(1), False)
    if a is None or w is None:
        return None
    return OnnxNode(node.name, "QLinearMatMul", _qp(a) + _qp(w) + [q.input(1), q.input(2)], [q.outputs[0]])


def _binary(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    a, b = g.dq(node.input(0), True), g.dq(node.input(1), True)
    if a is None or b is None:
        return None
    return OnnxNode(node.name, BINARY[node.op_type], _qp(a) + _qp(b) + [q.input(1), q.input(2)], [q.outputs[0]])


def _unary(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    x = g.dq(node.input(0), True)
    if x is None:
        return None
    attrs = {"alpha": node.attr("alpha", 0.01)} if node.op_type == "LeakyRelu" else {}
    return OnnxNode(node.name, UNARY[node.op_type], _qp(x) + [q.input(1), q.input(2)], [q.outputs[0]], attrs)


def _concat(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    dqs = [g.dq(v, True) for v in node.inputs]
    if not dqs or any(d is None for d in dqs):
        return None
    inputs = [q.input(1), q.input(2)] + [v for d in dqs for v in _qp(d)]
    return OnnxNode(node.name, "com.microsoft.QLinearConcat", inputs, [q.outputs[0]], {"axis": node.attr("axis")})


def _move(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    x = g.dq(node.input(0), True)
    if x is None or not g.same_qparams(x, q):
        return None
    return replace(node, inputs=[x.input(0)] + node.inputs[1:], outputs=[q.outputs[0]] + node.outputs[1:])


RULES: dict[str, Callable[[_Graph, OnnxNode, OnnxNode], OnnxNode | None]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Concat": _concat,
    **{op: _binary for op in BINARY}, **{op: _unary for op in UNARY}, **{op: _move for op in MOVES}}


def fuse_qdq_groups(graph: OnnxGraph) -> OnnxGraph:
    """``graph`` with every group of the module docstring replaced by its integer operator (a new graph)."""
    g = _Graph(graph)
    replaced: dict[int, OnnxNode] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        rule = RULES.get(node.op_type)
        found = g.single_q(node) if rule and node.outputs and node.outputs[0] else None
        if found is None:
            continue
        q, between = found
        if between and node.op_type not in ("Conv", "Gemm", "MatMul", "Add", "Mul"):
            continue
        fused = rule(g, node, q)
        if fused is not None:
            replaced[id(node)] = fused
            removed.update(id(n) for n in [q] + between)
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=_drop_unread_dequantize(nodes, graph.outputs))


def _drop_unread_dequantize(nodes: list[OnnxNode], outputs: list[str]) -> list[OnnxNode]:
    """Remove DequantizeLinear nodes whose output nothing reads any more (their readers were fused)."""
    read = Counter(v for n in nodes for v in n.inputs if v)
    read.update(outputs)
    return [n for n in nodes if not (n.op_type == "DequantizeLinear" and not read[n.outputs[0]])]
