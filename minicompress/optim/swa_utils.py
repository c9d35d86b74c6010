"""``update_bn``: recompute BatchNorm running statistics for the current weights, as
``torch.optim.swa_utils.update_bn``.

After weights were averaged or interpolated (SWA, parameter-interpolation distillation) the running
statistics no longer describe the activations the weights produce. ``update_bn`` resets every
BatchNorm's ``running_mean`` / ``running_var`` / ``num_batches_tracked``, sets its momentum to None
(a cumulative average over batches: m = 1 / num_batches_tracked), runs one pass over the data in
train mode without gradients, and restores each momentum and the model's train/eval mode. Other
layers that behave differently in training (Dropout) run in training mode during the pass, as in
PyTorch.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..nn.grad_mode import no_grad
from ..nn.kinds import layer_kind
from ..nn.module import Module

__all__ = ["update_bn"]


def update_bn(loader: Iterable[Any], model: Module) -> None:
    """One pass over ``loader`` (batches ``x`` or ``(x, y, ...)``, the first element fed to ``model``)."""
    momenta = {m: m.momentum for m in model.modules() if layer_kind(m) == "batchnorm" and m.track_running_stats}
    if not momenta:
        return
    was_training = model.training
    for m in momenta:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with no_grad():
            for batch in loader:
                model(np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch))
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.train(was_training)
