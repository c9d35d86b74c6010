"""Weight initialisation with PyTorch's names, formulas and defaults (``torch.nn.init``).

Every function fills a Parameter's ``.data`` (or a plain ndarray) in place and returns it.
Random draws come from ``rng`` (a Generator or seed), else from the global generator
(``minicompress.manual_seed``); the distributions are PyTorch's, the random streams are NumPy's.
Inside ``with skip_init():`` every function leaves its tensor untouched (no draws): for modules whose
arrays are replaced right after they are built, as when a model file is loaded.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Iterator, TypeVar

import numpy as np

from .module import Parameter
from .random import get_rng

T = TypeVar("T", Parameter, np.ndarray)


_STATE = threading.local()


@contextmanager
def skip_init() -> Iterator[None]:
    """Within the block (this thread), init functions return their tensor unchanged."""
    previous = getattr(_STATE, "skip", False)
    _STATE.skip = True
    try:
        yield
    finally:
        _STATE.skip = previous


def _skipping() -> bool:
    return getattr(_STATE, "skip", False)


def _array(tensor: Parameter | np.ndarray) -> np.ndarray:
    array = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(array, np.ndarray):
        raise TypeError(f"init: expected a Parameter or ndarray, got {type(tensor).__name__}")
    return array


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``.

    linear, conv*, sigmoid: 1;  tanh: 5/3;  relu: sqrt 2;  leaky_relu: sqrt(2 / (1 + slope^2)) (slope 0.01
    by default);  selu: 3/4.
    """
    linear = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid"}
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative_slope {slope} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def calculate_fan_in_and_fan_out(tensor: Parameter | np.ndarray) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field,  fan_out = shape[0] * receptive field (receptive = prod(shape[2:]))."""
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions "
                         f"(got shape {shape})")
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


_calculate_fan_in_and_fan_out = calculate_fan_in_and_fan_out  # PyTorch's (private) name


def _fan(tensor: Parameter | np.ndarray, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: T, a: float = 0.0, b: float = 1.0, *, rng=None) -> T:
    """Fill with U(a, b)."""
    if _skipping():
        return tensor
    array = _array(tensor)
    array[...] = get_rng(rng).uniform(a, b, size=array.shape)
    return tensor


def normal_(tensor: T, mean: float = 0.0, std: float = 1.0, *, rng=None) -> T:
    """Fill with N(mean, std^2)."""
    if _skipping():
        return tensor
    array = _array(tensor)
    array[...] = get_rng(rng).normal(mean, std, size=array.shape)
    return tensor


def trunc_normal_(tensor: T, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, *,
                  rng=None) -> T:
    """Fill with N(mean, std^2) truncated to [a, b] (absolute bounds, as PyTorch's), by redrawing the
    values outside until none is left."""
    if _skipping():
        return tensor
    array = _array(tensor)
    generator = get_rng(rng)
    values = generator.normal(mean, std, size=array.shape)
    bad = (values < a) | (values > b)
    while bad.any():
        values[bad] = generator.normal(mean, std, size=int(bad.sum()))
        bad = (values < a) | (values > b)
    array[...] = values
    return tensor


def constant_(tensor: T, val: float) -> T:
    _array(tensor)[...] = val
    return tensor


def zeros_(tensor: T) -> T:
    return constant_(tensor, 0.0)


def ones_(tensor: T) -> T:
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor: T, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     *, rng=None) -> T:
    """U(-bound, bound),  bound = gain * sqrt(3 / fan),  gain = calculate_gain(nonlinearity, a).

    Layers use a = sqrt 5, which gives bound = 1 / sqrt(fan_in).
    """
    if _skipping():
        return tensor
    if _array(tensor).size == 0:  # as PyTorch: a no-op on zero-element tensors
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, rng=rng)


def kaiming_normal_(tensor: T, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    *, rng=None) -> T:
    """N(0, std^2),  std = gain / sqrt(fan)."""
    if _array(tensor).size == 0:  # as PyTorch: a no-op on zero-element tensors
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, rng=rng)


def xavier_uniform_(tensor: T, gain: float = 1.0, *, rng=None) -> T:
    """U(-a, a),  a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    a = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, rng=rng)


def xavier_normal_(tensor: T, gain: float = 1.0, *, rng=None) -> T:
    """N(0, std^2),  std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng=rng)


def default_weight_and_bias_(weight: Parameter, bias: Parameter | None, *, rng=None) -> None:
    """PyTorch's ``reset_parameters`` of Linear and Conv: W ~ kaiming_uniform_(a=sqrt 5) = U(+-1/sqrt(fan_in)),
    b ~ U(+-1/sqrt(fan_in)) (b = 0 if fan_in = 0)."""
    if _skipping():
        return
    rng = get_rng(rng)
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, rng=rng)


def recurrent_uniform_(tensors: list[Parameter], hidden_size: int, *, rng=None) -> None:
    """PyTorch's ``reset_parameters`` of RNN, LSTM, GRU and their cells: every tensor ~ U(+-1/sqrt(hidden_size))."""
    if _skipping():
        return
    rng = get_rng(rng)
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for tensor in tensors:
        uniform_(tensor, -bound, bound, rng=rng)
