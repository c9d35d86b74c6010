"""Frozen inference plans: a model's forward as a fixed list of steps over buffers allocated once.

    plan = inference.freeze(model)      # the plan keeps its own copy of the model, in eval mode
    y = plan(x)                          # == model.eval()(x) under no_grad()

For each new input shape the plan traces the model once (``nn.trace_graph``: which module call fed which,
so residual blocks, merges and fan-out are followed) and gives each call a *step*: the module's arithmetic
written straight onto the kernels, with every parameter prepared once (packed int8 weights, requantisation
multipliers, BatchNorm folded into the preceding convolution or linear layer -- a run of calls fuses when each
passes its one output to the next alone) and the buffers of that shape allocated once. Between steps, 4-D
activations stay channels last, (N, H, W, C), as fbgemm and onnxruntime keep them: an int8 convolution's GEMM
writes NHWC rows, so no layer transposes, and a Flatten before a Linear reorders the Linear's weight columns
instead of the activations. A module the plan has no step for (a residual add, a pooling, one with hooks or
parametrizations, whose behaviour only its call reproduces) is called as it is, on views of its inputs in the
logical layout, with its recorded arguments (``Node.replay``). A model whose forward does array arithmetic
between modules cannot be traced and runs as one call.

What comes out (``tests/inference``):

- int8 steps compute the module's codes bit for bit (the same kernels, the same requantisation, the same
  int16 saturation of fbgemm's depthwise path and its warning); each int8 step is checked against its
  module's own output on the first input of each shape, and a difference raises;
- float steps fold BatchNorm into the weights (``quant.fuse_conv_bn_eval``, as ``torch.jit.freeze`` and
  onnxruntime do) and sum in another order, so they agree with the model to float32 rounding, not bit for bit.

The steps of one input shape are built on its first call (tracing runs the model once, then each step runs
once; a module's hooks see both calls) and kept, up to ``MAX_SHAPES`` shapes. Each call returns new arrays:
the buffers are the plan's own. A model returning a tuple gets a tuple.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

import numpy as np

from ..nn.graph import Graph, Node, Source, trace_graph
from ..nn.grad_mode import no_grad
from ..nn.module import Module
from ..quant.qtensor import QTensor

MAX_SHAPES = 8


class Spec(NamedTuple):
    """How an activation between two steps is stored.

    layout: 'logical' (as the model's modules see it: NCHW for 4-D), 'nhwc' (a 4-D activation stored
    (N, H, W, C)) or 'flat_hwc' (a flattened (N, C*H*W) activation whose columns are in (H, W, C) order);
    chw: (C, H, W) of a 'flat_hwc' activation; qparams: (scale, zero_point) of uint8 codes, None for float;
    torch_nhwc: the ``QTensor.channels_last`` the modules would see -- PyTorch's memory format, which decides
    some ops' roundings (``quant/qops.py``). A quantized convolution's output is channels last in PyTorch; the
    output of ``Quantize`` is not, though the plan stores it NHWC too.
    """

    layout: str = "logical"
    chw: tuple | None = None
    qparams: tuple | None = None
    torch_nhwc: bool = False


LOGICAL_FLOAT = Spec()


def to_logical(x: np.ndarray, spec: Spec) -> Any:
    """The activation as the model's modules see it: an ndarray, or a QTensor of codes (a view where possible)."""
    if spec.layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    elif spec.layout == "flat_hwc":
        c, h, w = spec.chw
        x = np.ascontiguousarray(x.reshape(x.shape[0], h, w, c).transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)
    if spec.qparams is None:
        return x
    return QTensor(x, spec.qparams[0], spec.qparams[1], None, "quint8", channels_last=spec.torch_nhwc)


def from_logical(value: Any, who: str) -> tuple[np.ndarray, Spec]:
    """A module's output as (array, Spec): 4-D arrays become channels-last views (copied only if needed)."""
    if isinstance(value, QTensor):
        if value.axis is not None or value.dtype != "quint8":
            raise TypeError(f"inference plan: {who} returned {value!r}; only per-tensor quint8 activations "
                            f"can flow between steps")
        codes, qparams, torch_nhwc = value.int_repr, (float(value.scale), int(value.zero_point)), value.channels_last
    elif isinstance(value, np.ndarray):
        codes, qparams, torch_nhwc = value, None, False
    else:
        raise TypeError(f"inference plan: {who} returned a {type(value).__name__}; a plan's chain passes "
                        f"one array or QTensor from module to module")
    if codes.ndim == 4:
        return codes.transpose(0, 2, 3, 1), Spec("nhwc", None, qparams, torch_nhwc)
    return codes, Spec("logical", None, qparams)


class Step:
    """One module (or a fused run of modules) of the chain for one input shape: ``step(x) -> y``.

    Subclasses set ``name`` (the modules they stand for) and ``out_spec``, and allocate their buffers
    in ``__init__`` from the example input they are built with.
    """

    name: str
    out_spec: Spec
    passthrough = False          # True: the step returns its input (the plan aliases it instead of calling it)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ModuleCall(Step):
    """A module the plan has no step for, called as it is (its hooks run) on the logical activations.
    Its outputs' layout is learnt from its first call; later calls must keep the same quantization parameters."""

    def __init__(self, module: Module, specs: list[Spec], node: Node | None = None) -> None:
        self.module, self.name, self.in_specs, self.node = module, module._name(), specs, node
        self.out_spec: Spec | None = None
        self.out_specs: list[Spec] | None = None

    def __call__(self, *xs: np.ndarray) -> Any:
        inputs = [to_logical(x, s) for x, s in zip(xs, self.in_specs)]
        with no_grad():
            value = self.module(*(self.node.replay(inputs) if self.node is not None else inputs))
        outs = [from_logical(v, self.name) for v in (value if isinstance(value, tuple) else (value,))]
        specs = [spec for _, spec in outs]
        if self.out_specs is None:
            self.out_specs, self.out_spec = specs, specs[0]
        elif specs != self.out_specs:
            raise RuntimeError(f"inference plan: {self.name} returned {specs} where its first call returned "
                               f"{self.out_specs}; a frozen plan needs fixed output quantization parameters")
        return tuple(y for y, _ in outs) if isinstance(value, tuple) else outs[0][0]


class Links:
    """A traced graph's modules as a step builder sees them from node ``start``: ``links[start]`` is its module,
    and ``links[j]`` for j > start is node j's module only while every node from ``start`` on passes its one
    output to the next node alone (a run that can be fused into one step); otherwise None."""

    def __init__(self, graph: Graph, start: int) -> None:
        self.graph, self.start = graph, start

    def __len__(self) -> int:
        return len(self.graph.nodes)

    def _linked(self, k: int) -> bool:
        """Node k's single output feeds node k + 1 alone, and is not an output of the model."""
        src, g = Source(k, 0), self.graph
        return (len(g.nodes[k].out_shapes) == 1 and k + 1 < len(g.nodes) and g.nodes[k + 1].inputs == [src]
                and g.consumers(src) == [(k + 1, 0)] and src not in g.outputs)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(len(self)))]
        if j < self.start or j >= len(self) or not all(self._linked(k) for k in range(self.start, j)):
            return None
        return self.graph.nodes[j].module


# A builder gets (links, i, x, spec) -- ``Links`` of the traced graph from node i, node i's one input and its
# Spec -- and returns (step, number of nodes i, i + 1, ... it stands for) or None (no step for it).
Builder = Callable[[Links, int, np.ndarray, Spec], "tuple[Step, int] | None"]
BUILDERS: list[Builder] = []


def register_builder(builder: Builder) -> Builder:
    """Add a step builder (tried in registration order; the first that returns a step wins)."""
    BUILDERS.append(builder)
    return builder


# A merge builder gets (node, inputs, specs) of a node with several inputs and returns a step or None.
MergeBuilder = Callable[[Node, list, list], "Step | None"]
MERGE_BUILDERS: list[MergeBuilder] = []


def register_merge_builder(builder: MergeBuilder) -> MergeBuilder:
    """Add a builder for nodes of several inputs (a residual add, a concatenation)."""
    MERGE_BUILDERS.append(builder)
    return builder


def has_hooks(module: Module) -> bool:
    """Forward hooks, pre-hooks or weight parametrizations (pruning masks, QAT): only the module's call
    reproduces what they do, so the plan calls such a module instead of giving it a step."""
    return bool(module.forward_pre_hooks() or module.forward_hooks() or module.parametrizations())


class InferencePlan:
    """``freeze(model)``: the model's eval forward as steps (module docstring); call it like the model."""

    def __init__(self, model: Module) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"freeze: expected a Module, got {type(model).__name__}")
        self.model = copy.deepcopy(model).eval()
        floats = [p.data.dtype for p in self.model.parameters() if p.data.dtype.kind == "f"]
        self.dtype = np.dtype(np.float64) if floats and all(d == np.float64 for d in floats) else np.dtype(np.float32)
        self._plans: OrderedDict[tuple, _Built] = OrderedDict()

    def steps(self, x: np.ndarray) -> list[Step]:
        """The steps for inputs shaped like x (built by running x through the model on first sight)."""
        x = self._input(x)
        key = (x.shape, x.dtype.str)
        if key not in self._plans:
            self._build(x)
        return self._plans[key].steps

    def __call__(self, x: Any) -> Any:
        x = self._input(x)
        key = (x.shape, x.dtype.str)
        built = self._plans.get(key)
        if built is None:
            return self._build(x)
        self._plans.move_to_end(key)
        return built.run(x)

    def _input(self, x: Any) -> np.ndarray:
        """The input as a contiguous array of the model's float dtype (float32, or float64 for a
        ``to(np.float64)`` model)."""
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"inference plan: expected a floating-point input, got {x.dtype} {x.shape}")
        return np.ascontiguousarray(x, self.dtype)

    def _build(self, x: np.ndarray) -> Any:
        """Trace the model on x (``nn.trace_graph``: one call), then give each node a step, running them on x."""
        try:
            graph = trace_graph(self.model, x)
        except ValueError:                            # raw-array operations between modules: one call of all
            graph = Graph([Node(type(self.model).__name__, self.model, [Source(-1, 0)], [x.shape], [()])],
                          [x.shape], [Source(0, 0)], [])
        params = dict(self.model.named_parameters())
        values: dict[Source, np.ndarray] = {Source(-1, 0): x}
        specs: dict[Source, Spec] = {Source(-1, 0): LOGICAL_FLOAT}
        for k, name in enumerate(graph.params):
            values[Source(-2, k)], specs[Source(-2, k)] = params[name].data, LOGICAL_FLOAT
        entries, i = [], 0
        while i < len(graph.nodes):
            node = graph.nodes[i]
            ins = [values[s] for s in node.inputs]
            step, used = self._step_for(graph, i, ins, [specs[s] for s in node.inputs])
            out = step(*ins)
            last = i + used - 1
            outs = out if isinstance(out, tuple) else (out,)
            out_specs = getattr(step, "out_specs", None) or [step.out_spec]
            for j, (y, spec) in enumerate(zip(outs, out_specs)):
                values[Source(last, j)], specs[Source(last, j)] = y, spec
            entries.append((step, node.inputs, last))
            i += used
        built = _Built(entries, graph.outputs, [specs[s] for s in graph.outputs],
                       {s: values[s] for s in values if s.node == -2}, [s for s in values if s.node >= 0])
        self._plans[(x.shape, x.dtype.str)] = built
        if len(self._plans) > MAX_SHAPES:
            self._plans.popitem(last=False)
        results = tuple(_result(values[s], spec) for s, spec in zip(graph.outputs, built.out_specs))
        return results if len(results) > 1 else results[0]

    def _step_for(self, graph: Graph, i: int, ins: list, specs: list) -> tuple[Step, int]:
        module = graph.nodes[i].module
        if len(ins) == 1 and not has_hooks(module):
            links = Links(graph, i)
            for builder in BUILDERS:
                built = builder(links, i, ins[0], specs[0])
                if built is not None:
                    return built
        elif len(ins) > 1 and not has_hooks(module):
            for merge in MERGE_BUILDERS:
                step = merge(graph.nodes[i], ins, specs)
                if step is not None:
                    return step, 1
        return ModuleCall(module, specs, graph.nodes[i]), 1

    def __repr__(self) -> str:
        shapes = ", ".join(str(k[0]) for k in self._plans) or "none yet"
        return f"InferencePlan({type(self.model).__name__}; built for input shapes: {shapes})"


class _Built:
    """The steps of one input shape compiled to slots: each value (the input, a parameter, a step's output) has
    an index into one list, and steps that pass their input on (Identity, eval Dropout) just alias its slot."""

    def __init__(self, entries: list, outputs: list, out_specs: list, params: dict, produced: list) -> None:
        slot: dict[Source, int] = {Source(-1, 0): 0}
        self.template: list[Any] = [None]
        for source, value in params.items():
            slot[source] = len(self.template)
            self.template.append(value)
        self.entries = []
        for step, inputs, node in entries:
            ins = tuple(slot[s] for s in inputs)
            outs = [s for s in produced if s.node == node]
            if getattr(step, "passthrough", False):
                slot[outs[0]] = ins[0]
                continue
            for s in outs:
                slot[s] = len(self.template)
                self.template.append(None)
            first = slot[outs[0]]
            self.entries.append((step, ins, first if len(outs) == 1 else tuple(slot[s] for s in outs)))
        self.steps = [step for step, _, _ in entries]
        self.outputs = [slot[s] for s in outputs]
        self.out_specs = out_specs

    def run(self, x: np.ndarray) -> Any:
        values = self.template.copy()
        values[0] = x
        for step, ins, out in self.entries:
            y = step(values[ins[0]]) if len(ins) == 1 else step(*[values[i] for i in ins])
            if isinstance(out, int):
                values[out] = y
            else:
                for i, v in zip(out, y):
                    values[i] = v
        return self.result(values)

    def result(self, values: list) -> Any:
        results = tuple(_result(values[i], spec) for i, spec in zip(self.outputs, self.out_specs))
        return results if len(results) > 1 else results[0]


def _result(x: np.ndarray, spec: Spec) -> Any:
    """The plan's output: a new array (or QTensor) in the logical layout, never one of the buffers."""
    value = to_logical(x, spec)
    if isinstance(value, QTensor):
        return QTensor(np.array(value.int_repr), value.scale, value.zero_point, None, "quint8",
                       channels_last=value.channels_last)
    return np.array(value)


def freeze(model: Module) -> InferencePlan:
    """An inference plan of ``model`` in eval mode: the plan runs a copy of it with ``eval()`` applied (the
    model itself is untouched, and later changes to it are not seen). ``plan(x)`` returns what
    ``model.eval()(x)`` returns under ``no_grad()``: module docstring."""
    from . import float_steps, int8_steps  # noqa: F401  (register their builders)
    return InferencePlan(model)
