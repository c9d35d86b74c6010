"""RNNCell, LSTMCell, GRUCell: one step of ``functional.rnn``, as ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``.

    gi = x W_ih^T + b_ih;   h' = step(gi, h)  (LSTM: (h', c') = step(gi, h, c))
    dW_ih = d gi^T x    db_ih = sum d gi    dx = d gi W_ih    dW_hh = d gh^T h    db_hh = sum d gh

Parameters ``weight_ih`` (G, input_size), ``weight_hh`` (G, hidden_size), ``bias_ih``, ``bias_hh`` (G,)
unless ``bias=False``; G = gates * hidden_size (1, 4 or 3); all ~ U(-1/sqrt(H), 1/sqrt(H)), as PyTorch's.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import init
from ..module import Module, Parameter
from ._utils import check_array, check_grad
from .rnn_steps import GATES, Weights, read_weights, step_backward, step_forward

_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


class _Saved(NamedTuple):
    x: np.ndarray               # (N, I)
    h: np.ndarray               # (N, H), the state h the step started from
    weights: Weights
    cache: Any                  # the step's cache
    unbatched: bool
    shape: tuple                # (N, H) or (H,): the shape of every returned state


class RNNCellBase(Module):
    """The common machinery of the three cells; ``mode`` as the sequence layers' (``rnn_steps``)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True, *, dtype=None,
                 rng=None) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be an int greater than zero, got {value!r}")
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        G = GATES[mode] * hidden_size
        self.weight_ih = Parameter(np.empty((G, input_size), dtype))
        self.weight_hh = Parameter(np.empty((G, hidden_size), dtype))
        if bias:
            self.bias_ih = Parameter(np.empty(G, dtype))
            self.bias_hh = Parameter(np.empty(G, dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        init.recurrent_uniform_(list(self.parameters()), self.hidden_size, rng=rng)

    def __call__(self, input: np.ndarray, hx: Any = None) -> Any:
        return super().__call__(input, hx)

    def forward(self, input: np.ndarray, hx: Any = None) -> Any:
        names = {role: name for role, name in _NAMES.items() if getattr(self, name) is not None}
        w = read_weights(self, names)
        check_array(self, input, w.w_ih.dtype)
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{self._name()}: expected input (N, {self.input_size}) or ({self.input_size},), "
                             f"got {input.shape}")
        unbatched = input.ndim == 1
        x = input[None] if unbatched else input                         # (N, I)
        shape = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
        state = self._state(hx, shape, w.w_ih.dtype)
        state = tuple(s[None] if unbatched else s for s in state)
        gi = x @ w.w_ih.T                                               # (N, G)
        if w.b_ih is not None:
            gi += w.b_ih
        new, cache = step_forward(self.mode, gi, state, w)
        self._save_for_backward(_Saved(x, state[0], w, cache, unbatched, shape))
        new = tuple(s[0] if unbatched else s for s in new)
        return new if self.mode == "LSTM" else new[0]

    def _state(self, hx: Any, shape: tuple, dtype: np.dtype) -> tuple:
        n_states = 2 if self.mode == "LSTM" else 1
        if hx is None:
            return tuple(np.zeros(shape, dtype) for _ in range(n_states))
        if self.mode == "LSTM" and not (isinstance(hx, tuple) and len(hx) == 2):
            raise ValueError(f"{self._name()}: expected hx = (h, c), got {type(hx).__name__}")
        states = hx if self.mode == "LSTM" else (hx,)
        for name, s in zip(("h", "c"), states):
            check_array(self, s, dtype)
            if s.shape != shape:
                raise ValueError(f"{self._name()}: expected {name} of shape {shape} for input of that batch, "
                                 f"got {s.shape}")
        return tuple(states)

    def backward(self, grad_output: Any) -> tuple:
        """d h' (LSTM: (d h', d c'), either may be None) -> ``(d input, d h)`` (LSTM: ``(d input, (d h, d c))``)."""
        c = self._saved()
        grads = grad_output if self.mode == "LSTM" and isinstance(grad_output, tuple) else (grad_output,)
        grads = tuple(grads) + (None,) * ((2 if self.mode == "LSTM" else 1) - len(grads))
        d_new = []
        for d in grads:
            d = np.zeros(c.shape, c.x.dtype) if d is None else d
            check_grad(self, d, c.shape)
            d_new.append(d[None] if c.unbatched else d)
        dgi, dgh, d_prev = step_backward(self.mode, tuple(d_new), c.cache)
        self.accumulate_grad("weight_ih", dgi.T @ c.x)
        self.accumulate_grad("weight_hh", dgh.T @ c.h)
        if c.weights.b_ih is not None:
            self.accumulate_grad("bias_ih", dgi.sum(axis=0))
            self.accumulate_grad("bias_hh", dgh.sum(axis=0))
        dx = dgi @ c.weights.w_ih
        if c.unbatched:
            dx, d_prev = dx[0], tuple(d[0] for d in d_prev)
        return dx, (d_prev if self.mode == "LSTM" else d_prev[0])

    def extra_repr(self) -> str:
        """PyTorch's."""
        s = f"{self.input_size}, {self.hidden_size}"
        s += f", bias={self.bias}" if self.bias is not True else ""
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        return s + (f", nonlinearity={nonlinearity}" if nonlinearity != "tanh" else "")


class RNNCell(RNNCellBase):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act = tanh or relu, as ``torch.nn.RNNCell``.
    ``forward(input, hx=None) -> h'``; ``backward(d h') -> (d input, d h)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 *, dtype=None, rng=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell({input_size}, {hidden_size}): unknown nonlinearity {nonlinearity!r}, "
                             f"expected 'tanh' or 'relu'")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias,
                         dtype=dtype, rng=rng)
        self.nonlinearity = nonlinearity


class LSTMCell(RNNCellBase):
    """(h', c') = LSTM step (``functional.rnn`` eqs. 2-4, no projection), as ``torch.nn.LSTMCell``.
    ``forward(input, hx=None)``, hx = (h, c) -> (h', c'); ``backward((d h', d c')) -> (d input, (d h, d c))``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, dtype=None, rng=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, dtype=dtype, rng=rng)


class GRUCell(RNNCellBase):
    """h' = GRU step (``functional.rnn`` eqs. 5-7), as ``torch.nn.GRUCell``.
    ``forward(input, hx=None) -> h'``; ``backward(d h') -> (d input, d h)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, dtype=None, rng=None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, dtype=dtype, rng=rng)
