"""Parameter-interpolation distillation: move the student's parameters toward the teacher's.

For a student of the teacher's own architecture, every ``every`` optimizer steps (after the step)::

    theta_s <- lam_k * theta_t + (1 - lam_k) * theta_s        for every parameter tensor      (1)

-- one of the source texts' distillation variants (a generated model learning from a label model by a
linear combination of their parameters). ``lam_k`` follows a schedule over the fit's steps k = 0..K-1:
``'constant'`` (lam), ``'linear'`` (lam * (1 - k / K), fading out so the end of training is the student's
own), or a callable ``schedule(k) -> lam_k``.

It is close to weight averaging (SWA / EMA with the roles swapped): (1) with a constant lam is an
exponential moving average pulling toward a *fixed* point, so between updates the student's gradient
steps are shrunk toward the teacher by the factor (1 - lam) -- a weight decay toward theta_t rather
than toward 0. It needs the same parameter names and shapes in both models, and it is meaningful only
when the two networks' units correspond (the student initialised from, or trained alongside, the
teacher): averaging two independently trained networks mixes unrelated hidden units.

BatchNorm running statistics (``batchnorm=``): ``'interpolate'`` applies (1) to ``running_mean`` and
``running_var`` too (``num_batches_tracked`` is left alone); ``'recompute'`` leaves them to the student's
own training and the caller recomputes them for the final weights (``optim.update_bn``, as the
``Distiller`` does). The optimizer's state (momentum, Adam's moments) is not touched.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..nn.module import Module

SCHEDULES = ("constant", "linear")
BATCHNORM = ("interpolate", "recompute")
STAT_BUFFERS = ("running_mean", "running_var")


def _matched(student: Module, teacher: Module, batchnorm: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(student array, teacher array) of every parameter (and BN statistic): same names and shapes, or an error."""
    s_params, t_params = dict(student.named_parameters()), dict(teacher.named_parameters())
    missing = sorted(set(s_params) ^ set(t_params))
    if missing:
        raise ValueError(f"parameter interpolation needs the teacher's architecture: parameters "
                         f"{missing[:6]}{' ...' if len(missing) > 6 else ''} are in only one of the two models")
    named = [(k, s_params[k].data, t_params[k].data) for k in s_params]
    if batchnorm == "interpolate":
        s_buf, t_buf = dict(student.named_buffers()), dict(teacher.named_buffers())
        named += [(k, s_buf[k], t_buf[k]) for k in s_buf
                  if k.rsplit(".", 1)[-1] in STAT_BUFFERS and s_buf[k] is not None and t_buf.get(k) is not None]
    bad = [(k, s.shape, t.shape) for k, s, t in named if s.shape != t.shape]
    if bad:
        raise ValueError(f"parameter interpolation: shapes differ between student and teacher (name, student, "
                         f"teacher): {bad[:4]}")
    return [(s, t) for _, s, t in named]


class ParameterInterpolation:
    """A ``train.fit`` callback applying eq. (1) after every ``every``-th optimizer step (module docstring).

    ``student``: the model to move (default: the model ``fit`` trains -- pass it when fit trains a wrapper).
    ``total_steps`` is needed by the 'linear' schedule (the ``Distiller`` passes epochs * batches per epoch).
    ``lams_`` records the lam_k applied, one per update.
    """

    def __init__(self, teacher: Module, lam: float = 0.1, every: int = 1, schedule: str | Callable[[int], float] =
                 "constant", batchnorm: str = "interpolate", total_steps: int | None = None,
                 student: Module | None = None) -> None:
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"ParameterInterpolation: lam must be in [0, 1], got {lam!r}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"ParameterInterpolation: every must be an int >= 1, got {every!r}")
        if not callable(schedule) and schedule not in SCHEDULES:
            raise ValueError(f"ParameterInterpolation: schedule must be one of {SCHEDULES} or a callable, got "
                             f"{schedule!r}")
        if schedule == "linear" and not total_steps:
            raise ValueError("ParameterInterpolation: the 'linear' schedule needs total_steps")
        if batchnorm not in BATCHNORM:
            raise ValueError(f"ParameterInterpolation: batchnorm must be one of {BATCHNORM}, got {batchnorm!r}")
        self.teacher, self.lam, self.every, self.schedule = teacher, float(lam), every, schedule
        self.batchnorm, self.total_steps, self.student = batchnorm, total_steps, student
        self.lams_: list[float] = []

    def lam_at(self, step: int) -> float:
        """lam_k of the schedule at optimizer step k."""
        if callable(self.schedule):
            lam = float(self.schedule(step))
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"ParameterInterpolation: schedule({step}) = {lam!r} is outside [0, 1]")
            return lam
        if self.schedule == "linear":
            return self.lam * max(0.0, 1.0 - step / self.total_steps)
        return self.lam

    def on_fit_begin(self, model: Module, optimizer: Any) -> None:
        self._pairs = _matched(self.student if self.student is not None else model, self.teacher, self.batchnorm)

    def on_batch_end(self, step: int, model: Module, optimizer: Any, loss: float) -> None:
        if (step + 1) % self.every:
            return
        lam = self.lam_at(step)
        for s, t in self._pairs:                       # eq. (1), in place; lam = 1 copies t exactly
            s *= np.asarray(1.0 - lam, s.dtype)
            s += np.asarray(lam, s.dtype) * t
        self.lams_.append(lam)
