"""Adam and AdamW, with PyTorch's order of operations (torch/optim/adam.py, single-tensor path)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..nn.module import Parameter
from .optimizer import Optimizer, check_hyperparameter


def lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """start += weight * (end - start), in place, with PyTorch's two-sided formula for accuracy:
    ``start + w * (end - start)`` if |w| < 0.5, else ``end - (end - start) * (1 - w)``."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - start.dtype.type(weight))


class Adam(Optimizer):
    """For each parameter p with gradient g (``-g`` when maximize), at step t = 1, 2, ...:

        g   = g + weight_decay * p                  (Adam: L2 penalty folded into the gradient)
        p   = p * (1 - lr * weight_decay)           (AdamW instead: decoupled weight decay)
        m   = lerp(m, g, 1 - beta1)                 (= beta1 * m + (1 - beta1) * g)
        v   = beta2 * v + (1 - beta2) * g * g
        v^  = max(v^, v)                            (amsgrad only; v^ replaces v below)
        bias_correction1 = 1 - beta1^t,   bias_correction2 = 1 - beta2^t
        denom = sqrt(v) / sqrt(bias_correction2) + eps
        p   = p - (lr / bias_correction1) * m / denom

    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (v^).
    """

    _decoupled_weight_decay = False

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 amsgrad: bool = False, *, maximize: bool = False) -> None:
        name = type(self).__name__
        check_hyperparameter(name, lr, "learning rate", lr >= 0)
        check_hyperparameter(name, eps, "epsilon value", eps >= 0)
        check_hyperparameter(name, betas[0], "beta parameter at index 0", 0 <= betas[0] < 1)
        check_hyperparameter(name, betas[1], "beta parameter at index 1", 0 <= betas[1] < 1)
        check_hyperparameter(name, weight_decay, "weight_decay value", weight_decay >= 0)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, p: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = state["step"]

        if weight_decay != 0:
            if self._decoupled_weight_decay:
                p.data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * p.data

        lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad

        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        p.data += -step_size * (exp_avg / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay`` before
    the Adam step instead of adding ``weight_decay * p`` to the gradient. Default weight_decay 1e-2."""

    _decoupled_weight_decay = True

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
