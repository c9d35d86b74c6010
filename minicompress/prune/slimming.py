"""Network slimming (Liu et al. 2017): sparsify BatchNorm scales during training, then cut channels.

Training adds ``strength * sum |gamma|`` over every BatchNorm scale to the loss; its subgradient
``strength * sign(gamma)`` is added to each ``gamma.grad`` after backward, before the optimizer step.
Channels whose ``|gamma|`` is driven towards zero contribute little and are removed with
``channel_prune(..., importance='bn_scale')`` (usually with ``global_pruning=True``: one
threshold for all layers), followed by a short fine-tune.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.kinds import layer_kind
from ..nn.module import Module
from .base import effective_weight, pruning_hook

__all__ = ["BNScalePenalty", "bn_scale_l1"]

def _scaled_batchnorms(model: Module) -> list[Module]:
    return [m for m in model.modules() if layer_kind(m) == "batchnorm"
            and (m.weight is not None or pruning_hook(m, "weight") is not None)]


def bn_scale_l1(model: Module) -> float:
    """sum |gamma| over every BatchNorm scale of ``model`` (the penalty without its strength)."""
    return float(sum(np.abs(effective_weight(m, "weight")).sum() for m in _scaled_batchnorms(model)))


class BNScalePenalty:
    """Training callback: ``gamma.grad += strength * sign(gamma)`` for every BatchNorm (``on_after_backward``)."""

    def __init__(self, strength: float = 1e-4) -> None:
        if strength < 0:
            raise ValueError(f"BNScalePenalty: strength must be >= 0, got {strength}")
        self.strength = strength

    def on_after_backward(self, step: int, model: Module, optimizer: Any) -> None:
        for bn in _scaled_batchnorms(model):
            gamma = effective_weight(bn, "weight")
            bn.accumulate_grad("weight", (self.strength * np.sign(gamma)).astype(gamma.dtype))
