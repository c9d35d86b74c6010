"""The recurrent layers' common vocabulary: one time step of each mode, its weights, its initialisation.

A *state* is a tuple: ``(h,)`` for RNN and GRU, ``(h, c)`` for LSTM. ``step_forward`` and
``step_backward`` dispatch on PyTorch's mode names (``'RNN_TANH'``, ``'RNN_RELU'``, ``'LSTM'``,
``'GRU'``) to the cell pairs of ``functional.rnn``, so that the sequence layers (``rnn.py``) and the
cells (``rnn_cell.py``) run the same step.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..functional.rnn import (gru_cell_backward, gru_cell_forward, lstm_cell_backward, lstm_cell_forward,
                              rnn_cell_backward, rnn_cell_forward)
from ..module import Module

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}   # G = GATES[mode] * hidden_size


class Weights(NamedTuple):
    """The arrays one direction of one layer (or a cell) computes with, as read at forward time."""
    w_ih: np.ndarray            # (G, I)
    w_hh: np.ndarray            # (G, P or H)
    b_ih: np.ndarray | None     # (G,)
    b_hh: np.ndarray | None     # (G,)
    w_hr: np.ndarray | None     # (P, H), LSTM with proj_size > 0


def read_weights(module: Module, names: dict[str, str]) -> Weights:
    """Each tensor through ``module.array`` (once per forward), so pruning and QAT parametrizations apply."""
    return Weights(*(module.array(names[role]) if role in names else None
                     for role in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")))


def step_forward(mode: str, gi: np.ndarray, state: tuple, w: Weights) -> tuple[tuple, Any]:
    """One time step from the input projection ``gi`` (eq. 0 of ``functional.rnn``): ``(new state, cache)``."""
    if mode == "LSTM":
        h, c, cache = lstm_cell_forward(gi, state[0], state[1], w.w_hh, w.b_hh, w.w_hr)
        return (h, c), cache
    if mode == "GRU":
        h, cache = gru_cell_forward(gi, state[0], w.w_hh, w.b_hh)
        return (h,), cache
    h, cache = rnn_cell_forward(gi, state[0], w.w_hh, w.b_hh, "tanh" if mode == "RNN_TANH" else "relu")
    return (h,), cache


def step_backward(mode: str, d_state: tuple, cache: Any) -> tuple[np.ndarray, np.ndarray, tuple]:
    """``(d gi, d gh, d previous state)`` from the gradient of the new state."""
    if mode == "LSTM":
        dgi, dgh, dh, dc = lstm_cell_backward(d_state[0], d_state[1], cache)
        return dgi, dgh, (dh, dc)
    if mode == "GRU":
        dgi, dgh, dh = gru_cell_backward(d_state[0], cache)
    else:
        dgi, dgh, dh = rnn_cell_backward(d_state[0], cache)
    return dgi, dgh, (dh,)


def projection_input(cache: Any) -> np.ndarray:
    """m = o * tanh(c_t) of an LSTM step (eq. 4 of ``functional.rnn``): dW_hr = sum_t d h_t^T m_t."""
    return cache.m


def previous_hidden(cache: Any) -> np.ndarray:
    """h_t-1 of a step (every cache keeps it): dW_hh = sum_t d gh_t^T h_t-1."""
    return cache.h
