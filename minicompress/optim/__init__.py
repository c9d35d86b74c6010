"""Optimizers and learning-rate schedulers with PyTorch's update rules and argument names."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, StepLR
from .optimizer import Optimizer
from .sgd import SGD
from .swa_utils import update_bn

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "LRScheduler", "StepLR",
           "MultiStepLR", "CosineAnnealingLR", "update_bn"]
