"""RNN, LSTM, GRU: the time loop around the cell steps of ``functional.rnn``, layer by layer, direction
by direction, as ``torch.nn.RNN`` / ``LSTM`` / ``GRU``.

For each layer l and direction d (d = 1 reads the sequence backwards):

    gi_t = x_t W_ih^T + b_ih       for all t at once: one GEMM of the (T*N, I) sequence      (eq. 0)
    state_t = step(gi_t, state_t-1)                    the cell of ``functional.rnn``, t = 1..T
    output_t = [h_t of d = 0 | h_t of d = 1]           the input of layer l + 1 (after dropout in training)

Backward through time walks the steps in reverse, carrying d state_t-1 from step to step, and keeps
d gi_t and d gh_t of every step; after the loop each weight gradient is one GEMM over all steps
(dW_ih = dGI^T X, dW_hh = dGH^T H_prev, dW_hr = dH^T M) and d input is one GEMM (dGI W_ih).

Variable lengths (``lengths=``, a minimal ``pack_padded_sequence``): sequence n has ``lengths[n]`` valid
steps; at t >= lengths[n] its state is carried unchanged and its output is 0, so h_n is the state after
its last valid step and the reverse direction starts at step lengths[n] - 1 -- what PyTorch gives with
``pack_padded_sequence(x, lengths, enforce_sorted=False)`` then ``pad_packed_sequence(total_length=T)``.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from .. import init
from ..functional.misc import dropout_backward, dropout_forward
from ..module import Module, Parameter
from ..random import get_rng
from ._utils import check_grad
from .rnn_inputs import check_arguments, from_seq_first, initial_states, sequence_input, to_seq_first, valid_steps
from .rnn_steps import (GATES, Weights, previous_hidden, projection_input, read_weights, step_backward,
                        step_forward)


_PREFIXES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh", "w_hr": "weight_hr"}


class _Sweep(NamedTuple):
    """One direction of one layer: what its backward needs."""
    names: dict                 # role -> parameter name
    weights: Weights
    steps: range                # the time indices in the order they ran
    caches: list                # the cell cache of step t at index t


class _Layer(NamedTuple):
    x: np.ndarray               # the layer's input (T, N, I_l), after dropout
    keep: np.ndarray | None     # the dropout mask applied to it, or None
    sweeps: list                # one _Sweep per direction


class _Saved(NamedTuple):
    layout: str                 # 'unbatched', 'batch_first' or 'seq_first'
    out_shape: tuple
    state_shapes: tuple         # shapes of h_n (and c_n) as returned
    valid: np.ndarray | None    # (T, N, 1) True where t < lengths[n]; None when every step is valid
    layers: list


class RNNBase(Module):
    """The common machinery of RNN, LSTM and GRU (module docstring); ``mode`` is PyTorch's
    ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU').

    Parameters, per layer l and direction (suffix ``_reverse`` for the backward one), in PyTorch's order
    and shapes: ``weight_ih_l{l}`` (G, I_l), ``weight_hh_l{l}`` (G, P or H), ``bias_ih_l{l}`` (G,),
    ``bias_hh_l{l}`` (G,) unless ``bias=False``, ``weight_hr_l{l}`` (P, H) for an LSTM with ``proj_size``
    P > 0; G = gates * H (1, 4 or 3 gates); I_0 = input_size, I_l = num_directions * (P or H).
    All initialised ~ U(-1/sqrt(H), 1/sqrt(H)), as PyTorch's.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, *, dtype=None, rng=None) -> None:
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        check_arguments(self)
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=3)
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        D, H, out = self.num_directions, hidden_size, proj_size or hidden_size
        G = GATES[mode] * H
        self._names: list[dict[str, str]] = []          # per (layer, direction), index l * D + d
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else D * out
            for direction in range(D):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = {"w_ih": (G, in_size), "w_hh": (G, out)}
                if bias:
                    shapes.update(b_ih=(G,), b_hh=(G,))
                if proj_size > 0:
                    shapes["w_hr"] = (proj_size, H)
                names = {role: _PREFIXES[role] + suffix for role in shapes}
                for role, shape in shapes.items():
                    setattr(self, names[role], Parameter(np.empty(shape, dtype)))
                self._names.append(names)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        init.recurrent_uniform_(list(self.parameters()), self.hidden_size, rng=rng)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    # ------------------------------------------------------------------ forward
    def __call__(self, input: np.ndarray, hx: Any = None, lengths: Any = None) -> tuple:
        """PyTorch's arguments, plus ``lengths`` (module docstring), passed on positionally to the hooks."""
        return super().__call__(input, hx, lengths)

    def forward(self, input: np.ndarray, hx: Any = None, lengths: Any = None) -> tuple:
        weights = [read_weights(self, names) for names in self._names]
        dtype = weights[0].w_ih.dtype
        x, layout = sequence_input(self, input, dtype)                  # (T, N, I)
        T, N, _ = x.shape
        states = initial_states(self, hx, layout, N, dtype)             # per (layer, direction): (h,) or (h, c)
        valid = valid_steps(self, lengths, layout, T, N)
        D, p = self.num_directions, self.dropout if self.training else 0.0
        layers, finals = [], []
        for layer in range(self.num_layers):
            keep = None
            if layer > 0 and p > 0:
                x, keep = dropout_forward(x, p, get_rng())
            outs, sweeps = [], []
            for direction in range(D):
                k = layer * D + direction
                out, final, sweep = self._sweep(x, states[k], weights[k], self._names[k], direction == 1, valid)
                outs.append(out)
                sweeps.append(sweep)
                finals.append(final)
            layers.append(_Layer(x, keep, sweeps))
            x = outs[0] if D == 1 else np.concatenate(outs, axis=-1)    # (T, N, D * (P or H))
        output = from_seq_first(x, layout)
        h_n = np.stack([f[0] for f in finals])                          # (L * D, N, P or H)
        hidden = (h_n, np.stack([f[1] for f in finals])) if self.mode == "LSTM" else (h_n,)
        hidden = tuple(s[:, 0] if layout == "unbatched" else s for s in hidden)
        self._save_for_backward(_Saved(layout, output.shape, tuple(s.shape for s in hidden), valid, layers))
        return output, (hidden if self.mode == "LSTM" else hidden[0])

    def _sweep(self, x: np.ndarray, state: tuple, w: Weights, names: dict, reverse: bool,
               valid: np.ndarray | None) -> tuple[np.ndarray, tuple, _Sweep]:
        """One direction over the sequence: ``(outputs (T, N, P or H), final state, cache)``."""
        T, N, _ = x.shape
        gi = (x.reshape(T * N, -1) @ w.w_ih.T).reshape(T, N, -1)       # (T, N, G): eq. (0), one GEMM
        if w.b_ih is not None:
            gi += w.b_ih
        out = np.empty((T,) + state[0].shape, x.dtype)
        steps = range(T - 1, -1, -1) if reverse else range(T)
        caches: list = [None] * T
        for t in steps:
            new, caches[t] = step_forward(self.mode, gi[t], state, w)
            if valid is not None:                                       # finished sequences keep their state
                new = tuple(np.where(valid[t], s_new, s) for s_new, s in zip(new, state))
                out[t] = np.where(valid[t], new[0], 0)
            else:
                out[t] = new[0]
            state = new
        return out, state, _Sweep(names, w, steps, caches)

    # ------------------------------------------------------------------ backward
    def backward(self, grad_output: Any) -> tuple:
        """From ``(d output, d h_n)`` (LSTM: ``(d output, (d h_n, d c_n))``; any may be None, a bare array is
        d output) to ``(d input, d h0)`` (LSTM: ``(d input, (d h0, d c0))``), accumulating every parameter's
        gradient. d h0 is the gradient of the initial state, the zeros when none was given."""
        c = self._saved()
        d_out, d_hidden = self._split_grads(grad_output, c)
        D = self.num_directions
        d_x = to_seq_first(d_out, c.layout)                             # (T, N, D * (P or H))
        d_state0: list = [None] * (self.num_layers * D)
        for layer in reversed(range(self.num_layers)):
            x, keep, sweeps = c.layers[layer]
            dx = np.zeros_like(x)
            width = d_x.shape[-1] // D
            for direction, sweep in enumerate(sweeps):
                k = layer * D + direction
                d_final = tuple(d[k] for d in d_hidden)
                d_dir = d_x[..., direction * width:(direction + 1) * width]
                dx_dir, d_state0[k] = self._sweep_backward(d_dir, d_final, x, sweep, c.valid)
                dx += dx_dir
            d_x = dx if keep is None else dropout_backward(dx, keep)
        d_input = from_seq_first(d_x, c.layout)
        d_hx = tuple(np.stack([s[i] for s in d_state0]) for i in range(len(d_hidden)))
        d_hx = tuple(d[:, 0] if c.layout == "unbatched" else d for d in d_hx)
        return d_input, (d_hx if self.mode == "LSTM" else d_hx[0])

    def _sweep_backward(self, d_out: np.ndarray, d_state: tuple, x: np.ndarray, sweep: _Sweep,
                        valid: np.ndarray | None) -> tuple[np.ndarray, tuple]:
        """Backward through time of one direction, from d outputs (T, N, P or H) and d final state: accumulates
        its weight gradients, returns ``(d x (T, N, I), d initial state)``."""
        names, w, steps, caches = sweep
        T, N = d_out.shape[:2]
        G = w.w_ih.shape[0]
        dgi, dgh = np.empty((T, N, G), x.dtype), np.empty((T, N, G), x.dtype)
        dh_all = np.empty_like(d_out)                                   # total d h_t, for dW_hr
        for t in reversed(steps):
            v = None if valid is None else valid[t]
            dh = d_state[0] + (d_out[t] if v is None else np.where(v, d_out[t], 0))
            d_new = (dh,) + d_state[1:]
            dgi_t, dgh_t, d_prev = step_backward(self.mode, d_new, caches[t])
            if v is not None:                                           # a carried state passes d state on
                dgi_t, dgh_t, dh = dgi_t * v, dgh_t * v, dh * v
                d_prev = tuple(np.where(v, dp, dn) for dp, dn in zip(d_prev, d_new))
            dgi[t], dgh[t], dh_all[t] = dgi_t, dgh_t, dh
            d_state = d_prev
        h_prev = np.stack([previous_hidden(cache) for cache in caches])   # (T, N, P or H)
        self.accumulate_grad(names["w_ih"], dgi.reshape(T * N, G).T @ x.reshape(T * N, -1))
        self.accumulate_grad(names["w_hh"], dgh.reshape(T * N, G).T @ h_prev.reshape(T * N, -1))
        if w.b_ih is not None:
            self.accumulate_grad(names["b_ih"], dgi.sum(axis=(0, 1)))
            self.accumulate_grad(names["b_hh"], dgh.sum(axis=(0, 1)))
        if w.w_hr is not None:
            m = np.stack([projection_input(cache) for cache in caches])  # (T, N, H)
            self.accumulate_grad(names["w_hr"], dh_all.reshape(T * N, -1).T @ m.reshape(T * N, -1))
        return (dgi.reshape(T * N, G) @ w.w_ih).reshape(x.shape), d_state   # d x (T, N, I): one GEMM

    def _split_grads(self, grad_output: Any, c: _Saved) -> tuple[np.ndarray, tuple]:
        """d output and the tuple of d h_n (, d c_n) in the internal layouts, zeros for every None."""
        d_out, d_hx = grad_output if isinstance(grad_output, tuple) else (grad_output, None)
        if self.mode != "LSTM" or d_hx is None:
            d_hx = (d_hx,) + (None,) * (len(c.state_shapes) - 1)
        elif not (isinstance(d_hx, (tuple, list)) and len(d_hx) == 2):
            raise ValueError(f"{self._name()}: backward expects (d output, (d h_n, d c_n)), got a "
                             f"{type(d_hx).__name__} for the state")
        dtype = c.layers[0].x.dtype
        grads = []
        for d, shape in zip((d_out,) + tuple(d_hx), (c.out_shape,) + c.state_shapes):
            if d is None:
                d = np.zeros(shape, dtype)
            check_grad(self, d, shape)
            grads.append(d)
        hidden = tuple(d[:, None] if c.layout == "unbatched" else d for d in grads[1:])
        return grads[0], hidden

    def extra_repr(self) -> str:
        """PyTorch's (nonlinearity is not shown, as there)."""
        s = f"{self.input_size}, {self.hidden_size}"
        s += f", proj_size={self.proj_size}" if self.proj_size != 0 else ""
        s += f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        s += f", bias={self.bias}" if self.bias is not True else ""
        s += f", batch_first={self.batch_first}" if self.batch_first is not False else ""
        s += f", dropout={self.dropout}" if self.dropout != 0 else ""
        s += f", bidirectional={self.bidirectional}" if self.bidirectional is not False else ""
        return s


class RNN(RNNBase):
    """Elman RNN, h_t = act(x_t W_ih^T + b_ih + h_t-1 W_hh^T + b_hh) (act = tanh or relu), as ``torch.nn.RNN``.

    ``forward(input, hx=None, lengths=None) -> (output, h_n)``: input (L, N, H_in) (``batch_first``:
    (N, L, H_in); unbatched (L, H_in)), hx (num_layers * D, N, H) -> output (L, N, D * H), h_n like hx;
    D = 2 if bidirectional. ``lengths`` (N,) for padded batches (module docstring). ``dropout`` between
    layers in training. ``backward((d output, d h_n))`` -> ``(d input, d h0)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, dtype=None, rng=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN({input_size}, {hidden_size}): unknown nonlinearity {nonlinearity!r}, "
                             f"expected 'tanh' or 'relu'")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, dtype=dtype, rng=rng)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """LSTM (gates i, f, g, o; ``functional.rnn`` eqs. 2-4), as ``torch.nn.LSTM``, with ``proj_size``.

    ``forward(input, hx=None, lengths=None) -> (output, (h_n, c_n))``: hx = (h0, c0), h0 (num_layers * D,
    N, P or H), c0 (num_layers * D, N, H); output (L, N, D * (P or H)); P = proj_size if > 0.
    ``backward((d output, (d h_n, d c_n)))`` -> ``(d input, (d h0, d c0))``; any gradient may be None.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, *, dtype=None, rng=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, dtype=dtype, rng=rng)


class GRU(RNNBase):
    """GRU (gates r, z, n; ``functional.rnn`` eqs. 5-7, b_hn inside the reset gate), as ``torch.nn.GRU``.

    ``forward(input, hx=None, lengths=None) -> (output, h_n)`` with RNN's shapes;
    ``backward((d output, d h_n))`` -> ``(d input, d h0)``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, dtype=None, rng=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype=dtype, rng=rng)
