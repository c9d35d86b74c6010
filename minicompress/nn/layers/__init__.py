"""Layers with PyTorch's names, arguments, defaults, attributes and state-dict keys."""
from .activation import (GELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, LogSoftmax, PReLU, ReLU, ReLU6,
                         Sigmoid, SiLU, Softmax, Tanh)
from .arithmetic import ConstantOperand, Erf, MatMul, Sub
from .attention import MultiheadAttention
from .conv import Conv1d, Conv2d
from .embedding import Embedding
from .linear import Linear
from .merge import Add, Cat, FloatFunctional, Mul
from .misc import Dropout, Flatten, Identity, Permute, Unflatten
from .norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from .rnn import GRU, LSTM, RNN, RNNBase
from .rnn_cell import GRUCell, LSTMCell, RNNCell, RNNCellBase
from .shape import Expand, Reshape, Slice, Split, Take
from .pool import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = ["Linear", "Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "Embedding",
           "ReLU", "ReLU6", "LeakyReLU", "PReLU", "Hardtanh", "Hardswish", "Hardsigmoid", "SiLU", "Tanh", "Sigmoid",
           "GELU", "Softmax", "LogSoftmax", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "Flatten", "Unflatten", "Permute", "Dropout", "Identity",
           "Add", "Mul", "Cat", "FloatFunctional", "MultiheadAttention",
           "TransformerEncoderLayer", "TransformerEncoder",
           "ConstantOperand", "Erf", "MatMul", "Sub", "Expand", "Reshape", "Slice", "Split", "Take",
           "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]
