"""The state of one ``load_onnx`` call: what is known about each ONNX value, and the modules built so far.

Every value is one of

    'const'   known at load time: an initializer, a Constant node, or folded shape arithmetic
    'data'    an activation, made by a module of the graph being built (or a graph input)
    'param'   a trainable array of the GraphModule itself, fed to a module as an array

and carries two *probes*: its value when the graph runs on a batch of ``PROBE_BATCHES[0]`` and of
``PROBE_BATCHES[1]`` samples (random inputs, eval mode). Each module is run on both as soon as it is
built, so every activation's shape is known, ``Shape`` is a constant, and a constant that differs
between the probes depends on the batch size (see ``batch_template``). With a fixed batch in the file
both probes have that batch.
"""
from __future__ import annotations

import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...nn.grad_mode import no_grad
from ...nn.module import Module
from .reader import OnnxGraph, OnnxNode

PROBE_BATCHES = (2, 3)

# Operators that only move or select values: on integer codes (an int8 file's MaxPool, Flatten, Reshape) their
# layer runs on the codes as float32 (exact) and casts back (``quant.onnxruntime_modules.OnCodes``).
MOVES_VALUES = frozenset({"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Slice",
                          "Expand", "Split", "Concat"})


class OnnxImportError(ValueError):
    """A node ``load_onnx`` cannot turn into modules; the message names the node and the reason."""


@dataclass
class Value:
    kind: str                      # 'const' | 'data' | 'param'
    probes: tuple[Any, Any]
    initializer: str | None = None # the initializer's name, for a const that is one


def refuse(node: OnnxNode, why: str) -> OnnxImportError:
    return OnnxImportError(f"load_onnx: node {node.name!r} ({node.op_type}): {why}")


def _brief(a: np.ndarray) -> str:
    return str(a.tolist()) if a.size <= 8 else f"an array of shape {a.shape}"


def _sanitize(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^0-9A-Za-z_]", "_", name)).strip("_")


class Builder:
    """Values, modules and wiring of the GraphModule under construction (module docstring)."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        self.values: dict[str, Value] = {}
        self.modules: OrderedDict[str, Module] = OrderedDict()
        self.nodes: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        self.params: OrderedDict[str, np.ndarray] = OrderedDict()
        self.param_values: dict[str, str] = {}
        self.producer: dict[str, str] = {}        # data value -> module name
        self.renamed: dict[str, str] = {}         # alias -> the value name the GraphModule wires
        self.consumers = Counter(v for n in graph.nodes for v in n.inputs if v)
        self.consumers.update(graph.outputs)
        for name, array in graph.initializers.items():
            self.values[name] = Value("const", (array, array), name)

    # ------------------------------------------------------------------ reading values
    def value(self, node: OnnxNode, k: int) -> Value | None:
        name = node.input(k)
        if not name:
            return None
        if name not in self.values:
            raise refuse(node, f"input {k} {name!r} is defined by no earlier node (the graph is not in "
                               f"topological order)")
        return self.values[name]

    def is_const(self, node: OnnxNode, k: int) -> bool:
        v = self.value(node, k)
        return v is not None and v.kind == "const"

    def const(self, node: OnnxNode, k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Input ``k`` at both probes; it must be known at load time."""
        v = self.value(node, k)
        if v is None or v.kind != "const":
            raise refuse(node, f"its {what} (input {k}) must be a constant or computable from shapes, "
                               f"it is {'missing' if v is None else 'computed from the data'}")
        return tuple(np.asarray(p) for p in v.probes)

    def static(self, node: OnnxNode, k: int, what: str, default: Any = None) -> np.ndarray | None:
        """Input ``k`` as one constant that does not depend on the batch size (``default`` if omitted)."""
        if not node.input(k):
            return None if default is None else np.asarray(default)
        a, b = self.const(node, k, what)
        if a.shape != b.shape or not np.array_equal(a, b):
            raise refuse(node, f"its {what} depends on the batch size ({_brief(a)} at batch "
                               f"{PROBE_BATCHES[0]}, {_brief(b)} at batch {PROBE_BATCHES[1]})")
        return a

    def shapes(self, node: OnnxNode, k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        v = self.value(node, k)
        return tuple(np.shape(p) for p in v.probes)

    def operand(self, node: OnnxNode, k: int) -> str:
        """The value name of input ``k`` as a module input: a constant becomes a Parameter of the graph
        (an initializer a user would train, a ViT's position embedding or class token)."""
        name, v = node.input(k), self.value(node, k)
        if v is None:
            raise refuse(node, f"input {k} is missing")
        if v.kind == "const":
            a = self.static(node, k, f"operand {name!r}")
            if a.dtype.kind != "f":
                raise refuse(node, f"operand {name!r} holds {a.dtype} values, a module input must be float")
            attr = self._unique(_sanitize(name) or "param", self.params)
            self.params[attr] = a.copy()
            self.param_values[name] = attr
            self.values[name] = Value("param", (self.params[attr], self.params[attr]), v.initializer)
        return name

    def data(self, node: OnnxNode, k: int, what: str = "input") -> str:
        """Input ``k``, which must be an activation or a graph parameter (not a constant)."""
        v = self.value(node, k)
        if v is None or v.kind == "const":
            raise refuse(node, f"its {what} (input {k}) must be an activation, it is "
                               f"{'missing' if v is None else 'a constant'}")
        return node.input(k)

    # ------------------------------------------------------------------ defining values
    def set_const(self, name: str, probes: Sequence[Any]) -> None:
        self.values[name] = Value("const", (np.asarray(probes[0]), np.asarray(probes[1])))

    def alias(self, name: str, target: str) -> None:
        """Value ``name`` is value ``target`` (Identity; an Add folded into a Linear's bias)."""
        self.values[name] = self.values[target]
        self.producer[name] = self.producer.get(target, "")
        self.renamed[name] = self.renamed.get(target, target)

    def emit(self, node: OnnxNode, module: Module, inputs: Sequence[str], name_hint: str | None = None,
             outputs: Sequence[str] | None = None) -> Module:
        """Add ``module`` as a node reading ``inputs`` and defining ``outputs`` (the node's), run on the probes."""
        outputs = [o for o in (node.outputs if outputs is None else outputs)]
        name = self._unique(_sanitize(name_hint or node.name) or node.op_type, self.modules)
        if node.op_type in MOVES_VALUES and any(self.values[v].probes[0].dtype.kind in "iu" for v in inputs[:1]):
            from ...quant.onnxruntime_modules import OnCodes
            module = OnCodes(module)
        probes = []
        module.eval()
        for p in range(2):
            args = [self.values[v].probes[p] for v in inputs]
            try:
                with no_grad():
                    out = module(*args)
            except (ValueError, TypeError, IndexError) as e:
                raise refuse(node, f"{module._name()} fails on inputs of shapes "
                                   f"{[np.shape(a) for a in args]}: {e}") from None
            probes.append(out if isinstance(out, tuple) else (out,))
        self.modules[name] = module
        self.nodes.append((name, tuple(self.renamed.get(v, v) for v in inputs), tuple(outputs)))
        for j, o in enumerate(outputs):
            self.values[o] = Value("data", (probes[0][j], probes[1][j]))
            self.producer[o] = name
        return module

    def refresh(self, value: str) -> None:
        """Recompute the probes of ``value`` after its producing module changed (a bias folded in)."""
        name = self.producer[value]
        node = next(n for n in self.nodes if n[0] == name)
        module = self.modules[name]
        with no_grad():
            outs = [module(*(self.values[v].probes[p] for v in node[1])) for p in range(2)]
        self.values[value] = Value("data", tuple(outs))

    def _unique(self, name: str, taken: dict) -> str:
        if name[0].isdigit():
            name = "n" + name
        base, k = name, 2
        while name in taken or name in self.modules or name in self.params:
            name, k = f"{base}_{k}", k + 1
        return name


def batch_template(node: OnnxNode, in_shapes: Sequence[tuple[int, ...]],
                   out_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """One ONNX Reshape target that maps each probe's input shape to its output shape.

    A size the input has on the same axis (at both probes) is 0, "copy" (the batch axis; also any axis
    the reshape keeps, so that the module stays right when pruning changes a width); a size that follows
    the batch otherwise is -1 (inferred: at most one); the others are written as themselves, the last
    of them as -1 when no entry is (a flatten's merged axis then follows a pruned width too).
    """
    (i1, i2), (o1, o2) = in_shapes, out_shapes
    if len(o1) != len(o2):
        raise refuse(node, f"its output rank depends on the batch size ({o1} and {o2})")
    template = []
    for d, (a, b) in enumerate(zip(o1, o2)):
        if d < len(i1) and i1[d] == a and i2[d] == b and a > 0:
            template.append(0)
        elif a == b:
            template.append(a)
        else:
            template.append(-1)
    fixed = [d for d, t in enumerate(template) if t > 0]
    if -1 not in template and fixed:
        template[fixed[-1]] = -1
    from ...nn.layers.shape import reshape_target
    try:
        ok = template.count(-1) <= 1 and reshape_target(i1, template) == tuple(o1) and \
            reshape_target(i2, template) == tuple(o2)
    except ValueError:
        ok = False
    if not ok:
        raise refuse(node, f"cannot write its shapes {i1} -> {o1} (batch {PROBE_BATCHES[0]}) and {i2} -> {o2} "
                           f"(batch {PROBE_BATCHES[1]}) as one reshape that keeps the batch axis")
    return tuple(template)
