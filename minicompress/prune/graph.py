"""Trace a model once to find which layers share channels (for channel surgery).

``trace(model, x)`` reads the dataflow graph of one call (``nn.trace_graph``: eval mode, no
gradients, the model left as it was) and keeps every leaf call in order with its input and output
shapes. The surgery follows *chains*: each leaf must receive exactly the array the previous leaf returned (checked by object
identity), the first leaf the example input, and the model must return the last leaf's output.
Models that branch, add, concatenate or reshape outside a leaf module are refused with the name of
the module where the chain breaks, rather than pruned wrongly.

``channel_groups(nodes)`` then reads the chain as a sequence of *groups*: a producer (Linear, or a
convolution with ``groups == 1``) whose output channels pass through channel-wise layers
(BatchNorm, depthwise conv: pruned together with it), shape-preserving layers (activations,
pooling, dropout) and at most one ``Flatten`` to a consumer (the next Linear/conv, whose inputs
are pruned). A producer with no consumer (the classifier) or with anything else on the way is
not pruned.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..nn.graph import Source, trace_graph
from ..nn.kinds import layer_kind
from ..nn.module import Module

__all__ = ["Node", "Group", "trace", "channel_groups"]


@dataclass
class Node:
    """One leaf module call: ``name`` as in ``named_modules``, input and output shapes."""

    name: str
    module: Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class Group:
    """Channels of ``producer`` (weight axis 0) shared with ``followers`` and ``consumer``'s inputs.

    ``spatial`` is the number of Linear input columns per channel after a Flatten (1 otherwise).
    """

    producer: Node
    consumer: Node
    followers: list[tuple[Node, int]] = field(default_factory=list)  # (node, features per channel there)
    spatial: int = 1

    @property
    def channels(self) -> int:
        return self.producer.out_shape[1]


def trace(model: Module, example_input: np.ndarray) -> list[Node]:
    """Leaf calls of ``model(example_input)`` in order (``nn.trace_graph``); ValueError unless they form a chain."""
    try:
        graph = trace_graph(model, example_input)
    except ValueError as e:
        raise ValueError(f"channel_prune: cannot follow the model: {e}") from None
    nodes: list[Node] = []
    for i, node in enumerate(graph.nodes):
        if node.call > 1:
            raise ValueError(f"channel_prune: module {node.name.split('#')[0]!r} is called more than once; shared "
                             f"layers are not supported")
        if node.inputs != [Source(i - 1) if i else Source(-1)]:
            raise ValueError(f"channel_prune: cannot follow the model at {node.name!r} ({node.module._name()}): its "
                             f"input is not the output of the layer before it (branches, residual "
                             f"additions and reshapes outside modules are not supported)")
        nodes.append(Node(node.name, node.module, node.in_shapes[0], node.out_shapes[0]))
    if graph.outputs != [Source(len(nodes) - 1)]:
        raise ValueError("channel_prune: the model's output is not the last layer's output; only chains of "
                         "layers (Sequential, nested Sequentials) are supported")
    return nodes


def _kind(module: Module) -> str:
    """'producer' | 'channelwise' | 'elementwise' | 'pool' | 'flatten' | 'barrier' (from ``nn.kinds``)."""
    kind = layer_kind(module)
    if kind == "linear":
        return "producer"
    if kind == "conv":
        if module.groups == 1:
            return "producer"
        if module.groups == module.in_channels == module.out_channels:
            return "channelwise"  # depthwise, multiplier 1: output channel c reads only input channel c
        return "barrier"
    if kind == "batchnorm":
        return "channelwise"
    if kind in ("elementwise", "pool", "flatten"):
        return kind
    return "barrier"


def channel_groups(nodes: list[Node]) -> tuple[list[Group], dict[str, str]]:
    """Prunable groups, and for every unprunable producer the reason (``{name: why}``)."""
    groups, skipped = [], {}
    for i, node in enumerate(nodes):
        if _kind(node.module) != "producer":
            continue
        batched_ndim = 2 if layer_kind(node.module) == "linear" else len(node.module.kernel_size) + 2
        if len(node.out_shape) != batched_ndim:  # (N, C) for Linear, (N, C, *spatial) for a conv
            skipped[node.name] = f"output of shape {node.out_shape} is not batched (N, C, ...)"
            continue
        channels, followers, spatial, flattened, why = node.out_shape[1], [], 1, False, None
        for nxt in nodes[i + 1:]:
            kind, cls = _kind(nxt.module), type(nxt.module).__name__
            if kind == "producer":
                width = nxt.in_shape[1] if len(nxt.in_shape) > 1 else None
                if width == channels * spatial:
                    groups.append(Group(node, nxt, followers, spatial))
                else:
                    why = f"{nxt.name!r} takes {width} inputs, expected {channels} x {spatial}"
                break
            if kind == "flatten" and not flattened:
                start, end = getattr(nxt.module, "start_dim", 1), getattr(nxt.module, "end_dim", -1)
                if start != 1 or end not in (-1, len(nxt.in_shape) - 1):
                    why = f"Flatten({start}, {end}) does not keep channel blocks contiguous"
                    break
                spatial, flattened = int(np.prod(nxt.in_shape[2:], dtype=np.int64)), True
                continue
            keeps = kind in ("channelwise", "elementwise") or (kind == "pool" and not flattened)
            if not keeps:
                why = f"{nxt.name!r} ({cls}) does not keep channels separate"
                break
            if len(nxt.out_shape) < 2 or nxt.out_shape[1] != channels * spatial:
                why = f"{nxt.name!r} changes the channel axis ({nxt.in_shape} -> {nxt.out_shape})"
                break
            if kind == "channelwise":
                followers.append((nxt, spatial))
        else:
            why = "its outputs are the model's outputs"
        if why is not None:
            skipped[node.name] = why
    return groups, skipped
