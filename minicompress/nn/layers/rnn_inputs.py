"""The inputs of the recurrent layers (``rnn.py``): argument rules, input layouts, initial states, lengths.

Each function takes the layer as its first argument and raises a ValueError naming the layer
(``module._name()``, PyTorch's repr) and the shapes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._utils import check_array

if TYPE_CHECKING:
    from .rnn import RNNBase


def check_arguments(layer: "RNNBase") -> None:
    """PyTorch's argument rules, with the layer named in the message."""
    owner = f"{type(layer).__name__}({layer.input_size}, {layer.hidden_size})"
    if not (isinstance(layer.bias, bool) and isinstance(layer.batch_first, bool)):
        raise TypeError(f"{owner}: bias and batch_first must be bools, got {layer.bias!r}, {layer.batch_first!r}")
    for name in ("input_size", "hidden_size", "num_layers"):
        value = getattr(layer, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{owner}: {name} must be an int greater than zero, got {value!r}")
    if not 0 <= layer.dropout <= 1:
        raise ValueError(f"{owner}: dropout should be a number in range [0, 1], got {layer.dropout}")
    if layer.proj_size < 0 or (layer.proj_size and layer.proj_size >= layer.hidden_size):
        raise ValueError(f"{owner}: proj_size must be 0 (no projection) or in [1, hidden_size), "
                         f"got {layer.proj_size}")
    if layer.proj_size and layer.mode != "LSTM":
        raise ValueError(f"{owner}: proj_size argument is only supported for LSTM, not RNN or GRU")


def sequence_input(layer: "RNNBase", input: Any, dtype: np.dtype) -> tuple[np.ndarray, str]:
    """``(x, layout)``: the input as a (L, N, input_size) view and how to undo it ('unbatched', 'batch_first',
    'seq_first')."""
    check_array(layer, input, dtype)
    I = layer.input_size
    if input.ndim not in (2, 3) or input.shape[-1] != I or input.shape[int(input.ndim == 3 and layer.batch_first)] == 0:
        axes = "(N, L, {})" if layer.batch_first else "(L, N, {})"
        raise ValueError(f"{layer._name()}: expected input {axes.format(I)} (batch_first={layer.batch_first}) "
                         f"or unbatched (L, {I}), L >= 1, got {input.shape}")
    layout = "unbatched" if input.ndim == 2 else "batch_first" if layer.batch_first else "seq_first"
    return to_seq_first(input, layout), layout

def initial_states(layer: "RNNBase", hx: Any, layout: str, N: int, dtype: np.dtype) -> list[tuple]:
    """Per (layer, direction) the initial state tuple, from ``hx`` or zeros."""
    LD, H, out = layer.num_layers * layer.num_directions, layer.hidden_size, layer.proj_size or layer.hidden_size
    shapes = [("h0", (LD, N, out))] + ([("c0", (LD, N, H))] if layer.mode == "LSTM" else [])
    if hx is None:
        arrays = [np.zeros(shape, dtype) for _, shape in shapes]
    else:
        if layer.mode == "LSTM" and not (isinstance(hx, tuple) and len(hx) == 2):
            raise ValueError(f"{layer._name()}: expected hx = (h0, c0), got {type(hx).__name__}")
        arrays = list(hx) if layer.mode == "LSTM" else [hx]
        for i, (name, shape) in enumerate(shapes):
            want = shape if layout != "unbatched" else (LD, shape[2])
            check_array(layer, arrays[i], dtype)
            if arrays[i].shape != want:
                raise ValueError(f"{layer._name()}: expected {name} of shape {want} (num_layers * num_directions"
                                 f"{', N' if layout != 'unbatched' else ''}, "
                                 f"{'hidden_size' if name == 'c0' or not layer.proj_size else 'proj_size'}) "
                                 f"for input {layout} of N={N}, got {arrays[i].shape}")
            arrays[i] = arrays[i][:, None] if layout == "unbatched" else arrays[i]
    return [tuple(a[k] for a in arrays) for k in range(LD)]

def valid_steps(layer: "RNNBase", lengths: Any, layout: str, T: int, N: int) -> np.ndarray | None:
    """(T, N, 1) True where t < lengths[n], or None without lengths (or when all equal T)."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if layout == "unbatched" or lengths.shape != (N,) or lengths.dtype.kind not in "iu":
        raise ValueError(f"{layer._name()}: lengths must be N={N} integers for a batched input, got "
                         f"{lengths.dtype} of shape {lengths.shape} for a {layout} input")
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"{layer._name()}: lengths must be in [1, L] = [1, {T}], got {lengths.tolist()}")
    if np.all(lengths == T):
        return None
    return (np.arange(T)[:, None] < lengths[None, :])[..., None]


def to_seq_first(x: np.ndarray, layout: str) -> np.ndarray:
    """(T, N, F) view: unbatched (T, F) -> (T, 1, F); batch-first (N, T, F) -> (T, N, F)."""
    if layout == "unbatched":
        return x[:, None]
    return x.transpose(1, 0, 2) if layout == "batch_first" else x


def from_seq_first(x: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of ``to_seq_first``."""
    if layout == "unbatched":
        return x[:, 0]
    return x.transpose(1, 0, 2) if layout == "batch_first" else x
