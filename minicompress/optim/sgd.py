"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's rule)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..nn.module import Parameter
from .kernels import sgd_update
from .optimizer import Optimizer, check_hyperparameter


class SGD(Optimizer):
    """For each parameter p with gradient g (``-g`` when maximize), at step t:

        g   = g + weight_decay * p                                   (if weight_decay != 0)
        b_1 = g;   b_t = momentum * b_{t-1} + (1 - dampening) * g    (if momentum != 0)
        g   = g + momentum * b_t  (nesterov)   or   g = b_t
        p   = p - lr * g

    The momentum buffer starts as a copy of the first gradient (no dampening on step 1), as in
    PyTorch; ``state[p]['momentum_buffer']``. The update runs as one pass of ``kernels.sgd_update``
    over each contiguous parameter (no temporaries), else as its NumPy twin ``_update_numpy``.
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
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        buf = state.get("momentum_buffer")
        first = momentum != 0 and buf is None
        if first:
            buf = state["momentum_buffer"] = np.empty_like(p.data)
        arrays = (p.data, grad) if buf is None else (p.data, grad, buf)
        if p.data.ndim == 0 or not all(a.flags.c_contiguous and a.dtype == p.data.dtype for a in arrays):
            self._update_numpy(p, grad, buf, group, first)
            return
        t = p.data.dtype.type           # the arithmetic of the NumPy form: scalars in the parameter's dtype
        flat = buf.reshape(-1) if buf is not None else np.empty(0, p.data.dtype)
        sgd_update(p.data.reshape(-1), grad.reshape(-1), flat, t(group["lr"]), t(momentum),
                   t(1 - group["dampening"]), bool(group["nesterov"]), first)

    @staticmethod
    def _update_numpy(p: Parameter, grad: np.ndarray, buf: np.ndarray | None, group: dict[str, Any],
                      first: bool) -> None:
        """The update as NumPy array expressions (the kernel's twin; used for 0-d or strided arrays)."""
        momentum = group["momentum"]
        if momentum != 0:
            if first:
                buf[...] = grad
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad
