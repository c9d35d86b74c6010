"""Knowledge distillation: response-based (KD, with teacher-confidence thresholding), feature-based
(FitNets hint, attention transfer; features tapped by module path, aligned across widths, sizes and
architectures) and relational (RKD) losses, a ``Distiller`` trainer for offline, online (mutual) and
self-distillation, students initialised from their teacher, and student-versus-teacher metrics."""
from .features import ATLoss, HintLoss, RKDLoss
from .losses import KDLoss, kd_loss, kd_loss_backward, kd_loss_forward, teacher_weights
from .metrics import compare, kl_to_teacher, top1_agreement
from .student_init import student_from_teacher
from .taps import FeatureTaps
from .interpolation import ParameterInterpolation
from .trainer import Distiller

__all__ = ["KDLoss", "kd_loss", "kd_loss_forward", "kd_loss_backward", "teacher_weights", "HintLoss", "ATLoss",
           "RKDLoss", "FeatureTaps", "Distiller", "ParameterInterpolation", "student_from_teacher", "top1_agreement", "kl_to_teacher",
           "compare"]
