"""Response-based knowledge distillation: the temperature-softmax KD loss (Hinton et al., 2015).

With student logits s and teacher logits t, both (N, C), temperature T and weight alpha:

    p = softmax(t / T)          teacher's soft targets                                   (1)
    q = softmax(s / T)          student's soft predictions                               (2)
    KL = (1/N) sum_n sum_c p_nc (log p_nc - log q_nc)      "batchmean": sum over classes,
                                                           mean over samples only       (3)
    L = alpha * T^2 * KL  +  (1 - alpha) * CE(s, y)                                      (4)
    dL/ds = alpha * T * (q - p) / N  +  (1 - alpha) * dCE/ds                             (5)

The T^2 in (4) cancels the 1/T^2 that softening puts on the soft-target gradient (5), so changing T
does not change the balance between the two terms (derivation: docs/kd_gradient.md).

Variants, all with gradient (5):
- ``soft="cross_entropy"``: the PyTorch tutorial's loss, cross-entropy to the soft targets,
  ``-(1/N) sum p log q * T^2`` = T^2 * (KL + H(p)): same gradient, larger value by T^2 * H(p).
  ``KDLoss.tutorial()`` is its configuration: T = 2, soft weight 0.25, label weight 0.75.
- ``target=None``: hard-label-free mode, ``L = T^2 * KL`` (alpha is ignored: nothing to balance).
- ``label_smoothing``: applied to the hard term only, exactly as ``CrossEntropyLoss(label_smoothing=...)``.

Stability: log p and log q come from log-softmax (max-shifted), never from log(softmax), so logits
of +-100 at T = 0.5 stay finite; the KL is summed as exp(log p) (log p - log q) (the engine's
``kl_div(..., log_target=True)``), so a p that underflows to 0 contributes 0 * finite = 0 (the xlogy
convention 0 log 0 = 0) and no log 0 is ever taken.
"""
from __future__ import annotations

import numpy as np

from ..nn.module import Module
from ..nn.functional.activation import log_softmax_backward, log_softmax_forward
from ..nn.functional.losses import (cross_entropy_backward, cross_entropy_forward, kl_div_backward,
                                    kl_div_forward)

SOFT_LOSSES = ("kl", "cross_entropy")


def check_hyper_parameters(name: str, T: float, alpha: float) -> None:
    """ValueError naming ``name`` unless T is finite and > 0 and alpha is in [0, 1]."""
    if not np.isfinite(T) or T <= 0:
        raise ValueError(f"{name}: temperature T must be a finite number > 0, got {T!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name}: alpha must be in [0, 1], got {alpha!r}")


def check_kd_args(name: str, student_logits: np.ndarray, teacher_logits: np.ndarray,
                  target: np.ndarray | None, T: float, alpha: float) -> None:
    """ValueError / TypeError naming ``name`` and the offending value, dtype or shapes."""
    check_hyper_parameters(name, T, alpha)
    for which, logits in (("student", student_logits), ("teacher", teacher_logits)):
        if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f":
            kind = logits.dtype if isinstance(logits, np.ndarray) else type(logits).__name__
            raise TypeError(f"{name}: expected floating-point {which} logits, got {kind}")
    s, t = np.shape(student_logits), np.shape(teacher_logits)
    if len(s) != 2:
        raise ValueError(f"{name}: expected student logits (N, C), got shape {s}")
    if len(t) != 2 or t[0] != s[0]:
        raise ValueError(f"{name}: expected teacher logits of shape ({s[0]}, C) to match student logits "
                         f"{s}, got {t}")
    if t[1] != s[1]:
        raise ValueError(f"{name}: teacher and student have different class counts: teacher logits {t}, "
                         f"student logits {s}")
    if target is not None and np.shape(target) != (s[0],):
        raise ValueError(f"{name}: expected target labels of shape ({s[0]},) to match student logits {s}, "
                         f"got {np.shape(target)}")


def soft_target_forward(student_logits: np.ndarray, teacher_logits: np.ndarray, T: float,
                        soft: str = "kl") -> tuple[float, tuple]:
    """Soft-target loss T^2 * KL(p || q) (eq. 3), or T^2 * CE(p, q) with ``soft="cross_entropy"``.

    Composed from the engine's pairs: KL = kl_div(log q, log p, 'batchmean', log_target=True), whose
    pointwise term exp(log p) (log p - log q) needs no log of a probability that may underflow; the
    tutorial variant is cross_entropy(s / T, p) with probability targets (mean over N).
    student_logits, teacher_logits: (N, C)  ->  loss: float; cache for ``soft_target_backward``.
    """
    if soft not in SOFT_LOSSES:
        raise ValueError(f"soft_target_forward: soft must be one of {SOFT_LOSSES}, got {soft!r}")
    z = student_logits / student_logits.dtype.type(T)                  # (N, C)
    log_p, _ = log_softmax_forward(teacher_logits.astype(z.dtype) / z.dtype.type(T), dim=1)
    if soft == "kl":
        log_q, softmax_cache = log_softmax_forward(z, dim=1)
        value, cache = kl_div_forward(log_q, log_p, reduction="batchmean", log_target=True, name="kd_loss")
    else:
        value, cache = cross_entropy_forward(z, np.exp(log_p), name="kd_loss")
        softmax_cache = None
    return T * T * float(value), (soft, softmax_cache, cache, T)


def soft_target_backward(dloss: float, cache: tuple) -> np.ndarray:
    """d/ds of T^2 * KL = T^2 * (1/T) * (q - p) / N = T (q - p) / N   (eq. 5 without alpha).

    The same for the cross-entropy variant, which differs from KL by the constant T^2 H(p).
    """
    soft, softmax_cache, cache, T = cache
    if soft == "kl":
        dz = log_softmax_backward(kl_div_backward(dloss * T * T, cache), softmax_cache, dim=1)
    else:
        dz = cross_entropy_backward(dloss * T * T, cache)
    return dz / dz.dtype.type(T)


def kd_loss_forward(student_logits: np.ndarray, teacher_logits: np.ndarray, target: np.ndarray | None = None,
                    T: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                    soft: str = "kl") -> tuple[float, tuple]:
    """L = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)    (eq. 4).

    student_logits, teacher_logits: (N, C) float; target: (N,) int class labels, or None for the
    hard-label-free loss T^2 * KL.  ->  loss: float; cache for ``kd_loss_backward``.
    The teacher's logits are constants: no gradient flows to them.
    """
    check_kd_args("kd_loss", student_logits, teacher_logits, target, T, alpha)
    soft_weight = 1.0 if target is None else alpha
    soft_value, soft_cache = soft_target_forward(student_logits, teacher_logits, T, soft)
    loss, hard_cache = soft_weight * soft_value, None
    if target is not None and alpha < 1.0:
        hard_value, hard_cache = cross_entropy_forward(student_logits, target, label_smoothing=label_smoothing,
                                                       name="kd_loss")
        loss += (1.0 - alpha) * float(hard_value)
    return float(loss), (soft_weight, soft_cache, 1.0 - alpha, hard_cache)


def kd_loss_backward(dloss: float, cache: tuple) -> np.ndarray:
    """dL/ds = alpha * T * (q - p) / N + (1 - alpha) * dCE/ds    (eq. 5)  ->  (N, C)."""
    soft_weight, soft_cache, hard_weight, hard_cache = cache
    grad = soft_target_backward(dloss * soft_weight, soft_cache)
    if hard_cache is not None:
        grad = grad + cross_entropy_backward(dloss * hard_weight, hard_cache)
    return grad


def kd_loss(student_logits: np.ndarray, teacher_logits: np.ndarray, target: np.ndarray | None = None,
            T: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0, soft: str = "kl") -> float:
    """The value of eq. (4); see ``kd_loss_forward``."""
    return kd_loss_forward(student_logits, teacher_logits, target, T, alpha, label_smoothing, soft)[0]


class KDLoss(Module):
    """Knowledge-distillation loss (eq. 4): ``loss(student_logits, teacher_logits, target)`` -> float.

    ``loss.backward()`` returns d loss / d student_logits (eq. 5) for the last call.
    ``KDLoss(T, alpha=1.0)`` or ``target=None`` trains on soft targets alone.
    A Module like the engine's losses: no parameters, nothing kept inside ``no_grad()``.
    """

    def __init__(self, T: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                 soft: str = "kl") -> None:
        super().__init__()
        check_hyper_parameters("KDLoss", T, alpha)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"KDLoss: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if soft not in SOFT_LOSSES:
            raise ValueError(f"KDLoss: soft must be one of {SOFT_LOSSES}, got {soft!r}")
        self.T, self.alpha = float(T), float(alpha)
        self.label_smoothing, self.soft = float(label_smoothing), soft

    @classmethod
    def tutorial(cls) -> "KDLoss":
        """The PyTorch tutorial's loss: 0.25 * T^2 * CE(soft targets) + 0.75 * CE(labels), T = 2."""
        return cls(T=2.0, alpha=0.25, soft="cross_entropy")

    def forward(self, student_logits: np.ndarray, teacher_logits: np.ndarray,
                target: np.ndarray | None = None) -> float:
        value, cache = kd_loss_forward(np.asarray(student_logits), np.asarray(teacher_logits),
                                       None if target is None else np.asarray(target),
                                       self.T, self.alpha, self.label_smoothing, self.soft)
        self._save_for_backward(cache)
        return value

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        """d loss / d student_logits, times ``grad_output``."""
        return kd_loss_backward(grad_output, self._saved())

    def extra_repr(self) -> str:
        extra = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        extra += f", soft={self.soft!r}" if self.soft != "kl" else ""
        return f"T={self.T}, alpha={self.alpha}{extra}"
