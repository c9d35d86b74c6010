"""Layers with PyTorch's names, arguments, defaults, attributes and state-dict keys."""
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv1d, Conv2d
from .linear import Linear
from .misc import Dropout, Flatten, Identity
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d

__all__ = ["Linear", "Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "LeakyReLU", "Tanh", "Sigmoid",
           "GELU", "Softmax", "LogSoftmax", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
           "AdaptiveAvgPool2d", "Flatten", "Dropout", "Identity"]
