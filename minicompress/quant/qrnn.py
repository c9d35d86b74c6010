"""Dynamically quantized LSTM, GRU and the three cells, as ``torch.ao.nn.quantized.dynamic`` on fbgemm.

PyTorch 2.13 (``aten/src/ATen/native/RNN.cpp``, ``QuantizedCellParamsDynamic``) replaces each of the two
projections of a recurrent step by a dynamic int8 linear (``quantized::linear_dynamic``, activations
quantized per call to quint8 with ``reduce_range=True``, i.e. codes 0..127; ``quant.functional.linear_dynamic``)
and keeps the rest of the step in float32. For each layer l and direction d of a sequence layer (input x of
shape (T, N, I), sequence first)::

    GI = linear_dynamic(x, W_ih, b_ih)          (1) ONE call over the whole (T*N, I) sequence: one (scale,
                                                    zero point) for all steps -- the CPU path precomputes it
    gh_t = linear_dynamic(h_t-1, W_hh, b_hh)    (2) one call per step: qparams from that step's state
    LSTM: a = gh_t + GI_t;  (i, f, g, o) -> c_t, h_t          as ``nn.functional.rnn.lstm_update``
    GRU:  r, z, n, h_t from (GI_t, gh_t, h_t-1)               as ``nn.functional.rnn.gru_update``

The reverse direction calls (1) again on the same x (same qparams); layer l + 1 reads the concatenated
outputs of layer l. The cells (``LSTMCell``, ``GRUCell``, ``RNNCell``) call (1) on their one step's input.
``dtype='float16'`` replaces both linears by ``quant.fp16.linear_fp16`` (float16 weights, float32 compute).

The integer part (the codes of x and of each h_t-1, the int32 accumulators) is PyTorch's exactly; the
float32 gate arithmetic agrees to float rounding (PyTorch computes the GRU's last line as
``(h - n) * z + n``, ours ``(1 - z) * n + z * h``).

``lengths=`` (our stand-in for a packed sequence, as the float layers) reproduces PyTorch's packed path:
padded steps of x are zeroed before (1) -- zeros never change a dynamic range, which always contains 0 --
and (2) quantizes only the rows of the sequences still running at step t, as ``PackedLayer`` narrows its
batch. As PyTorch, the layers need biases, have no ``proj_size`` ("quantized LSTM with projections is not
supported") and are inference-only.

State dict: each projection is a ``DynamicQuantizedLinear`` (or ``DynamicFloat16Linear``) child named after
PyTorch's parameter suffix -- ``ih_l0.weight``, ``ih_l0.weight_scale``, ``ih_l0.weight_zero_point``,
``ih_l0.bias``, ``hh_l0...``, ``ih_l0_reverse...``; the cells' children are ``ih`` and ``hh``. (PyTorch keeps
them in opaque packed objects, ``_all_weight_values.K.param``.)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.functional.rnn import gru_update, lstm_update, rnn_update
from ..nn.layers.rnn import GRU, LSTM, RNNBase
from ..nn.layers.rnn_cell import GRUCell, LSTMCell, RNNCell
from ..nn.layers.rnn_inputs import from_seq_first, initial_states, sequence_input, valid_steps
from ..nn.module import Module
from .fp16 import DynamicFloat16Linear
from .modules import dynamic_linear
from .qconfig import default_dynamic_qconfig

__all__ = ["DynamicQuantizedLSTM", "DynamicQuantizedGRU", "DynamicQuantizedLSTMCell", "DynamicQuantizedGRUCell",
           "DynamicQuantizedRNNCell"]


def _projection(w: np.ndarray, b: np.ndarray, qconfig: Any, who: str) -> Module:
    """One projection y = x W^T + b as a dynamic int8 (or float16) linear; a fresh weight observer each."""
    return dynamic_linear(w, b, qconfig.weight(), who)


def _qconfig(mod: Module) -> Any:
    return getattr(mod, "qconfig", None) or default_dynamic_qconfig


def step(mode: str, gi: np.ndarray, gh: np.ndarray, state: tuple) -> tuple:
    """The new state from the two projections of one step (module docstring)."""
    if mode == "LSTM":
        _, c, _, h = lstm_update(gh + gi, state[1])
        return h, c
    if mode == "GRU":
        return (gru_update(gi, gh, state[0])[0],)
    return (rnn_update(gh + gi, "tanh" if mode == "RNN_TANH" else "relu"),)


def _check_float_rnn(mod: Module, kinds: tuple) -> None:
    if not isinstance(mod, kinds):
        raise TypeError(f"cannot convert {type(mod).__name__}; expected one of {[k.__name__ for k in kinds]}")
    if not mod.bias:
        raise ValueError(f"{mod._name()}: dynamic quantization of a recurrent layer needs bias=True (as PyTorch's "
                         f"'quantized LSTM requires biases')")
    if getattr(mod, "proj_size", 0):
        raise ValueError(f"{mod._name()}: proj_size={mod.proj_size}: a quantized LSTM with projections is not "
                         f"supported (nor in PyTorch); leave this layer float (qconfig = None)")


class DynamicQuantizedRNNBase(Module):
    """The sequence layers (module docstring), built by ``from_float``: the float layer's arguments (always
    ``bias=True``, ``proj_size=0``), its projections as children ``ih_l0``, ``hh_l0``, ..."""

    _FLOAT = RNNBase
    _MODE = ""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False) -> None:
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.num_layers = self._MODE, input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.bidirectional = batch_first, float(dropout), bidirectional
        self.bias, self.proj_size = True, 0
        self._suffixes = [f"_l{layer}" + ("_reverse" if d else "")
                          for layer in range(num_layers) for d in range(self.num_directions)]
        self.eval()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @classmethod
    def from_float(cls, mod: Module) -> "DynamicQuantizedRNNBase":
        _check_float_rnn(mod, (cls._FLOAT,))
        out = cls(mod.input_size, mod.hidden_size, mod.num_layers, mod.batch_first, mod.dropout, mod.bidirectional)
        qconfig = _qconfig(mod)
        for suffix in out._suffixes:
            for kind in ("ih", "hh"):
                w, b = mod.array(f"weight_{kind}{suffix}"), mod.array(f"bias_{kind}{suffix}")
                setattr(out, f"{kind}{suffix}", _projection(w, b, qconfig, f"{mod._name()}.weight_{kind}{suffix}"))
        return out

    def __call__(self, input: np.ndarray, hx: Any = None, lengths: Any = None) -> tuple:
        return super().__call__(input, hx, lengths)

    def forward(self, input: np.ndarray, hx: Any = None, lengths: Any = None) -> tuple:
        x, layout = sequence_input(self, input, np.dtype(np.float32))         # (T, N, I)
        T, N, _ = x.shape
        states = initial_states(self, hx, layout, N, np.dtype(np.float32))
        valid = valid_steps(self, lengths, layout, T, N)
        if valid is not None:
            x = np.where(valid, x, np.float32(0))                             # padded steps: no range effect
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                out, final = self._sweep(x, states[k], self._suffixes[k], d == 1, valid)
                outs.append(out)
                finals.append(final)
            x = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=-1)
        output = from_seq_first(x, layout)
        hidden = tuple(np.stack([f[i] for f in finals]) for i in range(len(finals[0])))
        hidden = tuple(s[:, 0] if layout == "unbatched" else s for s in hidden)
        return output, (hidden if self.mode == "LSTM" else hidden[0])

    def _sweep(self, x: np.ndarray, state: tuple, suffix: str, reverse: bool,
               valid: np.ndarray | None) -> tuple[np.ndarray, tuple]:
        """One direction of one layer: eq. (1) once, eq. (2) and the update per step."""
        gi = getattr(self, f"ih{suffix}")(x)                                  # (T, N, G): eq. (1)
        hh = getattr(self, f"hh{suffix}")
        out = np.zeros((x.shape[0],) + state[0].shape, np.float32)
        for t in (range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])):
            rows = None if valid is None or valid[t].all() else np.flatnonzero(valid[t, :, 0])
            if rows is None:
                state = step(self.mode, gi[t], hh(state[0]), state)
                out[t] = state[0]
            else:                                                             # the packed path's narrowed batch
                part = tuple(s[rows] for s in state)
                new = step(self.mode, gi[t][rows], hh(part[0]), part)
                state = tuple(s.copy() for s in state)
                for s, s_new in zip(state, new):
                    s[rows] = s_new
                out[t, rows] = new[0]
        return out, state

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError(f"{self._name()} is inference-only")

    def extra_repr(self) -> str:
        dtype = "float16" if isinstance(getattr(self, "ih_l0"), DynamicFloat16Linear) else "qint8"
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, bidirectional={self.bidirectional}, dtype={dtype!r}")


class DynamicQuantizedLSTM(DynamicQuantizedRNNBase):
    """``nnqd.LSTM``: returns ``(output, (h_n, c_n))`` as ``nn.LSTM``."""

    _FLOAT, _MODE = LSTM, "LSTM"


class DynamicQuantizedGRU(DynamicQuantizedRNNBase):
    """``nnqd.GRU``: returns ``(output, h_n)`` as ``nn.GRU``."""

    _FLOAT, _MODE = GRU, "GRU"


class DynamicQuantizedRNNCellBase(Module):
    """The cells, built by ``from_float``: gi = eq. (1) on this step's input, gh = eq. (2), the float update;
    children ``ih`` and ``hh``."""

    _FLOAT: type = Module
    _MODE = ""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.bias = self._MODE, input_size, hidden_size, True
        self.eval()

    @classmethod
    def from_float(cls, mod: Module) -> "DynamicQuantizedRNNCellBase":
        _check_float_rnn(mod, (cls._FLOAT,))
        out = cls(mod.input_size, mod.hidden_size, **cls._extra_args(mod))
        qconfig = _qconfig(mod)
        for kind in ("ih", "hh"):
            w, b = mod.array(f"weight_{kind}"), mod.array(f"bias_{kind}")
            setattr(out, kind, _projection(w, b, qconfig, f"{mod._name()}.weight_{kind}"))
        return out

    @staticmethod
    def _extra_args(mod: Module) -> dict:
        return {}

    def __call__(self, input: np.ndarray, hx: Any = None) -> Any:
        return super().__call__(input, hx)

    def forward(self, input: np.ndarray, hx: Any = None) -> Any:
        x = np.asarray(input)
        if x.ndim != 2 or x.shape[1] != self.input_size or x.dtype != np.float32:
            raise ValueError(f"{self._name()}: expected a float32 input (N, {self.input_size}), got {x.dtype} "
                             f"{x.shape} (the dynamic cells take batched inputs, as PyTorch's)")
        H, N = self.hidden_size, x.shape[0]
        state = (hx if isinstance(hx, tuple) else (hx,)) if hx is not None else None
        if state is None:
            state = tuple(np.zeros((N, H), np.float32) for _ in range(2 if self.mode == "LSTM" else 1))
        if len(state) != (2 if self.mode == "LSTM" else 1) or any(np.shape(s) != (N, H) for s in state):
            raise ValueError(f"{self._name()}: expected hx of {'two arrays' if self.mode == 'LSTM' else 'one array'} "
                             f"(N, hidden_size) = ({N}, {H}), got {[np.shape(s) for s in state]}")
        new = step(self.mode, self.ih(x), self.hh(np.asarray(state[0], np.float32)),
                   tuple(np.asarray(s, np.float32) for s in state))
        return new if self.mode == "LSTM" else new[0]

    def backward(self, grad_output: Any) -> Any:
        raise NotImplementedError(f"{self._name()} is inference-only")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class DynamicQuantizedLSTMCell(DynamicQuantizedRNNCellBase):
    """``nnqd.LSTMCell``: returns ``(h', c')``."""

    _FLOAT, _MODE = LSTMCell, "LSTM"


class DynamicQuantizedGRUCell(DynamicQuantizedRNNCellBase):
    """``nnqd.GRUCell``: returns ``h'``."""

    _FLOAT, _MODE = GRUCell, "GRU"


class DynamicQuantizedRNNCell(DynamicQuantizedRNNCellBase):
    """``nnqd.RNNCell`` (tanh or relu, the float cell's ``nonlinearity``): returns ``h'``."""

    _FLOAT = RNNCell

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"DynamicQuantizedRNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size)
        self.mode, self.nonlinearity = ("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"), nonlinearity

    @staticmethod
    def _extra_args(mod: Module) -> dict:
        return {"nonlinearity": mod.nonlinearity}

