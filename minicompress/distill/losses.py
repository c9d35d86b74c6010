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
- teacher-confidence thresholding: per-sample weights w_n on the soft term,

      trusted_n = [max_c softmax(t_n)_c >= threshold]  and  [argmax_c t_n == y_n]             (6)
                  (the first with ``confidence_threshold``, the second with ``drop_wrong_teacher``)
      w_n = 1 if trusted_n else ``below_threshold_weight``  (0: the sample's soft term is dropped)
      KL_w = (1/N) sum_n w_n sum_c p_nc (log p_nc - log q_nc),   dKL_w/ds_n = w_n (q_n - p_n) / (N T)

  The confidence is the teacher's own (softmax at T = 1). The weights depend on the teacher alone, so
  they are constants of the gradient; the sum stays divided by N (not by sum_n w_n), so a batch the
  teacher is unsure of leans on its labels.

Stability: log p and log q come from log-softmax (max-shifted), never from log(softmax), so logits
of +-100 at T = 0.5 stay finite; the KL is summed as exp(log p) (log p - log q) (the engine's
``kl_div(..., log_target=True)``), so a p that underflows to 0 contributes 0 * finite = 0 (the xlogy
convention 0 log 0 = 0) and no log 0 is ever taken.
"""
from __future__ import annotations

from typing import Any

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


def check_trust_options(name: str, confidence_threshold: float | None, below_threshold_weight: float) -> None:
    """ValueError naming ``name`` unless the threshold is None or in [0, 1] and the weight in [0, 1]."""
    if confidence_threshold is not None and not 0.0 <= confidence_threshold <= 1.0:
        raise ValueError(f"{name}: confidence_threshold must be None or a probability in [0, 1], "
                         f"got {confidence_threshold!r}")
    if not 0.0 <= below_threshold_weight <= 1.0:
        raise ValueError(f"{name}: below_threshold_weight must be in [0, 1], got {below_threshold_weight!r}")


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


def teacher_weights(teacher_logits: np.ndarray, target: np.ndarray | None = None,
                    confidence_threshold: float | None = None, drop_wrong_teacher: bool = False,
                    below_threshold_weight: float = 0.0) -> np.ndarray | None:
    """w_n of eq. (6), (N,) in the logits' dtype, or None when neither condition is asked for."""
    if confidence_threshold is None and not drop_wrong_teacher:
        return None
    trusted = np.ones(len(teacher_logits), bool)
    if confidence_threshold is not None:
        log_p, _ = log_softmax_forward(teacher_logits, dim=1)
        trusted &= np.exp(log_p.max(axis=1)) >= confidence_threshold
    if drop_wrong_teacher:
        if target is None:
            raise ValueError("kd_loss: drop_wrong_teacher=True needs the target labels, got target=None")
        trusted &= teacher_logits.argmax(axis=1) == np.asarray(target)
    return np.where(trusted, 1.0, below_threshold_weight).astype(teacher_logits.dtype)


def soft_target_forward(student_logits: np.ndarray, teacher_logits: np.ndarray, T: float,
                        soft: str = "kl", weights: np.ndarray | None = None) -> tuple[float, tuple]:
    """Soft-target loss T^2 * KL(p || q) (eq. 3), or T^2 * CE(p, q) with ``soft="cross_entropy"``;
    with ``weights`` (N,) the per-sample terms are weighted, still divided by N (eq. 6).

    Composed from the engine's pairs: the KL from kl_div(log q, log p, log_target=True), whose
    pointwise term exp(log p) (log p - log q) needs no log of a probability that may underflow; the
    tutorial variant from cross_entropy(s / T, p) with probability targets.
    student_logits, teacher_logits: (N, C)  ->  loss: float; cache for ``soft_target_backward``.
    """
    if soft not in SOFT_LOSSES:
        raise ValueError(f"soft_target_forward: soft must be one of {SOFT_LOSSES}, got {soft!r}")
    z = student_logits / student_logits.dtype.type(T)                  # (N, C)
    log_p, _ = log_softmax_forward(teacher_logits.astype(z.dtype) / z.dtype.type(T), dim=1)
    reduction = "batchmean" if soft == "kl" else "mean"
    if weights is not None:
        reduction = "none"
        weights = np.asarray(weights, z.dtype)
    if soft == "kl":
        log_q, softmax_cache = log_softmax_forward(z, dim=1)
        value, cache = kl_div_forward(log_q, log_p, reduction=reduction, log_target=True, name="kd_loss")
        per_sample = value.sum(axis=1) if weights is not None else None          # (N,)
    else:
        value, cache = cross_entropy_forward(z, np.exp(log_p), reduction=reduction, name="kd_loss")
        softmax_cache, per_sample = None, value
    if weights is not None:
        value = (weights * per_sample).sum() / len(z)
    return T * T * float(value), (soft, softmax_cache, cache, T, weights)


def soft_target_backward(dloss: float, cache: tuple) -> np.ndarray:
    """d/ds of T^2 * KL = T^2 * (1/T) * (q - p) / N = T (q - p) / N   (eq. 5 without alpha), row n times w_n.

    The same for the cross-entropy variant, which differs from KL by the constant T^2 H(p).
    """
    soft, softmax_cache, cache, T, weights = cache
    upstream = dloss * T * T
    if weights is not None:                                            # d (sum_n w_n l_n / N) / d l_n
        upstream = weights * weights.dtype.type(upstream / len(weights))
    if soft == "kl":
        if weights is not None:
            upstream = np.broadcast_to(upstream[:, None], cache[0].shape)   # pointwise terms (N, C)
        dz = log_softmax_backward(kl_div_backward(upstream, cache), softmax_cache, dim=1)
    else:
        dz = cross_entropy_backward(upstream, cache)
    return dz / dz.dtype.type(T)


def kd_loss_forward(student_logits: np.ndarray, teacher_logits: np.ndarray, target: np.ndarray | None = None,
                    T: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                    soft: str = "kl", *, confidence_threshold: float | None = None,
                    drop_wrong_teacher: bool = False, below_threshold_weight: float = 0.0) -> tuple[float, tuple]:
    """L = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)    (eq. 4).

    student_logits, teacher_logits: (N, C) float; target: (N,) int class labels, or None for the
    hard-label-free loss T^2 * KL.  ->  loss: float; cache for ``kd_loss_backward``.
    ``confidence_threshold``, ``drop_wrong_teacher``, ``below_threshold_weight``: the per-sample soft
    weights of eq. (6). The teacher's logits are constants: no gradient flows to them.
    """
    check_kd_args("kd_loss", student_logits, teacher_logits, target, T, alpha)
    check_trust_options("kd_loss", confidence_threshold, below_threshold_weight)
    soft_weight = 1.0 if target is None else alpha
    weights = teacher_weights(teacher_logits, target, confidence_threshold, drop_wrong_teacher,
                              below_threshold_weight)
    soft_value, soft_cache = soft_target_forward(student_logits, teacher_logits, T, soft, weights)
    loss, hard_cache = soft_weight * soft_value, None
    if target is not None and alpha < 1.0:
        hard_value, hard_cache = cross_entropy_forward(student_logits, target, label_smoothing=label_smoothing,
                                                       name="kd_loss")
        loss += (1.0 - alpha) * float(hard_value)
    return float(loss), (soft_weight, soft_cache, 1.0 - alpha, hard_cache)


def kd_loss_backward(dloss: float, cache: tuple) -> np.ndarray:
    """dL/ds = alpha * T * (q - p) / N + (1 - alpha) * dCE/ds    (eq. 5; row n times w_n of eq. 6)  ->  (N, C)."""
    soft_weight, soft_cache, hard_weight, hard_cache = cache
    grad = soft_target_backward(dloss * soft_weight, soft_cache)
    if hard_cache is not None:
        grad = grad + cross_entropy_backward(dloss * hard_weight, hard_cache)
    return grad


def kd_loss(student_logits: np.ndarray, teacher_logits: np.ndarray, target: np.ndarray | None = None,
            T: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0, soft: str = "kl",
            **trust: Any) -> float:
    """The value of eq. (4); see ``kd_loss_forward`` (``trust``: its eq. (6) options)."""
    return kd_loss_forward(student_logits, teacher_logits, target, T, alpha, label_smoothing, soft, **trust)[0]


class KDLoss(Module):
    """Knowledge-distillation loss (eq. 4): ``loss(student_logits, teacher_logits, target)`` -> float.

    ``loss.backward()`` returns d loss / d student_logits (eq. 5) for the last call.
    ``KDLoss(T, alpha=1.0)`` or ``target=None`` trains on soft targets alone.
    ``confidence_threshold`` (teacher's top probability), ``drop_wrong_teacher`` (needs targets) and
    ``below_threshold_weight`` weight the soft term of untrusted samples (eq. 6; default: dropped).
    A Module like the engine's losses: no parameters, nothing kept inside ``no_grad()``.
    """

    def __init__(self, T: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
                 soft: str = "kl", *, confidence_threshold: float | None = None,
                 drop_wrong_teacher: bool = False, below_threshold_weight: float = 0.0) -> None:
        super().__init__()
        check_hyper_parameters("KDLoss", T, alpha)
        check_trust_options("KDLoss", confidence_threshold, below_threshold_weight)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"KDLoss: label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if soft not in SOFT_LOSSES:
            raise ValueError(f"KDLoss: soft must be one of {SOFT_LOSSES}, got {soft!r}")
        self.T, self.alpha = float(T), float(alpha)
        self.label_smoothing, self.soft = float(label_smoothing), soft
        self.confidence_threshold, self.drop_wrong_teacher = confidence_threshold, bool(drop_wrong_teacher)
        self.below_threshold_weight = float(below_threshold_weight)

    def kd_args(self) -> dict[str, Any]:
        """This loss's arguments of ``kd_loss_forward`` (after the logits and the target)."""
        return dict(T=self.T, alpha=self.alpha, label_smoothing=self.label_smoothing, soft=self.soft,
                    confidence_threshold=self.confidence_threshold, drop_wrong_teacher=self.drop_wrong_teacher,
                    below_threshold_weight=self.below_threshold_weight)

    @classmethod
    def tutorial(cls) -> "KDLoss":
        """The PyTorch tutorial's loss: 0.25 * T^2 * CE(soft targets) + 0.75 * CE(labels), T = 2."""
        return cls(T=2.0, alpha=0.25, soft="cross_entropy")

    def forward(self, student_logits: np.ndarray, teacher_logits: np.ndarray,
                target: np.ndarray | None = None) -> float:
        value, cache = kd_loss_forward(np.asarray(student_logits), np.asarray(teacher_logits),
                                       None if target is None else np.asarray(target), **self.kd_args())
        self._save_for_backward(cache)
        return value

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        """d loss / d student_logits, times ``grad_output``."""
        return kd_loss_backward(grad_output, self._saved())

    def extra_repr(self) -> str:
        extra = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        extra += f", soft={self.soft!r}" if self.soft != "kl" else ""
        extra += f", confidence_threshold={self.confidence_threshold}" if self.confidence_threshold is not None else ""
        extra += ", drop_wrong_teacher=True" if self.drop_wrong_teacher else ""
        if self.confidence_threshold is not None or self.drop_wrong_teacher:
            extra += f", below_threshold_weight={self.below_threshold_weight}"
        return f"T={self.T}, alpha={self.alpha}{extra}"
