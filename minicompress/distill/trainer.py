"""``Distiller``: train students from a teacher (offline), from each other (online, mutual learning)
or from their own previous generation (self-distillation, born-again networks).

Every mode runs the engine's ``train.fit`` loop (optimizers, schedulers, callbacks, progress bar):
what fit trains is a thin wrapper Module around the student(s), and its loss is a small objective
that knows where the soft targets of the current batch come from.

- offline: the teacher runs once, in eval mode without caches, over the whole training set; its
  logits (and, for feature losses, the outputs of the tapped teacher modules) are cached. Batches are
  drawn as sample *indices*, so the wrapper feeds the student ``x[idx]`` and the objective reads the
  teacher's outputs at the same ``idx``: an epoch costs only the student. The teacher is never
  updated. Features are tapped by module path (``taps.FeatureTaps``: forward hooks), so teacher and
  student may be any architectures (a ResNet teacher, a MobileNetV2 or ViT student).
- mutual (DML, Zhang et al., 2018): K >= 2 students train in the same loop; student k minimises
  ``mean_{l != k} kd(s_k, s_l, y)``, the peers' current logits acting as constant soft targets
  (all students updated simultaneously from the same batch).
- self (born-again networks, Furlanello et al., 2018): generation 0 is ``teacher`` if given, else
  a fresh model trained on labels; generation k + 1, a fresh model of the same kind, is distilled
  offline from generation k.
- interpolate (parameter interpolation, ``interpolation.py``): a student of the teacher's architecture
  trains on labels (cross-entropy; with ``loss`` given, offline KD with it) and after every
  ``interpolate_every`` steps moves toward the teacher, theta_s <- lam * theta_t + (1 - lam) * theta_s,
  lam on ``lam_schedule``; BatchNorm statistics interpolated too, or (``batchnorm='recompute'``)
  recomputed for the final weights with ``optim.update_bn``.

Conventions follow scikit-learn: hyper-parameters in ``__init__`` (stored as given, no logic),
``fit`` returns ``self``, learned state ends with ``_``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..data.checks import check_labels
from ..data.loader import DataLoader
from ..nn.losses import CrossEntropyLoss
from ..nn.module import Module
from ..optim import Adam, update_bn
from ..train import fit as train_fit
from ..train import predict
from .interpolation import ParameterInterpolation
from .losses import KDLoss, kd_loss_backward, kd_loss_forward
from .offline import CachedTeacherStudent, OfflineObjective, feature_pairs, teacher_outputs
from .taps import FeatureTaps

MODES = ("offline", "mutual", "self", "interpolate")


# ---------------------------------------------------------------------------- mutual learning
class _Cohort(Module):
    """K students side by side: x -> stacked logits (K, N, C); backward splits the gradient."""

    def __init__(self, students: Sequence[Module]) -> None:
        super().__init__()
        for k, student in enumerate(students):
            self.add_module(str(k), student)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.stack([student(x) for student in self.children()])

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return sum(student.backward(g) for student, g in zip(self.children(), grad_output))


class _MutualObjective:
    """loss = sum_k mean_{l != k} kd(s_k, s_l, y): each peer's logits are constants for student k.

    Also tallies each student's own loss and accuracy for the history.
    """

    def __init__(self, kd: KDLoss, num_students: int) -> None:
        self.kd, self.num_students = kd, num_students
        self.tally = np.zeros((num_students, 3))            # (sum loss * n, correct, n) per student
        self.epochs: list[tuple[list, list]] = []          # per epoch: (losses, accuracies) per student
        self._kd_caches: list = []
        self._logits_like: np.ndarray | None = None

    def __call__(self, logits: np.ndarray, target: np.ndarray) -> float:
        kd, k_all = self.kd, self.num_students
        self._kd_caches, self._logits_like, total = [], logits, 0.0
        for k in range(k_all):
            own = 0.0
            for peer in range(k_all):
                if peer != k:
                    value, cache = kd_loss_forward(logits[k], logits[peer], target, **kd.kd_args())
                    own += value / (k_all - 1)
                    self._kd_caches.append((k, cache))
            self.tally[k] += (own * len(target), (logits[k].argmax(axis=1) == target).sum(), len(target))
            total += own
        return total

    def backward(self) -> np.ndarray:
        grads = np.zeros_like(self._logits_like)                # (K, N, C)
        for k, cache in self._kd_caches:
            grads[k] += kd_loss_backward(1.0 / (self.num_students - 1), cache)
        return grads

    def on_epoch_end(self, epoch: int, model: Module, optimizer: Any, logs: dict) -> None:
        """A fit callback: move this epoch's per-student loss and accuracy into ``self.epochs``."""
        n = np.maximum(self.tally[:, 2], 1)
        self.epochs.append((list(self.tally[:, 0] / n), list(self.tally[:, 1] / n)))
        self.tally[:] = 0

    def on_fit_begin(self, model: Module, optimizer: Any) -> None:
        self.epochs, self.tally[:] = [], 0


# ---------------------------------------------------------------------------- the trainer
class Distiller:
    """Knowledge-distillation trainer (offline, mutual, or self-distillation); see the module docstring.

    Parameters
    ----------
    loss : KDLoss or None             the response loss; None means ``KDLoss()`` (T = 4, alpha = 0.9), except
        in 'interpolate' mode, where None means labels only (cross-entropy).
    mode : 'offline' | 'mutual' | 'self' | 'interpolate'
    optimizer : callable(params) -> Optimizer, or None for ``Adam(params, lr=1e-3)``.
    scheduler : callable(optimizer) -> scheduler (stepped once per epoch), or None.
    epochs, batch_size : training length and mini-batch size (per model, per generation).
    generations : number of distilled generations in 'self' mode.
    feature_loss : HintLoss / ATLoss / RKDLoss, or a list of them (offline only), each applied between the
        output of the student module at ``student_layer`` and the teacher's at ``teacher_layer`` (module
        paths such as ``'layer2'`` or ``'features.6'``, or ints k for a Sequential's ``model[:k]``; lists
        when there are several losses), weighted by ``feature_weight`` (a float or one per loss).
    lam, lam_schedule, interpolate_every, batchnorm : 'interpolate' mode (``ParameterInterpolation``): lam in
        [0, 1], 'constant' | 'linear' | callable(step) -> lam, every how many steps, 'interpolate' | 'recompute'.
    callbacks, quiet, desc : passed to ``train.fit`` (callbacks receive the wrapper Module being trained;
        ``desc`` names the run in the progress bar).
    rng : generator or seed for shuffling, or None for the global generator.

    Learned attributes
    ------------------
    student_ : the final student (offline: the student; mutual: the first; self: the last generation).
    students_ : every model trained, in order (mutual: the cohort; self: the generations).
    history_ : one ``train.fit`` history per training run (mutual adds 'student_loss' and
        'student_accuracy', per epoch one value per student).
    teacher_logits_ : (N, C) the cached teacher logits of the last offline run (None in mutual mode).
    interpolation_ : the ``ParameterInterpolation`` callback of an 'interpolate' run (its ``lams_``).
    """

    def __init__(self, loss: KDLoss | None = None, mode: str = "offline",
                 optimizer: Callable[[Iterable], Any] | None = None, scheduler: Callable[[Any], Any] | None = None,
                 epochs: int = 10, batch_size: int = 64, generations: int = 2,
                 feature_loss: Module | Sequence[Module] | None = None, feature_weight: Any = 1.0,
                 student_layer: Any = None, teacher_layer: Any = None,
                 lam: float = 0.1, lam_schedule: Any = "constant", interpolate_every: int = 1,
                 batchnorm: str = "interpolate",
                 callbacks: Iterable[Any] = (), quiet: bool = False, rng: Any = None,
                 desc: str | None = None) -> None:
        self.loss, self.mode, self.optimizer, self.scheduler = loss, mode, optimizer, scheduler
        self.epochs, self.batch_size, self.generations = epochs, batch_size, generations
        self.feature_loss, self.feature_weight = feature_loss, feature_weight
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.lam, self.lam_schedule, self.interpolate_every, self.batchnorm = lam, lam_schedule, interpolate_every, batchnorm
        self.callbacks, self.quiet, self.rng, self.desc = callbacks, quiet, rng, desc

    # ------------------------------------------------------------------ public
    def fit(self, student: Any, x: np.ndarray, y: np.ndarray, teacher: Module | None = None) -> "Distiller":
        """Train and return ``self``.

        offline: ``student`` a Module, ``teacher`` required. mutual: ``student`` a list of >= 2
        Modules, no teacher. self: ``student`` a zero-argument factory returning a fresh model;
        ``teacher`` (optional) is generation 0.
        """
        x, y = np.asarray(x), np.asarray(y)
        self._check_fit_args(student, x, y, teacher)
        self.history_: list[dict] = []
        self.teacher_logits_ = None
        if self.mode == "offline":
            self.students_ = [self._distill(student, teacher, x, y, features=self.feature_loss is not None)]
        elif self.mode == "mutual":
            self.students_ = list(student)
            self._mutual(self.students_, x, y)
        elif self.mode == "interpolate":
            self.students_ = [self._interpolate(student, teacher, x, y)]
        else:
            self.students_ = []
            if teacher is None:
                teacher = student()
                self._fit_labels(teacher, x, y)
                self.students_.append(teacher)
            for _ in range(self.generations):
                teacher = self._distill(student(), teacher, x, y, features=False)
                self.students_.append(teacher)
        self.student_ = self.students_[-1] if self.mode == "self" else self.students_[0]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels from ``student_``."""
        return predict(self.student_, np.asarray(x)).argmax(axis=1)

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of ``student_`` on ``(x, y)``."""
        return float((self.predict(x) == np.asarray(y)).mean())

    # ------------------------------------------------------------------ modes
    def _distill(self, student: Module, teacher: Module, x: np.ndarray, y: np.ndarray,
                 features: bool, extra_callbacks: tuple = ()) -> Module:
        """One offline run: cache the teacher's outputs once, then fit the student on indices."""
        kd = self.loss if self.loss is not None else KDLoss()
        pairs = feature_pairs(self.feature_loss, self.student_layer, self.teacher_layer, self.feature_weight,
                              student, teacher) if features else []
        logits, teacher_features = teacher_outputs(teacher, x, [t for _, _, t, _ in pairs])   # its only forward
        self._check_classes(student, x, logits)
        self.teacher_logits_ = logits
        taps = FeatureTaps(student, [s for _, s, _, _ in pairs], who="Distiller (student)") if pairs else None
        try:
            model = CachedTeacherStudent(student, x, logits, [loss for loss, _, _, _ in pairs], taps,
                                         teacher_features)
            indices = DataLoader(np.arange(len(x)), y, self.batch_size, shuffle=True, rng=self.rng)
            self._run(model, OfflineObjective(model, kd, [w for _, _, _, w in pairs]), indices, extra_callbacks)
        finally:
            if taps is not None:
                taps.remove()
        return student

    def _interpolate(self, student: Module, teacher: Module, x: np.ndarray, y: np.ndarray) -> Module:
        """Labels (or offline KD with ``loss``) + eq. (1) of ``interpolation.py`` after every k-th step."""
        loader = DataLoader(x, y, self.batch_size, shuffle=True, rng=self.rng)
        self.interpolation_ = ParameterInterpolation(teacher, self.lam, self.interpolate_every, self.lam_schedule,
                                                     self.batchnorm, total_steps=self.epochs * len(loader),
                                                     student=student)
        if self.loss is None:
            self._run(student, CrossEntropyLoss(), loader, (self.interpolation_,))
        else:
            self._distill(student, teacher, x, y, features=False, extra_callbacks=(self.interpolation_,))
        if self.batchnorm == "recompute":
            update_bn(DataLoader(x, y, self.batch_size), student)
        return student

    def _mutual(self, students: list[Module], x: np.ndarray, y: np.ndarray) -> None:
        kd = self.loss if self.loss is not None else KDLoss()
        classes = {predict(s, x[:1]).shape[1] for s in students}
        if len(classes) != 1:
            raise ValueError(f"Distiller.fit: mutual students must have the same class count, got {sorted(classes)}")
        objective = _MutualObjective(kd, len(students))
        loader = DataLoader(x, y, self.batch_size, shuffle=True, rng=self.rng)
        history = self._run(_Cohort(students), objective, loader, extra_callbacks=(objective,))
        history["student_loss"] = [losses for losses, _ in objective.epochs]
        history["student_accuracy"] = [accs for _, accs in objective.epochs]
        history["accuracy"] = [float(np.mean(accs)) for accs in history["student_accuracy"]]

    def _fit_labels(self, model: Module, x: np.ndarray, y: np.ndarray) -> None:
        self._run(model, CrossEntropyLoss(), DataLoader(x, y, self.batch_size, shuffle=True, rng=self.rng))

    def _run(self, model: Module, objective: Any, loader: DataLoader, extra_callbacks: tuple = ()) -> dict:
        optimizer = (self.optimizer or (lambda params: Adam(params, lr=1e-3)))(list(model.parameters()))
        scheduler = self.scheduler(optimizer) if self.scheduler is not None else None
        history = train_fit(model, objective, optimizer, loader, epochs=self.epochs, scheduler=scheduler,
                            callbacks=(*extra_callbacks, *self.callbacks), quiet=self.quiet, desc=self.desc)
        self.history_.append(history)
        return history

    # ------------------------------------------------------------------ checks
    def _check_classes(self, student: Module, x: np.ndarray, teacher_logits: np.ndarray) -> None:
        student_shape = predict(student, x[:2]).shape
        if student_shape[1:] != teacher_logits.shape[1:]:
            raise ValueError(f"Distiller.fit: teacher and student have different class counts: teacher logits "
                             f"{teacher_logits.shape}, student logits {student_shape} (on x[:2])")

    def _check_fit_args(self, student: Any, x: np.ndarray, y: np.ndarray, teacher: Module | None) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Distiller: mode must be one of {MODES}, got {self.mode!r}")
        if len(x) != len(y) or y.ndim != 1:
            raise ValueError(f"Distiller.fit: expected x (N, ...) and labels y (N,), got x {x.shape} and y {y.shape}")
        if len(x) == 0:
            raise ValueError("Distiller.fit: x and y hold no samples: nothing to distill on")
        check_labels(y, "Distiller.fit: y")
        if self.mode in ("offline", "interpolate"):
            if not isinstance(student, Module) or not isinstance(teacher, Module):
                raise TypeError(f"Distiller(mode={self.mode!r}).fit: expected a student Module and a teacher Module, "
                                f"got {type(student).__name__} and {type(teacher).__name__}")
        elif self.mode == "mutual":
            if teacher is not None:
                raise ValueError("Distiller(mode='mutual').fit: mutual learning has no teacher; got one")
            if (isinstance(student, Module) or len(list(student)) < 2
                    or not all(isinstance(s, Module) for s in student)):
                raise TypeError("Distiller(mode='mutual').fit: expected a list of >= 2 student Modules")
        elif isinstance(student, Module) or not callable(student):
            raise TypeError(f"Distiller(mode='self').fit: expected a zero-argument factory making a fresh "
                            f"model for each generation, got {type(student).__name__}")
        if self.feature_loss is not None:
            if self.mode != "offline":
                raise ValueError(f"Distiller: feature_loss works in mode='offline' only, got mode={self.mode!r}")
            if self.student_layer is None or self.teacher_layer is None:
                raise ValueError("Distiller: feature_loss needs student_layer and teacher_layer (module paths such "
                                 "as 'layer2', or Sequential prefix lengths)")
