"""The dataflow graph of a model, from one traced call: which leaf call fed which.

``trace_graph(model, *inputs)`` runs ``model`` once (eval mode, no gradients) with a forward hook on
every *unit* — a module without children, or one of ``kinds.TRACE_UNITS`` (FloatFunctional, whose ops
are module calls; MultiheadAttention, which calls its ``out_proj`` on arrays it made) — and
follows arrays by identity: each unit's array inputs must be the model's inputs or outputs of units
called before it. The result is a DAG of ``Node`` s (one per call: a module called twice is two nodes)
with fan-out, merges (``Add``, ``Mul``, ``Cat``, FloatFunctional) and multiple outputs (a unit returning
a tuple; the model returning a tuple).

A parameter may feed a unit directly (a ViT's class token into a concatenation, its position
embedding into an ``Add``): a parameter's array is a source too (``Source(-2, k)``, ``Graph.params[k]``).
An operation on raw arrays between modules (``x + y``, ``x.reshape(...)``, ``torch.flatten``) cannot be
seen by hooks: the first unit whose input no traced unit produced is reported by name, never guessed.
An in-place write into an array between modules is invisible too (the same array object flows on).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .grad_mode import no_grad
from .kinds import is_trace_unit
from .module import Module

__all__ = ["Source", "Slot", "Node", "Graph", "trace_graph"]


@dataclass(frozen=True)
class Source:
    """Where an array came from: the model's input ``index`` (node = -1), parameter ``index`` (node = -2),
    or output ``index`` of node ``node``."""

    node: int
    index: int = 0

    def __repr__(self) -> str:
        if self.node == -1:
            return f"input[{self.index}]"
        return f"param[{self.index}]" if self.node == -2 else f"node[{self.node}].out[{self.index}]"


@dataclass(frozen=True)
class Slot:
    """Stands for the node's input ``index`` (an array) in a recorded call's arguments (``Node.args``)."""

    index: int


@dataclass
class Node:
    """One unit call: ``name`` as in ``named_modules`` ('#2' etc. for a module's later calls); ``args``: the
    call's positional arguments with each traced array replaced by its ``Slot`` (e.g. ``('add', Slot(0),
    Slot(1))`` for a FloatFunctional's add), so that the call can be replayed on other arrays (``replay``)."""

    name: str
    module: Module
    inputs: list[Source]
    in_shapes: list[tuple[int, ...]]
    out_shapes: list[tuple[int, ...]]
    call: int = 1
    args: tuple = ()

    def replay(self, inputs: list[Any]) -> tuple:
        """The recorded call's arguments with ``inputs`` in the slots (all the node's inputs if none recorded)."""
        return _fill(self.args, inputs) if self.args else tuple(inputs)


@dataclass
class Graph:
    """Nodes in call order (a topological order), the model's input shapes and output sources."""

    nodes: list[Node]
    input_shapes: list[tuple[int, ...]]
    outputs: list[Source] = field(default_factory=list)
    params: list[str] = field(default_factory=list)         # names of the parameters that feed units

    def consumers(self, source: Source) -> list[tuple[int, int]]:
        """(node index, input position) of every use of ``source``."""
        return [(i, k) for i, node in enumerate(self.nodes) for k, s in enumerate(node.inputs) if s == source]

    def producer(self, node: int, position: int = 0) -> Source:
        return self.nodes[node].inputs[position]

    def format(self) -> str:
        """One line per node: index, name, class, inputs and shapes."""
        lines = [f"inputs: {self.input_shapes}"]
        for i, n in enumerate(self.nodes):
            lines.append(f"[{i}] {n.name} {type(n.module).__name__} <- {n.inputs} {n.in_shapes} -> {n.out_shapes}")
        lines.append(f"outputs: {self.outputs}")
        return "\n".join(lines)


def _arrays(value: Any) -> list[Any]:
    """The arrays (ndarray or anything with an ``int_repr``, e.g. a QTensor) in a value, flattened."""
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays(v)]
    return [value] if isinstance(value, np.ndarray) or hasattr(value, "int_repr") else []


def _template(value: Any, count: list[int]) -> Any:
    """``value`` with each array (in ``_arrays`` order) replaced by a ``Slot``."""
    if isinstance(value, (tuple, list)):
        return type(value)(_template(v, count) for v in value)
    if isinstance(value, np.ndarray) or hasattr(value, "int_repr"):
        count[0] += 1
        return Slot(count[0] - 1)
    return value


def _fill(value: Any, inputs: list[Any]) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_fill(v, inputs) for v in value)
    return inputs[value.index] if isinstance(value, Slot) else value


def _units(model: Module) -> list[tuple[str, Module]]:
    """Modules recorded as nodes (``kinds.is_trace_unit``), not those inside one."""
    units, inside = [], []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if is_trace_unit(m):
            units.append((name, m))
            inside.append(name)
    return units


def trace_graph(model: Module, *inputs: Any) -> Graph:
    """The dataflow graph of ``model(*inputs)`` (module docstring); the model is left as it was."""
    units = _units(model)
    names = {id(m): name or type(m).__name__ for name, m in units}
    sources: dict[int, Source] = {}
    keep: list[Any] = list(inputs)                # holds every traced array so that no id is reused
    params = list(model.named_parameters())
    for k, (_, p) in enumerate(params):
        sources[id(p.data)] = Source(-2, k)
    for i, x in enumerate(_arrays(list(inputs))):
        sources[id(x)] = Source(-1, i)
    nodes: list[Node] = []
    calls: dict[int, int] = {}

    def record(module: Module, args: tuple, out: Any) -> None:
        ins = _arrays(list(args))
        found = []
        for k, a in enumerate(ins):
            src = sources.get(id(a))
            if src is None:
                raise ValueError(f"trace: input {k} of {names[id(module)]!r} ({module._name()}), of shape "
                                 f"{np.shape(getattr(a, 'int_repr', a))}, was produced by no traced module: "
                                 f"an operation on raw arrays between modules (x + y, a reshape, torch.flatten) "
                                 f"cannot be followed; do it in a module (nn.Add, nn.Mul, nn.Cat, nn.Flatten, ...)")
            found.append(src)
        calls[id(module)] = calls.get(id(module), 0) + 1
        call = calls[id(module)]
        outs = _arrays(out)
        index = len(nodes)
        nodes.append(Node(names[id(module)] + (f"#{call}" if call > 1 else ""), module, found,
                          [tuple(np.shape(getattr(a, "int_repr", a))) for a in ins],
                          [tuple(np.shape(getattr(a, "int_repr", a))) for a in outs], call,
                          _template(tuple(args), [0])))
        for j, a in enumerate(outs):
            sources[id(a)] = Source(index, j)
        keep.extend(ins + outs)

    was_training = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(record) for _, m in units]
    try:
        model.eval()
        with no_grad():
            output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in was_training:
            m.training = mode
    outputs = []
    for k, a in enumerate(_arrays(output)):
        src = sources.get(id(a))
        if src is None:
            raise ValueError(f"trace: output {k} of the model was produced by no traced module (an operation on "
                             f"raw arrays after the last module)")
        outputs.append(src)
    used = sorted({s.index for n in nodes for s in n.inputs if s.node == -2})
    renumber = {k: i for i, k in enumerate(used)}
    for n in nodes:
        n.inputs = [Source(-2, renumber[s.index]) if s.node == -2 else s for s in n.inputs]
    return Graph(nodes, [tuple(np.shape(x)) for x in _arrays(list(inputs))], outputs, [params[k][0] for k in used])
