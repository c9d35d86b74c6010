"""Channel dependency groups on a model's dataflow graph (Torch-Pruning's DepGraph, on ``nn.trace_graph``).

Every array of one traced call has a *channel axis* (axis 1 of an (N, C, ...) map, the last axis of
(N, L, D) tokens). Each of its channels is an element, and so is every prunable slice of a layer::

    role 'out'      producer's channel c: Conv/Linear weight[c] and bias[c]; Embedding weight[:, c]
    role 'in'       consumer's input c: Conv/Linear weight[:, c]
    role 'channel'  per-channel parameters [c]: BatchNorm, depthwise conv, PReLU(C), GroupNorm
    role 'param'    a parameter fed into a layer (a ViT's class token, its position embedding) [..., c]
    role 'hidden'   hidden unit j of an RNN / LSTM / GRU: its gate rows of every weight_ih / weight_hh / bias,
                    its column of every weight_hh and of the next layer's weight_ih (every layer and direction:
                    one module has one hidden_size)

Each traced call joins the elements that must be removed together (a union-find):

    producer (Conv with groups=1, Linear, Embedding)   out channel c = its 'out' c; input c = its 'in' c
    per-channel layers (BatchNorm, depthwise conv, PReLU(C), GroupNorm, by whole groups)
                                                       input c = output c = its 'channel' c
    channel-preserving layers (activations, dropout, pooling over other axes, Add / Mul with broadcasting,
    Cat along another axis, LayerNorm / Softmax over other axes)          input c = output c
    Cat along the channel axis                         input k's c = output (offset_k + c)
    Flatten over the channel axis                      input c = every output feature whose coordinate there is c
    Permute / Unflatten / Flatten elsewhere            the channel axis moves
    Reshape keeping the axes up to the channels        input c = output c; merging the channels with every
                                                       later axis: as Flatten; any other reshape: refused
    ConstantOperand (x op c)                           input c = output c when c does not vary along them
    RNN / LSTM / GRU (no proj_size)                    input feature c = its 'in' c; output feature d H + j,
                                                       h_n[..., j], c_n[..., j], h0 / c0 [..., j] = its 'hidden' j

A set of joined elements is one prunable *unit*; units with the same members form a ``Group``. A unit
joined to something that must keep its width is refused, and the reason names the module: the model's
inputs and outputs, an ignored layer, a layer that mixes channels (LayerNorm or Softmax over them, a
grouped convolution, MultiheadAttention's embed_dim, which is both its input width and its inner width),
a module this file has no rule for. Attention heads are pruned on their own (``prune.prune_heads``).

Limits of a trace: a module called twice is joined across both calls (its slices are shared); an
in-place write into an array between modules is invisible to hooks, so is not seen here (write such
code as a module). Operations on raw arrays between modules are refused by ``nn.trace_graph``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..nn.graph import Graph, Node, Source, trace_graph
from ..nn.kinds import layer_kind
from ..nn.layers import (Cat, ConstantOperand, Embedding, FloatFunctional, GroupNorm, LayerNorm, MultiheadAttention,
                         Permute, PReLU, Reshape, Unflatten)
from ..nn.layers.rnn import RNNBase
from ..nn.layers.activation import _SoftmaxBase
from ..nn.module import Module

__all__ = ["Group", "DependencyGraph", "dependency_graph", "SOURCES"]

Member = tuple[str, str]          # (module name, role) or (parameter name, 'param')
SOURCES = ("out", "hidden")       # roles where channels are born: a group needs one


@dataclass
class Group:
    """Channels that are removed together: ``units[u][member]`` are the indices of unit ``u`` in that member.

    ``root`` is the first producer of the group in call order (its name is the group's name); ``blocked``
    is None, or why the group cannot be pruned.
    """

    root: str
    units: list[dict[Member, np.ndarray]]
    blocked: str | None = None
    modules: dict[str, Module] = field(default_factory=dict)
    param_axes: dict[str, int] = field(default_factory=dict)
    taps: dict[str, list[np.ndarray]] = field(default_factory=dict)   # module -> its output channels per unit

    @property
    def channels(self) -> int:
        return len(self.units)

    @property
    def root_member(self) -> Member:
        """The root's (name, role): 'out' of a producer, 'hidden' of a recurrent layer."""
        return next(m for m in self.members if m[0] == self.root and m[1] in SOURCES)

    @property
    def members(self) -> list[Member]:
        return list(self.units[0]) if self.units else []

    def indices(self, member: Member, units: Iterable[int] | None = None) -> np.ndarray:
        """Indices of ``member`` owned by ``units`` (all units by default), sorted."""
        chosen = range(len(self.units)) if units is None else units
        parts = [self.units[u][member] for u in chosen]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def __repr__(self) -> str:
        state = f", blocked: {self.blocked}" if self.blocked else ""
        return f"Group({self.root!r}, {self.channels} channels, members={self.members}{state})"


class _UnionFind:
    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.parent: list[int] = []

    def id(self, key: Any) -> int:
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.parent)
            self.parent.append(i)
        return i

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(self.id(a)), self.find(self.id(b))
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DependencyGraph:
    """The groups of a traced model: ``groups`` (prunable and refused alike) and the ``graph`` they came from."""

    graph: Graph
    groups: list[Group]

    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.blocked is None]

    def refused(self) -> dict[str, str]:
        """``{root name: reason}`` of every group that cannot be pruned."""
        return {g.root: g.blocked for g in self.groups if g.blocked is not None}


class _Builder:
    """Walks the graph once in call order, joining elements (module docstring)."""

    def __init__(self, model: Module, graph: Graph, ignored: set[str]) -> None:
        self.graph, self.uf, self.ignored = graph, _UnionFind(), ignored
        self.axis: dict[Source, int] = {}
        self.shape: dict[Source, tuple[int, ...]] = {}
        self.blocked: dict[int, str] = {}          # element id -> reason
        self.modules: dict[str, Module] = dict(model.named_modules())
        self.param_axes: dict[str, int] = {}
        self.order: dict[str, int] = {}            # module name -> index of its first call

    # -- elements -----------------------------------------------------------------------------------
    def channels(self, src: Source) -> int:
        return self.shape[src][self.axis[src]]

    def block(self, src: Source, reason: str) -> None:
        for c in range(self.channels(src)):
            self.blocked.setdefault(self.uf.id(("t", src, c)), reason)

    def join(self, a: Source, b: Source) -> None:
        """Channel c of ``a`` is channel c of ``b`` (same count required)."""
        for c in range(self.channels(a)):
            self.uf.union(("t", a, c), ("t", b, c))

    def member(self, src: Source, name: str, role: str) -> None:
        for c in range(self.channels(src)):
            self.uf.union(("t", src, c), ("m", name, role, c))

    # -- the walk -----------------------------------------------------------------------------------
    def run(self) -> None:
        g = self.graph
        for i, shape in enumerate(g.input_shapes):
            src = Source(-1, i)
            self.shape[src], self.axis[src] = shape, 1 if len(shape) > 1 else 0
            if len(shape) > 0:
                self.block(src, f"input {i} of the model keeps its width")
        for i, node in enumerate(g.nodes):
            base = node.name.split("#")[0]
            self.order.setdefault(base, i)
            for j, shape in enumerate(node.out_shapes):
                self.shape[Source(i, j)] = shape
            for k, src in enumerate(node.inputs):
                if src.node == -2:
                    self.shape[src] = node.in_shapes[k]
            self.visit(i, node, base)
        for k, src in enumerate(g.outputs):
            if src in self.axis and self.shape[src]:
                self.block(src, f"output {k} of the model keeps its width")
        for key, i in list(self.uf.ids.items()):     # an ignored layer keeps the width it produces
            if key[0] == "m" and key[1] in self.ignored and key[2] in SOURCES:
                self.blocked.setdefault(i, f"{key[1]!r} is in ignored_layers")

    def visit(self, i: int, node: Node, name: str) -> None:
        module, ins = node.module, list(node.inputs)
        outs = [Source(i, j) for j in range(len(node.out_shapes))]
        kind, label = layer_kind(module), f"{name!r} ({type(module).__name__})"
        if isinstance(module, Embedding):
            self._set_axis(outs[0], len(node.out_shapes[0]) - 1)
            self.member(outs[0], name, "out")
            return
        if kind in ("linear", "conv"):
            self._weighted(module, name, label, ins[0], outs[0])
            return
        if isinstance(module, RNNBase):
            self._recurrent(module, name, label, node, ins, outs)
            return
        if isinstance(module, MultiheadAttention):
            why = (f"{label}: its embed_dim is both its input width and its inner width (prune its heads "
                   f"with prune.prune_heads instead)")
            self._opaque(ins, outs, why)
            return
        if kind == "batchnorm" or isinstance(module, GroupNorm) or (isinstance(module, PReLU)
                                                                   and module.num_parameters > 1):
            self._per_channel(module, name, label, ins[0], outs[0])
            return
        if isinstance(module, LayerNorm) or isinstance(module, _SoftmaxBase):
            self._normalising(module, label, ins[0], outs[0])
            return
        if kind == "elementwise" or isinstance(module, PReLU):
            self._preserve(ins[0], outs[0])
            return
        if kind == "pool":
            self._pool(module, label, ins[0], outs[0])
            return
        if kind == "flatten":
            start, end = module.start_dim, module.end_dim
            self._flatten(label, ins[0], outs[0], start, end)
            return
        if isinstance(module, Permute):
            self._set_axis(outs[0], list(module.dims).index(self.axis[ins[0]]) if ins[0] in self.axis else 1)
            self.join(ins[0], outs[0])
            return
        if isinstance(module, Unflatten):
            self._unflatten(module, label, ins[0], outs[0])
            return
        if isinstance(module, Reshape):
            self._reshape(label, ins[0], outs[0])
            return
        if isinstance(module, ConstantOperand):
            self._constant_operand(module, label, ins[0], outs[0])
            return
        if kind == "merge" or isinstance(module, FloatFunctional):
            self._merge(module, label, ins, outs[0])
            return
        if kind == "features":
            self._features(label, ins, outs[0])
            return
        self._opaque(ins, outs, f"{label} has no channel rule (an unknown module mixes channels)")

    # -- rules ----------------------------------------------------------------------------------------
    def _set_axis(self, src: Source, axis: int) -> None:
        self.axis[src] = axis % max(len(self.shape[src]), 1)

    def _opaque(self, ins: list[Source], outs: list[Source], why: str) -> None:
        """A layer that mixes channels: nothing on either side can be pruned through it. Its outputs keep
        the channel axis of its first tracked input (counted from the end), else axis 1."""
        tracked = [s for s in ins if s in self.axis]
        for s in tracked:
            self.block(s, why)
        from_right = len(self.shape[tracked[0]]) - self.axis[tracked[0]] if tracked else None
        for s in outs:
            ndim = len(self.shape[s])
            if ndim:
                self._set_axis(s, ndim - from_right if from_right and from_right <= ndim else min(1, ndim - 1))
                self.block(s, why)

    def _weighted(self, module: Module, name: str, label: str, src: Source, out: Source) -> None:
        is_linear = layer_kind(module) == "linear"
        channel_axis = len(self.shape[src]) - 1 if is_linear else 1
        self._set_axis(out, len(self.shape[out]) - 1 if is_linear else 1)
        if not is_linear and module.groups != 1:
            if module.groups == module.in_channels == module.out_channels:
                self._per_channel(module, name, label, src, out)  # depthwise: output c reads input c only
            else:
                self._opaque([src], [out], f"{label} is a grouped convolution (groups={module.groups}, "
                                           f"{module.in_channels} -> {module.out_channels}); only groups=1 and "
                                           f"depthwise convolutions are followed")
            return
        if src in self.axis:
            if self.axis[src] % len(self.shape[src]) == channel_axis:
                self.member(src, name, "in")
            else:
                self.block(src, f"{label} reads axis {channel_axis}, the channels are on axis {self.axis[src]}")
        self.member(out, name, "out")

    def _recurrent(self, module: RNNBase, name: str, label: str, node: Node, ins: list[Source],
                   outs: list[Source]) -> None:
        """Inputs: x (its last axis: 'in'), then optionally h0 (and c0), each (..., H); lengths (N,) ints are
        not features. Outputs: output (..., D H), h_n (and c_n) (..., H)."""
        H = module.hidden_size
        if module.proj_size:
            self._opaque(ins, outs, f"{label} has proj_size={module.proj_size}: its hidden units and its outputs "
                                    f"are different widths")
            return
        x, states = ins[0], [s for s, shape in zip(ins[1:], node.in_shapes[1:]) if shape and shape[-1] == H
                             and len(shape) >= 2]
        if x in self.axis:
            if self.axis[x] == len(self.shape[x]) - 1:
                self.member(x, name, "in")
            else:
                self.block(x, f"{label} reads the last axis, the channels are on axis {self.axis[x]}")
        for out in outs:
            self._set_axis(out, len(self.shape[out]) - 1)
            for c in range(self.channels(out)):
                self.uf.union(("t", out, c), ("m", name, "hidden", c % H))
        for s in states:                       # h0 / c0 (..., H): their last axis is the hidden units
            if s not in self.axis:
                continue
            if self.axis[s] == len(self.shape[s]) - 1:
                for c in range(H):
                    self.uf.union(("t", s, c), ("m", name, "hidden", c))
            else:                              # e.g. the model's own input: a width nothing here can change
                for c in range(H):
                    self.blocked.setdefault(self.uf.id(("m", name, "hidden", c)),
                                            f"{label}'s initial state comes with its channels on axis {self.axis[s]}")

    def _per_channel(self, module: Module, name: str, label: str, src: Source, out: Source) -> None:
        if src not in self.axis or self.axis[src] != 1:
            self._opaque([src], [out], f"{label} has per-channel parameters on axis 1, the channels are elsewhere")
            return
        self._set_axis(out, 1)
        self.join(src, out)
        self.member(out, name, "channel")
        if isinstance(module, GroupNorm):       # statistics per group: a unit is a whole group
            size = module.num_channels // module.num_groups
            for c in range(module.num_channels):
                self.uf.union(("m", name, "channel", c), ("m", name, "channel", c - c % size))

    def _preserve(self, src: Source, out: Source) -> None:
        if src not in self.axis:
            return
        self._set_axis(out, self.axis[src] - len(self.shape[src]) + len(self.shape[out]))
        if self.channels(out) == self.channels(src):
            self.join(src, out)

    def _normalising(self, module: Module, label: str, src: Source, out: Source) -> None:
        """LayerNorm / Softmax: per-element along their axes, mixing within them."""
        if src not in self.axis:
            return
        ndim, axis = len(self.shape[src]), self.axis[src]
        if isinstance(module, LayerNorm):
            mixed = set(range(ndim - len(module.normalized_shape), ndim))
        else:
            dim = module.dim if module.dim is not None else (0 if ndim in (0, 1, 3) else 1)  # PyTorch's legacy
            mixed = {dim % ndim}
        if axis in mixed:
            self._opaque([src], [out], f"{label} normalises over the channel axis {axis}: removing a channel "
                                       f"would change the others")
        else:
            self._preserve(src, out)

    def _pool(self, module: Module, label: str, src: Source, out: Source) -> None:
        if src not in self.axis:
            return
        spatial = 1 if "1d" in type(module).__name__.lower() else 2
        if self.axis[src] >= len(self.shape[src]) - spatial:
            self._opaque([src], [out], f"{label} pools over the channel axis {self.axis[src]}")
        else:
            self._preserve(src, out)

    def _flatten(self, label: str, src: Source, out: Source, start: int, end: int) -> None:
        if src not in self.axis:
            return
        shape, axis = self.shape[src], self.axis[src]
        start, end = start % len(shape), end % len(shape)
        if axis < start:
            self._set_axis(out, axis)
            self.join(src, out)
        elif axis > end:
            self._set_axis(out, axis - (end - start))
            self.join(src, out)
        else:                                           # channel c -> every flat feature with coordinate c
            self._set_axis(out, start)
            flat = np.arange(int(np.prod(shape[start:end + 1], dtype=np.int64))).reshape(shape[start:end + 1])
            for c in range(shape[axis]):
                for f in np.take(flat, c, axis=axis - start).ravel():
                    self.uf.union(("t", src, c), ("t", out, int(f)))

    def _unflatten(self, module: Unflatten, label: str, src: Source, out: Source) -> None:
        if src not in self.axis:
            return
        dim, axis = module.dim % len(self.shape[src]), self.axis[src]
        if dim == axis:
            self._opaque([src], [out], f"{label} splits the channel axis {axis}")
            return
        self._set_axis(out, axis if axis < dim else axis + len(module.unflattened_size) - 1)
        self.join(src, out)

    def _reshape(self, label: str, src: Source, out: Source) -> None:
        """A reshape that keeps every axis up to the channel axis is channel-preserving; one that keeps the
        axes before it and merges the channel axis with all after it is a Flatten; anything else is refused."""
        if src not in self.axis:
            return
        shape, out_shape, axis = self.shape[src], self.shape[out], self.axis[src]
        if shape[:axis + 1] == out_shape[:axis + 1]:
            self._set_axis(out, axis)
            self.join(src, out)
        elif shape[:axis] == out_shape[:axis] and len(out_shape) == axis + 1:
            self._flatten(label, src, out, axis, len(shape) - 1)
        else:
            self._opaque([src], [out], f"{label} reshapes {shape} to {out_shape}, moving the channel axis {axis}")

    def _constant_operand(self, module: ConstantOperand, label: str, src: Source, out: Source) -> None:
        """x (op) c keeps the channels when c is one value along the channel axis (a scalar, or broadcast there)."""
        if src not in self.axis:
            return
        position = module.constant.ndim - (len(self.shape[src]) - self.axis[src])   # the channel axis, from the right
        if position >= 0 and module.constant.shape[position] != 1:
            self._opaque([src], [out], f"{label} has a constant of shape {module.constant.shape} that varies "
                                       f"along the channel axis")
        else:
            self._preserve(src, out)

    def _merge(self, module: Module, label: str, ins: list[Source], out: Source) -> None:
        """Add / Mul (broadcasting), Cat, FloatFunctional's ops (told apart by their shapes)."""
        out_shape = self.shape[out]
        tracked = [s for s in ins if s in self.axis]
        if not tracked:
            return
        from_right = len(self.shape[tracked[0]]) - self.axis[tracked[0]]
        if any(len(self.shape[s]) - self.axis[s] != from_right for s in tracked):
            self._opaque(ins, [out], f"{label} merges inputs whose channels are on different axes")
            return
        self._set_axis(out, len(out_shape) - from_right)
        axis = self.axis[out]
        if isinstance(module, Cat):
            dim = module.dim % len(out_shape)
        else:
            same = all(len(self.shape[s]) == len(out_shape) for s in ins)
            differs = [d for d in range(len(out_shape)) if same and
                       any(self.shape[s][d] != out_shape[d] for s in ins)]
            dim = differs[0] if len(ins) > 1 and len(differs) == 1 and \
                sum(self.shape[s][differs[0]] for s in ins) == out_shape[differs[0]] else None
        offset = 0
        for s in ins:
            position = len(self.shape[s]) - from_right
            size = self.shape[s][position] if position >= 0 else 1      # a missing axis broadcasts
            if size == 1 and dim != axis:
                continue
            if s.node == -2:
                self.param_axes[self.graph.params[s.index]] = position
                self.axis[s] = position
            if dim == axis:                              # concatenation along the channels
                for c in range(size):
                    self.uf.union(("t", s, c), ("t", out, offset + c))
                offset += size
            elif size == out_shape[axis]:
                self.join(s, out)
            else:
                self._opaque(ins, [out], f"{label} merges {size} channels into {out_shape[axis]}")
                return
        self._params(ins)

    def _features(self, label: str, ins: list[Source], out: Source) -> None:
        """A module declaring kind 'features': output[..., c] depends on its inputs[..., c] only."""
        self._set_axis(out, len(self.shape[out]) - 1)
        for s in ins:
            if s.node == -2:
                self.axis[s] = len(self.shape[s]) - 1
                self.param_axes[self.graph.params[s.index]] = len(self.shape[s]) - 1
            if s not in self.axis:
                continue
            if self.axis[s] != len(self.shape[s]) - 1 or self.channels(s) != self.channels(out):
                self._opaque(ins, [out], f"{label} keeps the last axis, the channels are elsewhere")
                return
            self.join(s, out)
        self._params(ins)

    def _params(self, ins: list[Source]) -> None:
        for s in ins:
            if s.node == -2 and s in self.axis and self.channels(s) > 1:
                name = self.graph.params[s.index]
                for c in range(self.channels(s)):
                    self.uf.union(("t", s, c), ("p", name, "param", c))

    # -- groups ---------------------------------------------------------------------------------------
    def groups(self) -> list[Group]:
        uf = self.uf
        sets: dict[int, dict[Member, list[int]]] = {}
        reasons: dict[int, str] = {}
        for key, i in uf.ids.items():
            root = uf.find(i)
            if key[0] in ("m", "p"):
                _, name, role, c = key
                sets.setdefault(root, {}).setdefault((name, role), []).append(c)
        for i, why in self.blocked.items():
            reasons.setdefault(uf.find(i), why)
        by_signature: dict[tuple, list[int]] = {}
        for root, members in sets.items():
            if any(role in SOURCES for _, role in members):
                by_signature.setdefault(tuple(sorted(members)), []).append(root)
        outputs: dict[int, dict[str, list[int]]] = {}           # set root -> {module: its output channels there}
        for key, i in uf.ids.items():
            if key[0] == "t" and key[1].node >= 0 and key[1].index == 0:
                node = self.graph.nodes[key[1].node]
                if node.call == 1:
                    outputs.setdefault(uf.find(i), {}).setdefault(node.name, []).append(key[2])
        groups = []
        for signature, roots in by_signature.items():
            producers = sorted((self.order.get(n, 1 << 30), n, role) for n, role in signature if role in SOURCES)
            _, root_name, root_role = producers[0]
            roots.sort(key=lambda r: min(sets[r][(root_name, root_role)]))
            units = [{m: np.array(sorted(sets[r][m]), np.int64) for m in signature} for r in roots]
            blocked = next((reasons[r] for r in roots if r in reasons), None)
            modules = {n: self.modules[n] for n, role in signature if role != "param"}
            axes = {n: self.param_axes[n] for n, role in signature if role == "param"}
            taps = {}
            for name in outputs.get(roots[0], {}):
                if all(name in outputs.get(r, {}) for r in roots):
                    taps[name] = [np.array(sorted(outputs[r][name]), np.int64) for r in roots]
            groups.append(Group(root_name, units, blocked, modules, axes, taps))
        groups.sort(key=lambda g: (self.order.get(g.root, 1 << 30), int(g.indices(g.root_member)[0])))
        return groups


def dependency_graph(model: Module, *example_inputs: Any, ignored_layers: Iterable[str] = ()) -> DependencyGraph:
    """The channel groups of ``model`` traced on ``example_inputs`` (module docstring); the model is unchanged.

    ``ignored_layers``: names of layers whose output width is kept (their groups are refused).
    """
    ignored = set(ignored_layers)
    names = dict(model.named_modules())
    unknown = sorted(n for n in ignored if n not in names)
    if unknown:
        raise ValueError(f"channel_prune: ignored_layers {unknown} are not modules of the model")
    try:
        graph = trace_graph(model, *example_inputs)
    except ValueError as e:
        raise ValueError(f"channel_prune: cannot follow the model: {e}") from None
    builder = _Builder(model, graph, ignored)
    builder.run()
    return DependencyGraph(graph, builder.groups())
