"""GraphModule: a model that is a DAG of module calls wired by value names (the DAG form of Sequential).

Each node is ``(module name, input value names, output value names)``; the module is a child of the
GraphModule under that name (so state-dict keys are ``<node>.weight``...). A value is a graph input, a
node output, or a Parameter of the GraphModule itself (a trainable array fed straight to a module: a
ViT's class token or position embedding), listed in ``param_values`` as ``{value name: attribute}``.

    forward:   values = inputs; for each node in order: values[outs] = module(*values[ins])
    backward:  for each node in reverse: g_ins = module.backward(g_outs); a value read by several nodes
               (fan-out) gets the sum of their gradients: g_v = sum_k g_v^(k)

``backward_params`` (the input is data, train.fit's call) runs ``backward_params`` on every node that
reads only data: the graph inputs and what parameter-free nodes compute from them (a normalising Sub,
a Reshape), so the first weighted layer computes no d input.

Nodes are kept in a topological order (checked when built). A node whose outputs received no gradient
still runs its backward on zeros, so that every module's forward cache is consumed. Integer values
(embedding indices) and size-only inputs get no gradient (their modules return None for them).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .module import Module, Parameter

__all__ = ["GraphModule"]


class GraphModule(Module):
    """A DAG of child modules (module docstring); ``forward(*inputs)`` returns one array or a tuple."""

    def __init__(self, modules: dict[str, Module], nodes: Sequence[tuple[str, Sequence[str], Sequence[str]]],
                 inputs: Sequence[str], outputs: Sequence[str], param_values: dict[str, str] | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        for attr, array in (params or {}).items():
            self.register_parameter(attr, array if isinstance(array, Parameter) else Parameter(np.asarray(array)))
        self.nodes = [(str(n), tuple(ins), tuple(outs)) for n, ins, outs in nodes]
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.param_values = dict(param_values or {})
        self._check_wiring()

    def _check_wiring(self) -> None:
        """Every node's inputs are defined before it; every module and parameter it names exists."""
        defined = set(self.inputs) | set(self.param_values)
        for attr in self.param_values.values():
            if attr not in self._parameters:
                raise ValueError(f"GraphModule: param_values name {attr!r}, which is not a parameter")
        for name, ins, outs in self.nodes:
            if self._modules.get(name) is None:
                raise ValueError(f"GraphModule: node {name!r} has no module of that name")
            missing = [v for v in ins if v not in defined]
            if missing:
                raise ValueError(f"GraphModule: node {name!r} reads {missing}, which no earlier node, input or "
                                 f"parameter defines (nodes must be in topological order)")
            defined.update(outs)
        missing = [v for v in self.outputs if v not in defined]
        if missing:
            raise ValueError(f"GraphModule: outputs {missing} are defined by no node, input or parameter")

    def _config(self) -> dict:
        """Model-file config: the wiring and the shapes of the graph's own parameters (their values are state)."""
        return {"nodes": [[n, list(i), list(o)] for n, i, o in self.nodes], "inputs": list(self.inputs),
                "outputs": list(self.outputs), "param_values": dict(self.param_values),
                "param_shapes": {a: [list(p.data.shape), p.data.dtype.str] for a, p in self._parameters.items()
                                 if p is not None}}

    @classmethod
    def _from_config(cls, config: dict) -> "GraphModule":
        from .layers import Identity
        names = {n for n, _, _ in config["nodes"]}
        params = {a: np.zeros(tuple(shape), np.dtype(dtype)) for a, (shape, dtype) in config["param_shapes"].items()}
        return cls({n: Identity() for n in names}, config["nodes"], config["inputs"], config["outputs"],
                   config["param_values"], params)

    # ------------------------------------------------------------------ passes
    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"GraphModule: expected {len(self.inputs)} inputs ({', '.join(self.inputs)}), "
                             f"got {len(inputs)}")
        values = dict(zip(self.inputs, inputs))
        for value, attr in self.param_values.items():
            values[value] = self.array(attr)
        shapes, tuples = {}, []
        for name, ins, outs in self.nodes:
            out = self._modules[name](*(values[v] for v in ins))
            tuples.append(isinstance(out, tuple))
            for v, y in zip(outs, out if tuples[-1] else (out,)):
                values[v] = y
                shapes[v] = (np.shape(y), getattr(y, "dtype", None))
        self._save_for_backward((shapes, tuples))
        result = tuple(values[v] for v in self.outputs)
        return result[0] if len(result) == 1 else result

    def _data_values(self) -> set[str]:
        """The graph inputs and every value computed from them by parameter-free nodes only (data: no
        parameter lies behind them, so nobody needs their gradient)."""
        data = set(self.inputs)
        for name, ins, outs in self.nodes:
            if all(v in data for v in ins) and next(self._modules[name].parameters(), None) is None:
                data.update(outs)
        return data

    def _run_backward(self, grad_output: Any, data_boundary: bool) -> dict[str, np.ndarray]:
        """Gradients of every value, nodes in reverse; ``data_boundary``: a node reading only data
        (``_data_values``) runs ``backward_params`` (its d input is not needed)."""
        shapes, tuples = self._saved()
        grads: dict[str, np.ndarray] = {}
        seeds = grad_output if len(self.outputs) > 1 else (grad_output,)
        if len(seeds) != len(self.outputs):
            raise ValueError(f"GraphModule: backward expected {len(self.outputs)} gradients, got {len(seeds)}")
        for v, g in zip(self.outputs, seeds):
            _accumulate(grads, v, g)
        data = self._data_values() if data_boundary else set()
        for (name, ins, outs), is_tuple in zip(reversed(self.nodes), reversed(tuples)):
            gs = [grads.pop(v, None) for v in outs]
            gs = [np.zeros(shapes[v][0], shapes[v][1]) if g is None else g for v, g in zip(outs, gs)]
            g_out = tuple(gs) if is_tuple else gs[0]
            module = self._modules[name]
            if all(v in data for v in ins):
                module.backward_params(g_out)
                continue
            g_in = module.backward(g_out)
            for v, g in zip(ins, g_in if len(ins) > 1 else (g_in,)):
                if g is not None:
                    _accumulate(grads, v, g)
        for value, attr in self.param_values.items():
            if value in grads:
                self.accumulate_grad(attr, grads.pop(value))
        return grads

    def backward(self, grad_output: Any) -> Any:
        grads = self._run_backward(grad_output, data_boundary=False)
        result = tuple(grads.get(v) for v in self.inputs)
        return result[0] if len(result) == 1 else result

    def backward_params(self, grad_output: Any) -> None:
        self._run_backward(grad_output, data_boundary=True)

    def extra_repr(self) -> str:
        return f"inputs={list(self.inputs)}, outputs={list(self.outputs)}, {len(self.nodes)} nodes"

    def __repr__(self) -> str:
        lines = [f"({name}): {self._modules[name]!r} <- {list(ins)}" for name, ins, _ in self.nodes]
        return f"GraphModule({self.extra_repr()}\n  " + "\n  ".join(lines) + "\n)"


def _accumulate(grads: dict[str, np.ndarray], value: str, grad: np.ndarray) -> None:
    """grads[value] += grad, without writing into an array a module returned (it may be a view)."""
    grads[value] = grad if value not in grads else grads[value] + grad
