"""Which modules of an ``nn.GraphModule`` (an imported ONNX model) ``fuse_modules`` can fuse.

A native model lists its groups in ``fuse_model()``; a graph's groups follow from its wiring::

    Conv2d -> BatchNorm2d [-> ReLU],   Conv2d -> ReLU,   Linear -> BatchNorm1d [-> ReLU],   Linear -> ReLU

where every value between two members is read by the next member only: ``fuse_modules`` turns the later
members into Identity, so another reader of an inner value would silently read the fused result instead.
"""
from __future__ import annotations

from collections import Counter

from ..nn import BatchNorm1d, BatchNorm2d, Conv2d, Linear, ReLU
from ..nn.graph_module import GraphModule

__all__ = ["graph_fusion_groups"]

_NEXT = {Conv2d: (BatchNorm2d, ReLU), Linear: (BatchNorm1d, ReLU), BatchNorm2d: (ReLU,), BatchNorm1d: (ReLU,)}


def graph_fusion_groups(model: GraphModule) -> list[list[str]]:
    """Groups of child names for ``quant.fuse_modules(model, groups)`` (module docstring), in node order."""
    readers = Counter(v for _, ins, _ in model.nodes for v in ins) + Counter(model.outputs)
    reader_of = {v: (name, ins) for name, ins, _ in model.nodes for v in ins}
    calls = Counter(name for name, _, _ in model.nodes)
    groups, used = [], set()
    for name, ins, outs in model.nodes:
        module = model.get_submodule(name)
        if type(module) not in (Conv2d, Linear) or name in used or calls[name] != 1:
            continue
        group, current, value = [name], type(module), outs[0]
        while len(outs) == 1 and readers[value] == 1 and value in reader_of:
            nxt, nxt_ins = reader_of[value]
            kind = type(model.get_submodule(nxt))
            if kind not in _NEXT.get(current, ()) or len(nxt_ins) != 1 or calls[nxt] != 1:
                break
            group.append(nxt)
            current, value = kind, next(o for n, _, o in model.nodes if n == nxt)[0]
        if len(group) > 1:
            groups.append(group)
            used.update(group)
    return groups
