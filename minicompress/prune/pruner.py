"""Iterative channel pruning: a pruner object that removes channels in place over several steps.

``ChannelPruner(model, example_input, amount, importance, iterative_steps=k)`` prunes ``model`` itself a
little at each ``step()``, as Torch-Pruning's ``MetaPruner`` with ``iterative_steps``: after step s of k the
ratio is ``r_s = amount * s / k`` and each group keeps ``int(C0 * (1 - r_s))`` of its initial ``C0``
channels (the same arithmetic as ``channel_prune``, applied to the initial widths), chosen by importance
on the current weights, so fine-tuning between steps changes what goes next. Groups are recognised from
step to step by the name of their first producer.

The model's Parameters change shape at each step: build the optimizer again after ``step()`` (its state
for the old shapes is meaningless), as with Torch-Pruning.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Mapping

import numpy as np

from ..nn.module import Module
from .amount import validate_amount
from .dependency import SOURCES, dependency_graph
from .surgery import apply_plan, bake_pruning, plan

__all__ = ["ChannelPruner"]


class ChannelPruner:
    """Prune ``model`` in place over ``iterative_steps`` calls of ``step()`` (module docstring).

    Parameters are those of ``channel_prune`` (``amount`` is the final ratio, a float); ``round_to``,
    ``max_ratio``, ``min_channels``, ``ignored_layers``, ``layers`` and ``global_pruning`` apply at every step.
    """

    def __init__(self, model: Module, example_input: Any, amount: float, importance: Any = "l1", *,
                 iterative_steps: int = 1, layers: Iterable[str] | None = None, ignored_layers: Iterable[str] = (),
                 round_to: int | None = None, global_pruning: bool = False, max_ratio: float = 1.0,
                 min_channels: int = 1) -> None:
        validate_amount(amount)
        if isinstance(amount, numbers.Integral):
            raise ValueError("ChannelPruner: amount is the final ratio, a float in [0, 1]; channel_prune takes counts")
        if not isinstance(iterative_steps, numbers.Integral) or iterative_steps < 1:
            raise ValueError(f"ChannelPruner: iterative_steps must be a positive int, got {iterative_steps!r}")
        self.model, self.example_input, self.amount = model, example_input, float(amount)
        self.importance, self.iterative_steps, self.current_step = importance, int(iterative_steps), 0
        self.ignored_layers, self.layers = tuple(ignored_layers), None if layers is None else tuple(layers)
        self.options = dict(round_to=round_to, global_pruning=global_pruning, max_ratio=max_ratio,
                            min_channels=min_channels)
        bake_pruning(model)
        dg = dependency_graph(model, example_input, ignored_layers=self.ignored_layers)
        self.initial_channels: dict[str, int] = {g.root: g.channels for g in dg.prunable()}

    def ratio(self, step: int | None = None) -> float:
        """``amount * step / iterative_steps`` (the current step by default)."""
        step = self.current_step if step is None else step
        return self.amount * min(step, self.iterative_steps) / self.iterative_steps

    def step(self) -> Mapping[str, int]:
        """Prune to the next step's ratio, in place; returns ``{group root: channels removed now}``."""
        if self.current_step >= self.iterative_steps:
            raise ValueError(f"ChannelPruner: all {self.iterative_steps} steps are done")
        self.current_step += 1
        target = self.ratio()
        dg = dependency_graph(self.model, self.example_input, ignored_layers=self.ignored_layers)
        groups = {g.root: g for g in dg.prunable() if g.root in self.initial_channels}
        counts = {}
        ratio = min(target, self.options["max_ratio"])            # max_ratio counts from the initial widths
        for root, group in groups.items():
            keep = int(self.initial_channels[root] * (1 - ratio))
            counts[root] = max(0, group.channels - keep)
        options = dict(self.options, max_ratio=1.0)
        chosen = []
        if options.pop("global_pruning"):
            total0 = sum(self.initial_channels[r] for r in groups)
            budget = sum(g.channels for g in groups.values()) - int(total0 * (1 - ratio))
            chosen = plan(dg, max(budget, 0), self.importance, layers=self.layers, global_pruning=True, **options)
        else:
            for root, group in groups.items():
                if self.layers is not None and not any(n in self.layers for n, r in group.members if r in SOURCES):
                    continue
                chosen += plan(dg, counts[root], self.importance, layers=[root], **options)
        apply_plan(self.model, chosen)
        self.model.clear_caches()
        return {g.root: int(len(units)) for g, units in chosen}
