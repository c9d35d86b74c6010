"""Pruning while training: gradual sparsity, iterative prune-and-fine-tune, lottery-ticket rewinding.

Gradual pruning (Zhu & Gupta 2017, arXiv:1710.01878) raises the sparsity of every target tensor
along a polynomial from ``s_i`` to ``s_f``, pruning every ``dt`` steps from step ``t0`` on::

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3      clamped to [s_i, s_f]     (1)

(``power`` replaces 3; with 3 this is ``torch.ao.pruning.CubicSL.sparsity_compute_fn``). Pruning is
fast at first, while there are many redundant weights, and slows as the target is approached.

The callbacks follow ``minicompress.train.fit``'s protocol (``on_fit_begin``, ``on_after_backward``,
``on_batch_end``, ``on_epoch_end``). Masked weights stay exactly zero through every optimizer step:
the optimizer updates ``weight_orig``, and the layer computes with ``weight_mask * weight_orig``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..nn.module import Module, Parameter
from .functional import global_unstructured, l1_unstructured
from .base import effective_weight, parameters_by_tensor, pruning_hook
from .methods import L1Unstructured

__all__ = ["polynomial_sparsity", "prunable_weights", "prune_to_sparsity", "GradualPruning",
           "snapshot_weights", "rewind_weights", "RewindPoint", "iterative_pruning"]

Targets = Sequence[tuple[Module, str]]


def polynomial_sparsity(step: float, initial_sparsity: float, final_sparsity: float, begin_step: int,
                        frequency: int, n_steps: int, power: float = 3, initially_zero: bool = False) -> float:
    """Target sparsity at ``step`` by (1); 0 before ``begin_step`` if ``initially_zero``."""
    if frequency <= 0 or n_steps <= 0:
        raise ValueError(f"polynomial_sparsity: frequency and n_steps must be positive, got {frequency}, {n_steps}")
    if initially_zero and step < begin_step:
        return 0
    progress = (step - begin_step) / (frequency * n_steps)
    s_t = final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power
    return max(initial_sparsity, min(final_sparsity, s_t))


def prunable_weights(model: Module) -> list[tuple[Module, str]]:
    """``(module, "weight")`` for every module whose weight has >= 2 dims (Linear, Conv; not BatchNorm)."""
    return [(module, "weight") for module in model.modules()
            if (pruning_hook(module, "weight") is not None or isinstance(getattr(module, "weight", None), Parameter))
            and effective_weight(module, "weight").ndim >= 2]


def _zeros(module: Module, name: str) -> int:
    if pruning_hook(module, name) is None:
        return 0
    return int(np.count_nonzero(getattr(module, name + "_mask") == 0))


def prune_to_sparsity(targets: Targets, sparsity: float, scope: str = "layer") -> None:
    """Raise the fraction of masked entries to ``round(sparsity * numel)`` by smallest |weight|.

    ``scope='layer'``: each tensor on its own; ``'global'``: one ranking over all of them. Entries are
    ranked by the current effective weights; nothing already pruned is revived (if a tensor is
    already sparser, it is left alone).
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"prune_to_sparsity: sparsity must be in [0, 1], got {sparsity}")
    if scope == "layer":
        for module, name in targets:
            numel = effective_weight(module, name).size
            extra = max(0, round(sparsity * numel) - _zeros(module, name))
            l1_unstructured(module, name, amount=extra, importance_scores=effective_weight(module, name))
    elif scope == "global":
        numel = sum(effective_weight(m, n).size for m, n in targets)
        extra = max(0, round(sparsity * numel) - sum(_zeros(m, n) for m, n in targets))
        scores = {(m, n): effective_weight(m, n) for m, n in targets}
        global_unstructured(list(targets), L1Unstructured, importance_scores=scores, amount=extra)
    else:
        raise ValueError(f"prune_to_sparsity: scope must be 'layer' or 'global', got {scope!r}")


class GradualPruning:
    """Training callback: prune ``targets`` to sparsity (1) at steps t0, t0 + dt, ..., t0 + n*dt.

    ``targets`` defaults to ``prunable_weights(model)`` (found at ``on_fit_begin``). Pruning happens
    in ``on_batch_end``, i.e. after that step's optimizer update. ``history_`` records
    ``(step, target sparsity)`` for each pruning event.
    """

    def __init__(self, final_sparsity: float, initial_sparsity: float = 0.0, begin_step: int = 0,
                 frequency: int = 100, n_steps: int = 10, power: float = 3, scope: str = "layer",
                 targets: Targets | None = None) -> None:
        self._check_range(initial_sparsity, final_sparsity)
        polynomial_sparsity(0, 0, 0, 0, frequency, n_steps)  # validates frequency, n_steps
        self.final_sparsity, self.initial_sparsity = final_sparsity, initial_sparsity
        self.begin_step, self.frequency, self.n_steps, self.power = begin_step, frequency, n_steps, power
        self.scope, self.targets = scope, targets
        self.history_: list[tuple[int, float]] = []

    @staticmethod
    def _check_range(initial: float, final: float) -> None:
        if not 0.0 <= initial <= final <= 1.0:
            raise ValueError(f"GradualPruning: need 0 <= initial_sparsity <= final_sparsity <= 1, got "
                             f"{initial}, {final}")

    def prune(self, target: float) -> None:
        """One pruning event: raise every target's sparsity to ``target`` (by smallest |weight|)."""
        prune_to_sparsity(self.targets, target, self.scope)

    def sparsity_at(self, step: int) -> float:
        return polynomial_sparsity(step, self.initial_sparsity, self.final_sparsity, self.begin_step,
                                   self.frequency, self.n_steps, self.power)

    def on_fit_begin(self, model: Module, optimizer: Any) -> None:
        if self.targets is None:
            self.targets = prunable_weights(model)

    def on_batch_end(self, step: int, model: Module, optimizer: Any, loss: float) -> None:
        since = step - self.begin_step
        if since < 0 or since % self.frequency or since > self.n_steps * self.frequency:
            return
        target = self.sparsity_at(step)
        self.prune(target)
        self.history_.append((step, target))


def snapshot_weights(model: Module) -> dict[str, np.ndarray]:
    """Copies of every parameter's values, pruned ones under their plain name (``0.weight``, not ``_orig``)."""
    return {key: param.data.copy() for key, _, _, param in parameters_by_tensor(model)}


def rewind_weights(model: Module, snapshot: dict[str, np.ndarray]) -> None:
    """Reset every parameter to ``snapshot`` (pruned ones: their ``_orig``), keeping the masks.

    The lottery-ticket step (Frankle & Carbin 2019; "late rewinding": Frankle et al. 2020): the
    surviving weights restart from their values at an earlier step, the pruned ones stay zero.
    """
    current = snapshot_weights(model)
    if set(current) != set(snapshot) or any(current[k].shape != snapshot[k].shape for k in current):
        raise ValueError("rewind_weights: the snapshot does not match the model's parameters "
                         f"(missing {sorted(set(current) - set(snapshot))}, "
                         f"unexpected {sorted(set(snapshot) - set(current))})")
    for key, _, _, param in parameters_by_tensor(model):
        param.data[...] = snapshot[key]
    for module in model.modules():  # pruned `weight` reads mask * orig of the rewound values now
        module.refresh_parametrizations()


class RewindPoint:
    """Training callback that keeps ``snapshot_weights`` after ``step`` optimizer updates (0 = at start)."""

    def __init__(self, step: int = 0) -> None:
        self.step = step
        self.snapshot_: dict[str, np.ndarray] | None = None

    def on_fit_begin(self, model: Module, optimizer: Any) -> None:
        if self.step == 0:
            self.snapshot_ = snapshot_weights(model)

    def on_batch_end(self, step: int, model: Module, optimizer: Any, loss: float) -> None:
        if step + 1 == self.step:
            self.snapshot_ = snapshot_weights(model)


def iterative_pruning(model: Module, fine_tune: Callable[[Module, int], Any], rounds: int, amount: float,
                      targets: Targets | None = None, scope: str = "global",
                      rewind_to: dict[str, np.ndarray] | None = None) -> list[float]:
    """Han et al. (2015) prune -> fine-tune, ``rounds`` times; with ``rewind_to``, lottery tickets.

    Each round prunes ``amount`` of the still-unpruned weights of ``targets`` (default all
    ``prunable_weights``) by smallest |weight| (``scope`` 'global' or 'layer'), rewinds the survivors
    to ``rewind_to`` (a ``snapshot_weights``) if given, then calls ``fine_tune(model, round)`` (e.g.
    ``lambda m, r: fit(m, loss, SGD(m.parameters(), 0.01), loader, epochs=2)``). Returns the weight
    sparsity after each round.
    """
    targets = prunable_weights(model) if targets is None else list(targets)
    numel = sum(effective_weight(m, n).size for m, n in targets)
    sparsities = []
    for r in range(rounds):
        zeros = sum(_zeros(m, n) for m, n in targets)
        prune_to_sparsity(targets, (zeros + amount * (numel - zeros)) / numel, scope)
        if rewind_to is not None:
            rewind_weights(model, rewind_to)
        fine_tune(model, r)
        sparsities.append(sum(_zeros(m, n) for m, n in targets) / numel)
    return sparsities
