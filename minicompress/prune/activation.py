"""Activation-based channel importance: mean activation and APoZ, measured with forward hooks.

For every measured module, over all calibration batches, with ``y`` its output (N, C, ...) and the
channel on ``channel_axis`` (1: Linear (N, C), Conv (N, C, H, W)); sums run over every sample and
every other position of all batches together (not a mean of per-batch means)::

    mean_c = sum(y[:, c, ...]) / count_c                                      (1)
    APoZ_c = #{y[:, c, ...] == 0} / count_c     (Hu et al. 2016; -0.0 counts as 0)   (2)
    score  = mean_c             criterion='mean'
    score  = 1 - APoZ_c         criterion='apoz'  (higher = more important, as every importance here)

Measured modules (``layers=None``): every activation module -- ReLU, ReLU6, LeakyReLU, PReLU,
Hardtanh, Hardswish, SiLU, GELU -- so the statistic is that of the activation following a
Linear/Conv; in ``Sequential(conv, bn, relu, ...)`` the scores of ``'2'`` rank the channels of
``'0'``. Any other named modules can be given in ``layers``. The model runs in eval mode under
``no_grad`` through its public seam ``register_forward_hook``; afterwards every hook is removed and
every module's own train/eval mode restored, also when a batch raises.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..nn.grad_mode import no_grad
from ..nn.layers import GELU, Hardswish, Hardtanh, LeakyReLU, PReLU, ReLU, SiLU
from ..nn.module import Module

__all__ = ["ACTIVATIONS", "activation_importance"]

ACTIVATIONS: tuple[type, ...] = (ReLU, LeakyReLU, PReLU, Hardtanh, Hardswish, SiLU, GELU)  # ReLU6 is a Hardtanh
CRITERIA = ("apoz", "mean")


def activation_importance(model: Module, batches: Iterable[Any], layers: Sequence[str] | None = None,
                          criterion: str = "apoz", channel_axis: int = 1) -> dict[str, np.ndarray]:
    """``{module name: score (C,)}`` by (1)-(2) over ``batches`` (arrays, or ``(x, y)`` pairs as a
    ``DataLoader`` yields; only ``x`` is fed to ``model``)."""
    if criterion not in CRITERIA:
        raise ValueError(f"activation_importance: criterion must be one of {CRITERIA}, got {criterion!r}")
    modules = dict(model.named_modules())
    if layers is None:
        names = [n for n, m in modules.items() if isinstance(m, ACTIVATIONS)]
        if not names:
            raise ValueError(f"activation_importance: {model._name()} has no activation module "
                             f"({', '.join(t.__name__ for t in ACTIVATIONS)}); name the modules in layers=")
    else:
        names = list(layers)
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"activation_importance: no module named {missing} in the model "
                             f"(modules: {[n for n in modules if n]})")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def record(name: str):
        def hook(module: Module, inputs: tuple, output: Any) -> None:
            y = _channels_first(name, output, channel_axis)              # (C, rest)
            stat = (y == 0).sum(axis=1) if criterion == "apoz" else y.sum(axis=1, dtype=np.float64)
            sums[name] = sums.get(name, 0) + stat
            counts[name] = counts.get(name, 0) + y.shape[1]
        return hook

    modes = [(m, m.training) for m in model.modules()]
    handles = [modules[n].register_forward_hook(record(n)) for n in names]
    try:
        model.eval()
        with no_grad():
            seen = 0
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                seen += 1
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:                                    # pre-order: parents first
            module.train(training)
    if not seen:
        raise ValueError("activation_importance: batches is empty; give at least one calibration batch")
    unseen = [n for n in names if n not in counts]
    if unseen:
        raise ValueError(f"activation_importance: modules {unseen} were never called by the forward")
    scores = {n: sums[n] / counts[n] for n in names}                     # (1) or APoZ (2), float64
    return {n: (1.0 - s if criterion == "apoz" else s) for n, s in scores.items()}


def _channels_first(name: str, output: Any, axis: int) -> np.ndarray:
    """``output`` as (C, everything else)."""
    if not isinstance(output, np.ndarray) or output.ndim < 2:
        raise ValueError(f"activation_importance: module {name!r} returned "
                         f"{getattr(output, 'shape', type(output).__name__)}, expected an array (N, C, ...)")
    if not -output.ndim <= axis < output.ndim or axis % output.ndim == 0:
        raise ValueError(f"activation_importance: channel_axis={axis} is not a channel axis of module "
                         f"{name!r}'s output of shape {output.shape} (axis 0 is the batch)")
    return np.moveaxis(output, axis, 0).reshape(output.shape[axis], -1)
