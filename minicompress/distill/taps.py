"""Feature taps: read the output of any module of a model, named by its path, and send a gradient
back into the model at that point -- through the engine's forward-hook seam, without model surgery.

    taps = FeatureTaps(student, ["layer2", "layer3.0"])
    taps.reset();  logits = student(x);  f2, f3 = taps.outputs()      # copies of those modules' outputs
    taps.add_grads([g2, g3]);  student.backward(d_logits)             # d out_2 += g2, d out_3 += g3
    taps.remove()

Each tap is ``module.register_forward_hook(record, backward=inject)``: ``record`` keeps a copy of the
output (a later in-place ReLU must not change it) and returns None, so the forward is unchanged;
``inject(module, grad)`` returns ``grad + g`` for the pending g, which the engine hands to the
module's own ``backward``. So the model's backward computes d (L_logits + L_features) / d parameters
in one pass, with no head/tail split. A tapped module must run exactly once per forward (a module
called twice, such as a BasicBlock's ``relu``, is ambiguous: tap its block instead).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..nn.module import Module, RemovableHandle


def resolve_tap(model: Module, path: str, who: str) -> Module:
    """The module of ``model`` at dotted ``path``; a ValueError listing every path when there is none."""
    modules = dict(model.named_modules())
    if not isinstance(path, str) or path not in modules:
        names = ", ".join(repr(name) for name in modules if name)
        raise ValueError(f"{who}: {type(model).__name__} has no module {path!r} to tap; its modules are: {names}")
    return modules[path]


class FeatureTaps:
    """Forward hooks on ``model``'s modules at ``paths`` (module docstring). Not a Module: it owns no
    parameters and is never saved; ``remove()`` leaves the model exactly as it was."""

    def __init__(self, model: Module, paths: Sequence[str], who: str = "FeatureTaps") -> None:
        self.paths, self.who, self.model_name = list(paths), who, type(model).__name__
        self._recorded: list[list[np.ndarray]] = [[] for _ in self.paths]
        self._pending: list[np.ndarray | None] = [None] * len(self.paths)
        self._handles: list[RemovableHandle] = []
        modules = [resolve_tap(model, path, who) for path in self.paths]
        for i, module in enumerate(modules):
            self._handles.append(module.register_forward_hook(self._recorder(i), backward=self._injector(i)))

    def _recorder(self, i: int):
        def record(module: Module, inputs: tuple, output: np.ndarray) -> None:
            if not isinstance(output, np.ndarray):
                raise ValueError(f"{self.who}: tap {self.paths[i]!r} ({type(module).__name__}) returned a "
                                 f"{type(output).__name__}; a tap reads one array")
            self._recorded[i].append(np.array(output, copy=True))
        return record

    def _injector(self, i: int):
        def inject(module: Module, grad: np.ndarray) -> np.ndarray:
            extra, self._pending[i] = self._pending[i], None
            if extra is None:
                return grad
            if np.shape(grad) != np.shape(extra):
                raise ValueError(f"{self.who}: the feature gradient for tap {self.paths[i]!r} has shape "
                                 f"{np.shape(extra)}, the module's output gradient {np.shape(grad)}")
            return grad + extra.astype(grad.dtype, copy=False)
        return inject

    def reset(self) -> None:
        """Forget the outputs recorded so far (call before each forward whose features you want)."""
        for recorded in self._recorded:
            recorded.clear()

    def outputs(self) -> list[np.ndarray]:
        """Each tapped module's output of the forward since ``reset()``; a ValueError unless each ran once."""
        for path, recorded in zip(self.paths, self._recorded):
            if len(recorded) != 1:
                parent = path.rpartition(".")[0]
                hint = f" (e.g. its parent {parent!r})" if parent else ""
                raise ValueError(f"{self.who}: tapped module {path!r} of {self.model_name} ran {len(recorded)} "
                                 f"times in one forward; tap a module that runs exactly once{hint}")
        outs = [recorded[0] for recorded in self._recorded]
        self.reset()
        return outs

    def add_grads(self, grads: Sequence[np.ndarray | None]) -> None:
        """Gradients to add at the taps during the model's next backward (None: nothing at that tap)."""
        if len(grads) != len(self.paths):
            raise ValueError(f"{self.who}: expected {len(self.paths)} tap gradients, got {len(grads)}")
        self._pending = list(grads)

    def check_consumed(self) -> None:
        """ValueError if a gradient given to ``add_grads`` never reached its module during the backward."""
        stuck = [path for path, g in zip(self.paths, self._pending) if g is not None]
        self._pending = [None] * len(self.paths)
        if stuck:
            raise ValueError(f"{self.who}: the backward of {self.model_name} never reached the tapped module(s) "
                             f"{stuck}: their outputs do not lead to the model's output")

    def remove(self) -> None:
        """Take every hook off the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
