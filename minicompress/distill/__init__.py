"""Knowledge distillation: response-based (KD), feature-based (FitNets hint, attention transfer)
and relational (RKD) losses, a ``Distiller`` trainer for offline, online (mutual) and
self-distillation, and student-versus-teacher metrics."""
from .features import ATLoss, HintLoss, RKDLoss
from .losses import KDLoss, kd_loss, kd_loss_backward, kd_loss_forward
from .metrics import compare, kl_to_teacher, top1_agreement
from .trainer import Distiller

__all__ = ["KDLoss", "kd_loss", "kd_loss_forward", "kd_loss_backward", "HintLoss", "ATLoss", "RKDLoss",
           "Distiller", "top1_agreement", "kl_to_teacher", "compare"]
