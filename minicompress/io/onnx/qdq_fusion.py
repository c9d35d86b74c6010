"""onnxruntime's QDQ node-group fusion (``QDQSelectorActionTransformer``, on by default), as a graph rewrite.

A QDQ file writes each int8 operator as ``DequantizeLinear -> float op -> QuantizeLinear``. With graph
optimisations on (its default), onnxruntime 1.32's CPU provider replaces such groups by integer operators,
which round differently from the float op between the pairs. ``fuse_qdq_groups`` applies the same
replacements to an ``OnnxGraph``, so that ``load_onnx`` then builds the QOperator modules:

    DQ(x), DQ(w), [DQ(b int32)] -> Conv -> [Relu] -> Q      QLinearConv
    DQ(a), DQ(B), [DQ(C int32)] -> Gemm -> [Relu] -> Q      com.microsoft QGemm  (alpha 1, transA 0, beta 1)
    DQ(a), DQ(B) -> MatMul -> Q                             QLinearMatMul (B a constant or an activation)
    DQ(a), DQ(b) -> Add / Mul -> Q                          com.microsoft QLinearAdd / QLinearMul (b may be constant)
    DQ(x) -> GlobalAveragePool / Sigmoid / LeakyRelu / Softmax -> Q   com.microsoft QLinearGlobalAveragePool / ...
    DQ(x1), DQ(x2), ... -> Concat -> Q                      com.microsoft QLinearConcat
    DQ(x) -> MaxPool / Flatten / Reshape / ... -> Q         the op on the codes (equal scale and zero point)

Conditions (read in ``qdq_selectors.cc`` and checked by the tests on whole models): scales and zero points are
initializers; the op's output feeds exactly one Q (or one Relu whose only consumer is a Q with the dtype's
minimum as zero point: then the Relu is redundant) and is no graph output; activations, Q and DQ are uint8 and
per tensor; weights uint8 / int8 initializers, per tensor or per output channel; biases int32. A DQ read by
several nodes serves each of them (onnxruntime first gives every consumer its own copy,
``EnsureUniqueDQForNodeUnit``); a DQ left without a reader is dropped. int8 activations fuse
only where onnxruntime's x86 pass first makes their pairs uint8 (``int8_pairs_to_uint8``). Identities of DQ outputs
are dropped first (``drop_identities``). Not reproduced (those groups stay float here, so such files differ from
a default onnxruntime session): a Gemm or MatMul without a Q after it (MatMulIntegerToFloat / QGemm with a float
output), AveragePool, Add / Mul with an int8 constant operand.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable

import numpy as np

from .reader import OnnxGraph, OnnxNode

MOVES = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Expand"}
UNARY = {"GlobalAveragePool": "com.microsoft.QLinearGlobalAveragePool", "Sigmoid": "com.microsoft.QLinearSigmoid",
         "LeakyRelu": "com.microsoft.QLinearLeakyRelu", "Softmax": "com.microsoft.QLinearSoftmax"}
BINARY = {"Add": "com.microsoft.QLinearAdd", "Mul": "com.microsoft.QLinearMul"}


class _Graph:
    """Producers, consumers and constants of the graph being rewritten."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.producer = {o: n for n in graph.nodes for o in n.outputs if o}
        self.consumers = Counter(v for n in graph.nodes for v in n.inputs if v)
        self.readers: dict[str, list[OnnxNode]] = {}
        for n in graph.nodes:
            for v in dict.fromkeys(v for v in n.inputs if v):
                self.readers.setdefault(v, []).append(n)
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

    def operand(self, value: str) -> OnnxNode | None:
        """The DQ making an operand of a binary op or a MatMul's B: of uint8 per-tensor activations, or of a
        constant uint8 tensor with one scale and zero point (a QDQ file's quantized bias or position embedding)."""
        node = self.dq(value, True)
        if node is None:
            node = self.dq(value, False)
            codes, zp = (None, None) if node is None else (self.const(node.input(0)), self.const(node.input(2)))
            if node is None or codes.dtype != np.uint8 or self.const(node.input(1)).size != 1 \
                    or (zp is not None and zp.size != 1):
                return None
        return node

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
    if node.input(2) and (bias is None or g.const(bias.input(0)).dtype != np.int32
                          or float(node.attr("beta", 1.0)) != 1.0):
        return None
    inputs = _qp(a) + _qp(w) + [bias.input(0) if bias else ""] + [q.input(1), q.input(2)]
    attrs = {"transB": int(node.attr("transB", 0)), "alpha": 1.0}
    return OnnxNode(node.name, "com.microsoft.QGemm", inputs, [q.outputs[0]], attrs)


def _matmul(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    a, w = g.dq(node.input(0), True), g.dq(node.input(1), False) or g.dq(node.input(1), True)
    if a is None or w is None:
        return None
    return OnnxNode(node.name, "QLinearMatMul", _qp(a) + _qp(w) + [q.input(1), q.input(2)], [q.outputs[0]])


def _binary(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    a, b = g.operand(node.input(0)), g.operand(node.input(1))
    if a is None or b is None or (g.const(a.input(0)) is not None and g.const(b.input(0)) is not None):
        return None
    return OnnxNode(node.name, BINARY[node.op_type], _qp(a) + _qp(b) + [q.input(1), q.input(2)], [q.outputs[0]])


def _unary(g: _Graph, node: OnnxNode, q: OnnxNode) -> OnnxNode | None:
    x = g.dq(node.input(0), True)
    if x is None:
        return None
    attrs = ({"alpha": node.attr("alpha", 0.01)} if node.op_type == "LeakyRelu" else
             {"axis": node.attr("axis", -1), "opset": 13} if node.op_type == "Softmax" else {})
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


S8_TO_U8 = "/s8_to_u8"


def int8_pairs_to_uint8(graph: OnnxGraph) -> OnnxGraph:
    """onnxruntime's ``EnsureUniqueDQForNodeUnit`` then ``QDQS8ToU8Transformer`` (x86, where ``QDQIsInt8Allowed()``
    is false): an int8 ``Q -> DQ`` pair becomes a uint8 pair with zero point z + 128, which gives the same
    floats, codes c + 128, when

        Q quantizes an activation (a Q of a constant is folded to int8 codes first) and has explicit constant
        scalar int8 zero point z, DQ the same z;
        Q's output is no graph output and is read once, by that DQ;
        DQ's output is read by at most one node, and is no graph output if read (else EnsureUniqueDQForNodeUnit
        would have given each reader its own DQ, and Q would then feed several).

    Pairs that fail stay int8, and no QDQ group with an int8 activation fuses on x86 -- so a fan-out (a
    residual branch) leaves its neighbouring groups float. The pair's two values are renamed (``+ S8_TO_U8``;
    onnxruntime renames the codes), but for a graph output: exposing either would stop the conversion.
    onnxruntime also turns lone int8 weight DQs to uint8 (w xor 0x80, z + 128); that gives the same integers,
    so it is not reproduced."""
    g = _Graph(graph)
    inits = dict(graph.initializers)
    constant = set(inits) | {n.outputs[0] for n in graph.nodes if n.op_type == "Constant"}
    renamed: dict[str, str] = {}
    rewritten: dict[int, OnnxNode] = {}
    for q in graph.nodes:
        if q.op_type != "QuantizeLinear" or len(q.inputs) < 3 or q.outputs[0] in g.outputs \
                or g.consumers[q.outputs[0]] != 1:
            continue
        if q.input(0) in constant:
            continue                   # onnxruntime folds a Q of a constant into int8 codes first: no pair
        dq = g.readers[q.outputs[0]][0]
        if dq.op_type != "DequantizeLinear" or dq.input(0) != q.outputs[0] or len(dq.inputs) < 3:
            continue
        readers = g.consumers[dq.outputs[0]]
        if readers > 1 or (readers == 1 and dq.outputs[0] in g.outputs):
            continue
        zq, zdq = g.const(q.input(2)), g.const(dq.input(2))
        if zq is None or zdq is None or zq.size != 1 or zdq.size != 1 or zq.dtype != np.int8 or zdq.dtype != np.int8 \
                or zq.item() != zdq.item():
            continue
        zp = q.input(2) + S8_TO_U8
        inits[zp] = np.asarray(zq.item() + 128, np.uint8).reshape(zq.shape)
        codes = q.outputs[0] + S8_TO_U8
        value = dq.outputs[0] if dq.outputs[0] in g.outputs else dq.outputs[0] + S8_TO_U8
        renamed[dq.outputs[0]] = value
        rewritten[id(q)] = replace(q, inputs=[q.input(0), q.input(1), zp], outputs=[codes])
        rewritten[id(dq)] = replace(dq, inputs=[codes, dq.input(1), zp], outputs=[value])
    nodes = [rewritten.get(id(n), n) for n in graph.nodes]
    nodes = [replace(n, inputs=[renamed.get(v, v) for v in n.inputs]) for n in nodes]
    return replace(graph, nodes=nodes, initializers=inits)


def drop_identities(graph: OnnxGraph) -> OnnxGraph:
    """onnxruntime's ``EliminateIdentity`` (level 1) where it matters to the fusion: an Identity of a
    DequantizeLinear's output (no graph output) is removed and its readers read the DQ (torch's exporter writes
    shared initializers, e.g. equal zero biases, as Identity nodes, which would otherwise hide the DQ from the
    group after it). Other Identities stay: they name a layer's own copy of a shared initializer."""
    dequantized = {n.outputs[0] for n in graph.nodes if n.op_type == "DequantizeLinear"}
    alias = {n.outputs[0]: n.input(0) for n in graph.nodes if n.op_type == "Identity"
             and n.outputs[0] not in graph.outputs and n.input(0) in dequantized}
    if not alias:
        return graph

    def source(v: str) -> str:
        while v in alias:
            v = alias[v]
        return v
    nodes = [replace(n, inputs=[source(v) for v in n.inputs]) for n in graph.nodes
             if not (n.op_type == "Identity" and n.outputs[0] in alias)]
    return replace(graph, nodes=nodes)


def fuse_qdq_groups(graph: OnnxGraph) -> OnnxGraph:
    """``graph`` with every group of the module docstring replaced by its integer operator (a new graph), after
    ``drop_identities`` and ``int8_pairs_to_uint8``."""
    graph = int8_pairs_to_uint8(drop_identities(graph))
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
