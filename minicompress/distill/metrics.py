"""How close a student is to its teacher, and what it saves: agreement, KL, accuracy, size, latency."""
from __future__ import annotations

import numpy as np

from .. import metrics
from ..nn.module import Module
from ..train import predict
from .losses import check_kd_args, soft_target_forward


def top1_agreement(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Fraction of samples where argmax(student) == argmax(teacher).   (N, C), (N, C) -> float."""
    check_kd_args("top1_agreement", np.asarray(student_logits), np.asarray(teacher_logits), None, 1.0, 0.0)
    return metrics.agreement(np.argmax(student_logits, axis=1), np.argmax(teacher_logits, axis=1))


def kl_to_teacher(student_logits: np.ndarray, teacher_logits: np.ndarray, T: float = 1.0) -> float:
    """(1/N) sum_n KL(softmax(t_n / T) || softmax(s_n / T)): the batchmean KL, without the T^2 factor."""
    s, t = np.asarray(student_logits), np.asarray(teacher_logits)
    check_kd_args("kl_to_teacher", s, t, None, T, 0.0)
    return soft_target_forward(s, t, T)[0] / (T * T)


def compare(student: Module, teacher: Module, x: np.ndarray, y: np.ndarray, latency_batch: int = 64,
            repeats: int = 10) -> dict[str, float]:
    """Student versus teacher on ``(x, y)``.

    Returns accuracies, top-1 agreement, KL to the teacher (T = 1), and the ratios
    teacher / student of parameters, bytes and latency (per call on ``x[:latency_batch]``; > 1 means
    the student is smaller or faster).
    """
    s, t = predict(student, x), predict(teacher, x)
    y = np.asarray(y)
    xb = x[:latency_batch]
    return {
        "student_accuracy": metrics.accuracy(y, s.argmax(axis=1)),
        "teacher_accuracy": metrics.accuracy(y, t.argmax(axis=1)),
        "agreement": top1_agreement(s, t),
        "kl_to_teacher": kl_to_teacher(s, t),
        "param_ratio": metrics.count_params(teacher) / max(metrics.count_params(student), 1),
        "size_ratio": metrics.model_size_bytes(teacher) / max(metrics.model_size_bytes(student), 1),
        "latency_ratio": (metrics.measure_latency(teacher, xb, repeats=repeats)
                          / metrics.measure_latency(student, xb, repeats=repeats)),
    }
