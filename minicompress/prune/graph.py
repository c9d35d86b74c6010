"""Trace a model once to find which layers share channels (for channel surgery).

``trace(model, x)`` runs ``model`` on ``x`` (eval mode, no gradients, on the model you pass) and
records every leaf module in call order with its input and output shapes. The surgery follows
*chains*: each leaf must receive exactly the array the previous leaf returned (checked by object
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
from typing import Any

import numpy as np

from ..nn.grad_mode import no_grad
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
    """Leaf calls of ``model(example_input)`` in order; raises ValueError if they do not form a chain."""
    names = {id(m): name for name, m in model.named_modules()}
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    calls: list[tuple[Module, Any, Any]] = []

    def record(module: Module, inputs: tuple, out: Any) -> None:
        calls.append((module, inputs, out))

    was_training = [(m, m.training) for m in model.modules()]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        model.eval()
        with no_grad():
            output = model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in was_training:
            m.training = mode

    nodes, expected = [], example_input
    for module, inputs, out in calls:
        name = names[id(module)] or type(module).__name__
        if len(inputs) != 1 or inputs[0] is not expected:
            raise ValueError(f"channel_prune: cannot follow the model at {name!r} ({module._name()}): its "
                             f"input is not the output of the layer before it (branches, residual "
                             f"additions and reshapes outside modules are not supported)")
        if any(node.module is module for node in nodes):
            raise ValueError(f"channel_prune: module {name!r} is called more than once; shared layers "
                             f"are not supported")
        nodes.append(Node(name, module, np.shape(inputs[0]), np.shape(out)))
        expected = out
    if output is not expected:
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
