"""The pieces of offline distillation: the teacher's outputs computed once, the Module ``train.fit``
trains (sample indices in, student and cached teacher outputs out) and its objective

    L = kd(s, t, y) + sum_i w_i * feature_loss_i(f_s_i, f_t_i)                                  (1)

where f_s_i is the output of the student module at path ``student_layers[i]`` and f_t_i that of the
teacher at ``teacher_layers[i]``, both read by ``taps.FeatureTaps`` (forward hooks). An int layer
is a Sequential's prefix length, as ``student[:k]``: the output of child ``k - 1``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..nn.containers import ModuleList, Sequential
from ..nn.grad_mode import no_grad
from ..nn.module import Module
from .losses import KDLoss
from .taps import FeatureTaps

FeaturePair = tuple[Module, str, str, float]      # (loss, student path, teacher path, weight)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def layer_path(model: Module, layer: int | str, who: str) -> str:
    """A module path from a path, or from a Sequential prefix length k (the output of child k - 1)."""
    if isinstance(layer, str):
        return layer
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"{who}: a layer is a module path (str) or a Sequential prefix length (int), got {layer!r}")
    if not isinstance(model, Sequential):
        raise TypeError(f"{who}: an int layer ({layer}) taps model[:{layer}] of a Sequential; "
                        f"{type(model).__name__} needs a module path (str), e.g. 'layer2'")
    if not 1 <= layer < len(model):
        raise ValueError(f"{who}: layer {layer} must be in [1, {len(model) - 1}] for a Sequential of {len(model)}")
    return str(layer - 1)


def feature_pairs(losses: Any, student_layers: Any, teacher_layers: Any, weights: Any,
                  student: Module, teacher: Module) -> list[FeaturePair]:
    """One (loss, student path, teacher path, weight) per feature loss; lengths must agree."""
    if losses is None:
        return []
    losses, s_layers, t_layers = _as_list(losses), _as_list(student_layers), _as_list(teacher_layers)
    weights = _as_list(weights) if isinstance(weights, (list, tuple)) else [weights] * len(losses)
    if not len(losses) == len(s_layers) == len(t_layers) == len(weights):
        raise ValueError(f"Distiller: {len(losses)} feature losses need as many student layers, teacher layers "
                         f"and weights, got {len(s_layers)}, {len(t_layers)} and {len(weights)}")
    return [(loss, layer_path(student, s, "Distiller: student_layer"), layer_path(teacher, t, "Distiller: "
             "teacher_layer"), float(w)) for loss, s, t, w in zip(losses, s_layers, t_layers, weights)]


def teacher_outputs(teacher: Module, x: np.ndarray, paths: Sequence[str],
                    batch_size: int = 256) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits (N, C), [feature at each path (N, ...)]) of the teacher in eval mode, without caches;
    the teacher's mode is restored and its hooks removed afterwards."""
    taps = FeatureTaps(teacher, paths, who="Distiller (teacher)")
    was_training = teacher.training
    teacher.eval()
    logits, features = [], []
    try:
        with no_grad():
            for i in range(0, len(x), batch_size):
                taps.reset()
                logits.append(teacher(x[i:i + batch_size]))
                features.append(taps.outputs())
    finally:
        taps.remove()
        teacher.train(was_training)
    return np.concatenate(logits), [np.concatenate(f) for f in zip(*features)] if paths else []


class CachedTeacherStudent(Module):
    """The Module fit trains offline: sample indices in; out ``(s, t, f_s_1..f_s_k, f_t_1..f_t_k)``,
    the student's logits and tapped features beside the teacher's cached ones.

    ``backward`` takes one gradient per output (the teacher's are constants: None); the feature
    gradients go to the taps, which add them where the student computed each feature while
    ``student.backward(d s)`` runs.
    """

    def __init__(self, student: Module, x: np.ndarray, teacher_logits: np.ndarray,
                 feature_losses: Sequence[Module] = (), taps: FeatureTaps | None = None,
                 teacher_features: Sequence[np.ndarray] = ()) -> None:
        super().__init__()
        self.student = student
        self.feature_losses = ModuleList(feature_losses)    # children: a hint regressor is trained too
        self._x, self._teacher_logits, self._teacher_features = x, teacher_logits, list(teacher_features)
        self._taps = taps

    def forward(self, idx: np.ndarray) -> tuple[np.ndarray, ...]:
        xb, teacher_logits = self._x[idx], self._teacher_logits[idx]
        if self._taps is None:
            return self.student(xb), teacher_logits
        self._taps.reset()
        logits = self.student(xb)
        return (logits, teacher_logits, *self._taps.outputs(), *(f[idx] for f in self._teacher_features))

    def backward(self, grad_outputs: tuple) -> np.ndarray:
        if self._taps is None:
            return self.student.backward(grad_outputs[0])
        k = len(self._teacher_features)
        self._taps.add_grads(grad_outputs[2:2 + k])
        grad = self.student.backward(grad_outputs[0])
        self._taps.check_consumed()
        return grad


class OfflineObjective:
    """Eq. (1) of the wrapper's outputs; ``backward()`` gives one gradient per output."""

    def __init__(self, model: CachedTeacherStudent, kd: KDLoss, weights: Sequence[float]) -> None:
        self.feature_losses, self.kd, self.weights = list(model.feature_losses), kd, list(weights)

    def __call__(self, outputs: tuple, target: np.ndarray) -> float:
        value = self.kd(outputs[0], outputs[1], target)
        k = len(self.feature_losses)
        for loss, w, f_s, f_t in zip(self.feature_losses, self.weights, outputs[2:2 + k], outputs[2 + k:]):
            value += w * loss(f_s, f_t)
        return value

    def backward(self) -> tuple:
        """(d s, None, d f_s_1, ..., d f_s_k, None x k)."""
        grads = [loss.backward() for loss in self.feature_losses]
        grads = [g * g.dtype.type(w) for g, w in zip(grads, self.weights)]
        return (self.kd.backward(), None, *grads, *([None] * len(grads)))
