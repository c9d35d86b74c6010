"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's rule)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..nn.module import Parameter
from .optimizer import Optimizer, check_hyperparameter


class SGD(Optimizer):
    """For each parameter p with gradient g (``-g`` when maximize), at step t:

        g   = g + weight_decay * p                                   (if weight_decay != 0)
        b_1 = g;   b_t = momentum * b_{t-1} + (1 - dampening) * g    (if momentum != 0)
        g   = g + momentum * b_t  (nesterov)   or   g = b_t
        p   = p - lr * g

    The momentum buffer starts as a copy of the first gradient (no dampening on step 1), as in
    PyTorch; ``state[p]['momentum_buffer']``.
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3,
                 momentum: float = 0, dampening: float = 0, weight_decay: float = 0,
                 nesterov: bool = False, *, maximize: bool = False) -> None:
        check_hyperparameter("SGD", lr, "learning rate", lr >= 0)
        check_hyperparameter("SGD", momentum, "momentum value", momentum >= 0)
        check_hyperparameter("SGD", weight_decay, "weight_decay value", weight_decay >= 0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, p: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(grad, dtype=p.data.dtype)   # an array even if 0-d
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad
