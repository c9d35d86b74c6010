"""The engine: Modules with hand-written forward and backward passes, losses, init."""
from . import functional, init
from .grad_mode import is_grad_enabled, no_grad
from .layers import (GELU, AdaptiveAvgPool1d, AdaptiveAvgPool2d, Add, AvgPool1d, AvgPool2d, BatchNorm1d,
                     BatchNorm2d, Cat, Conv1d, Conv2d, Dropout, Embedding, Flatten, FloatFunctional, GroupNorm,
                     Hardsigmoid, Hardswish, Hardtanh, Identity, LayerNorm, LeakyReLU, Linear, LogSoftmax,
                     MaxPool1d, MaxPool2d, Mul, MultiheadAttention, Permute, PReLU, ReLU, ReLU6, Sigmoid, SiLU,
                     Softmax, Tanh, TransformerEncoder, TransformerEncoderLayer, Unflatten,
                     ConstantOperand, Erf, MatMul, Sub, Expand, Reshape, Slice, Split, Take,
                     RNNBase, RNN, LSTM, GRU, RNNCellBase, RNNCell, LSTMCell, GRUCell)
from .containers import ModuleDict, ModuleList, Sequential
from .module import IncompatibleKeys, Module, Parameter, Parametrized, RemovableHandle
from .graph import Graph, trace_graph
from .graph_module import GraphModule
from .random import get_rng, manual_seed
from .losses import CrossEntropyLoss, KLDivLoss, MSELoss, NLLLoss
