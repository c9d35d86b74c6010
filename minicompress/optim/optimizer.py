"""The Optimizer base class: parameter groups, per-parameter state, ``zero_grad``, state dicts.

As in PyTorch, ``params`` is an iterable of Parameters or of parameter-group dicts
(``{'params': [...], 'lr': 0.1}``); options missing from a group take the optimizer's defaults.
``state[p]`` holds each parameter's buffers (momentum, moments, step count). ``step()`` updates
``p.data`` *in place* (pruning and other code keep references to the arrays) and skips parameters
whose ``grad`` is None.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Callable, Iterable

import numpy as np

from ..nn.module import Parameter


class Optimizer:
    """Base class: subclasses implement ``_update(p, grad, state, group)`` for one parameter."""

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError(f"{type(self).__name__}: params should be an iterable of Parameters or "
                            f"dicts, got a single {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group; its options default to the optimizer's, its params must be new Parameters."""
        if not isinstance(param_group, dict):
            raise TypeError(f"{type(self).__name__}: a param group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__} can only optimize Parameters (it updates "
                                f"p.data in place from p.grad), got {type(p).__name__}")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{type(self).__name__}: some parameters appear in more than one parameter group")
        group = {**self.defaults, **param_group, "params": params}
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every gradient: ``grad = None`` (default) or fill it with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update every parameter that has a gradient; ``closure`` (optional) recomputes the loss first."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}: gradient of shape {p.grad.shape} for a "
                                     f"parameter of shape {p.data.shape}")
                grad = np.asarray(p.grad, dtype=p.data.dtype)
                self._update(p, -grad if group.get("maximize") else grad, self.state[p], group)
        return loss

    def _update(self, p: Parameter, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: {'state': {index: {...}}, 'param_groups': [{..., 'params': [index, ...]}]}.

        Parameters are numbered in order over the groups; arrays are copies.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: copy.deepcopy(s) for p, s in self.state.items() if s and id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore group options and per-parameter state (arrays cast to each parameter's dtype)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict has "
                             f"{len(saved_groups)} parameter groups, the optimizer {len(self.param_groups)}")
        sizes = [(len(g["params"]), len(s["params"])) for g, s in zip(self.param_groups, saved_groups)]
        if any(mine != theirs for mine, theirs in sizes):
            raise ValueError(f"{type(self).__name__}.load_state_dict: parameter group sizes differ "
                             f"(optimizer, state dict): {sizes}")
        by_index = {}
        for group, saved in zip(self.param_groups, saved_groups):
            by_index.update(zip(saved["params"], group["params"]))
        self.state = defaultdict(dict)
        for i, saved_state in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {key: self._cast_state(key, value, p) for key, value in saved_state.items()}
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    @staticmethod
    def _cast_state(key: str, value: Any, p: Parameter) -> Any:
        if isinstance(value, np.ndarray):
            if value.shape != p.data.shape:
                raise ValueError(f"Optimizer.load_state_dict: state {key!r} has shape {value.shape}, "
                                 f"its parameter {p.data.shape}")
            return value.astype(p.data.dtype, copy=True)
        return copy.deepcopy(value)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


def check_hyperparameter(name: str, value: float, what: str, ok: bool) -> None:
    """Raise ``ValueError('Invalid <what>: <value>')`` (PyTorch's wording) unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}: invalid {what}: {value}")
