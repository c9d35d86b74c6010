"""The engine: Modules with hand-written forward and backward passes, losses, init."""
from . import functional, init
from .grad_mode import is_grad_enabled, no_grad
from .layers import (GELU, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d,
                     Dropout, Flatten, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool1d, MaxPool2d, ReLU,
                     Sigmoid, Softmax, Tanh)
from .containers import Sequential
from .module import IncompatibleKeys, Module, Parameter, Parametrized, RemovableHandle
from .random import get_rng, manual_seed
from .losses import CrossEntropyLoss, KLDivLoss, MSELoss, NLLLoss
