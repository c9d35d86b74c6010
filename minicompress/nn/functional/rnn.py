"""One time step of the recurrent cells as forward/backward pairs: Elman RNN, LSTM, GRU.

Every cell takes the *input projection* of its step already computed,

    gi = x W_ih^T + b_ih                                   (0)  x: (N, I)  W_ih: (G, I)  ->  gi: (N, G)

so that a layer can project a whole sequence with one GEMM before its time loop. The backward
returns d gi and d gh, the gradients of the input and the hidden projection (gh = h W_hh^T + b_hh),
so that a layer forms the parameter gradients after its loop with one GEMM each:

    dW_ih = sum_t d gi_t^T x_t     db_ih = sum_t,n d gi_t     dx_t = d gi_t W_ih
    dW_hh = sum_t d gh_t^T h_t-1   db_hh = sum_t,n d gh_t

The cell backward does the part that cannot wait: the gradient of the previous state, which the
step before needs. Gate orders and formulas are PyTorch's (``torch.nn.RNN``, ``LSTM``, ``GRU``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .activation import sigmoid_forward


class RNNCache(NamedTuple):
    h: np.ndarray             # the previous state h_t-1 (N, H)
    h_new: np.ndarray         # h_t (N, H)
    w_hh: np.ndarray
    nonlinearity: str


class LSTMCache(NamedTuple):
    h: np.ndarray             # h_t-1 (N, P) (P = proj_size, else H)
    c: np.ndarray             # c_t-1 (N, H)
    gates: np.ndarray         # i, f, g, o after their activations (N, 4H)
    tanh_c: np.ndarray        # tanh(c_t) (N, H)
    m: np.ndarray             # o * tanh(c_t), the input of the projection (N, H)
    w_hh: np.ndarray
    w_hr: np.ndarray | None


class GRUCache(NamedTuple):
    h: np.ndarray             # h_t-1 (N, H)
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    gh_n: np.ndarray          # h_t-1 W_hn^T + b_hn, the term the reset gate scales (N, H)
    w_hh: np.ndarray


def rnn_cell_forward(gi: np.ndarray, h: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray | None,
                     nonlinearity: str = "tanh") -> tuple[np.ndarray, RNNCache]:
    """h_t = act(gi + h_t-1 W_hh^T + b_hh),   act = tanh or relu          (1)

    gi: (N, H) from eq. (0)   h: (N, H)   W_hh: (H, H)   b_hh: (H,) or None   ->   h_t: (N, H)
    """
    a = gi + h @ w_hh.T
    if b_hh is not None:
        a += b_hh
    h_new = rnn_update(a, nonlinearity)
    return h_new, RNNCache(h, h_new, w_hh, nonlinearity)


def rnn_update(a: np.ndarray, nonlinearity: str = "tanh") -> np.ndarray:
    """h_t = act(a),  a = gi + gh: the state update of eq. (1) from the two projections' sum."""
    if nonlinearity == "tanh":
        return np.tanh(a)
    if nonlinearity == "relu":
        return np.maximum(a, 0)
    raise ValueError(f"rnn_cell: unknown nonlinearity {nonlinearity!r}, expected 'tanh' or 'relu'")


def rnn_cell_backward(dh_new: np.ndarray, cache: RNNCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d a = d h_t * act'(a)  (tanh: 1 - h_t^2;  relu: [h_t > 0]);   d gi = d gh = d a;   d h_t-1 = d a W_hh

    Returns ``(d gi, d gh, d h_t-1)`` (d gi and d gh are the same array).
    """
    if cache.nonlinearity == "tanh":
        da = dh_new * (1 - cache.h_new * cache.h_new)
    else:
        da = dh_new * (cache.h_new > 0)
    return da, da, da @ cache.w_hh


def lstm_cell_forward(gi: np.ndarray, h: np.ndarray, c: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray | None,
                      w_hr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, LSTMCache]:
    """PyTorch's LSTM step, gates in the order i, f, g, o:

        a = gi + h_t-1 W_hh^T + b_hh                                  (2)  (N, 4H) = [a_i | a_f | a_g | a_o]
        i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
        c_t = f * c_t-1 + i * g                                       (3)
        m = o * tanh(c_t)                                             (4)
        h_t = m W_hr^T  with a projection (proj_size P > 0), else h_t = m

    gi: (N, 4H)   h: (N, P or H)   c: (N, H)   W_hh: (4H, P or H)   W_hr: (P, H) or None
    ->  h_t: (N, P or H),  c_t: (N, H)
    """
    a = gi + h @ w_hh.T
    if b_hh is not None:
        a += b_hh
    gates, c_new, tanh_c, m = lstm_update(a, c)
    h_new = m if w_hr is None else m @ w_hr.T
    return h_new, c_new, LSTMCache(h, c, gates, tanh_c, m, w_hh, w_hr)


def lstm_update(a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eqs. (3)-(4) from the gate pre-activations a = gi + gh (N, 4H) and c_t-1 (N, H):
    ``(gates [i | f | g | o] after their activations, c_t, tanh(c_t), m = o * tanh(c_t))``."""
    H = c.shape[-1]
    gates = np.empty_like(a)
    gates[:, :2 * H] = sigmoid_forward(a[:, :2 * H])[0]
    gates[:, 2 * H:3 * H] = np.tanh(a[:, 2 * H:3 * H])
    gates[:, 3 * H:] = sigmoid_forward(a[:, 3 * H:])[0]
    i, f, g, o = np.split(gates, 4, axis=1)
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    return gates, c_new, tanh_c, o * tanh_c


def lstm_cell_backward(dh_new: np.ndarray, dc_new: np.ndarray,
                       cache: LSTMCache) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eqs. (2)-(4) in reverse, from d h_t and d c_t (the gradients reaching the step's outputs):

        d m = d h_t W_hr  (projection), else d h_t;            dW_hr = d h_t^T m  (the caller sums it)
        d c = d c_t + d m * o * (1 - tanh(c_t)^2)
        d i = d c * g   d f = d c * c_t-1   d g = d c * i   d o = d m * tanh(c_t)
        d a = [d i * i(1 - i) | d f * f(1 - f) | d g * (1 - g^2) | d o * o(1 - o)]
        d gi = d gh = d a      d h_t-1 = d a W_hh      d c_t-1 = d c * f

    Returns ``(d gi, d gh, d h_t-1, d c_t-1)`` (d gi and d gh are the same array).
    """
    i, f, g, o = np.split(cache.gates, 4, axis=1)
    dm = dh_new if cache.w_hr is None else dh_new @ cache.w_hr
    dc = dc_new + dm * o * (1 - cache.tanh_c * cache.tanh_c)
    da = np.concatenate([dc * g * i * (1 - i),
                         dc * cache.c * f * (1 - f),
                         dc * i * (1 - g * g),
                         dm * cache.tanh_c * o * (1 - o)], axis=1)
    return da, da, da @ cache.w_hh, dc * f


def gru_cell_forward(gi: np.ndarray, h: np.ndarray, w_hh: np.ndarray,
                     b_hh: np.ndarray | None) -> tuple[np.ndarray, GRUCache]:
    """PyTorch's GRU step, gates in the order r, z, n:

        gh = h_t-1 W_hh^T + b_hh                                      (5)  (N, 3H) = [gh_r | gh_z | gh_n]
        r = sigmoid(gi_r + gh_r)    z = sigmoid(gi_z + gh_z)
        n = tanh(gi_n + r * gh_n)                                     (6)  (b_hn sits inside r * (...))
        h_t = (1 - z) * n + z * h_t-1                                 (7)

    gi: (N, 3H)   h: (N, H)   W_hh: (3H, H)   b_hh: (3H,) or None   ->   h_t: (N, H)
    """
    gh = h @ w_hh.T
    if b_hh is not None:
        gh += b_hh
    h_new, r, z, n = gru_update(gi, gh, h)
    return h_new, GRUCache(h, r, z, n, np.split(gh, 3, axis=1)[2], w_hh)


def gru_update(gi: np.ndarray, gh: np.ndarray,
               h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eqs. (6)-(7) from the two projections gi, gh (N, 3H) and h_t-1: ``(h_t, r, z, n)``."""
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)
    gh_r, gh_z, gh_n = np.split(gh, 3, axis=1)
    r = sigmoid_forward(gi_r + gh_r)[0]
    z = sigmoid_forward(gi_z + gh_z)[0]
    n = np.tanh(gi_n + r * gh_n)
    return (1 - z) * n + z * h, r, z, n


def gru_cell_backward(dh_new: np.ndarray, cache: GRUCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eqs. (5)-(7) in reverse:

        d n = d h_t (1 - z)    d z = d h_t (h_t-1 - n)     d a_n = d n (1 - n^2)
        d r = d a_n * gh_n     d a_r = d r r(1 - r)        d a_z = d z z(1 - z)
        d gi = [d a_r | d a_z | d a_n]      d gh = [d a_r | d a_z | d a_n * r]
        d h_t-1 = d h_t * z + d gh W_hh

    Returns ``(d gi, d gh, d h_t-1)``.
    """
    h, r, z, n, gh_n, w_hh = cache
    da_n = dh_new * (1 - z) * (1 - n * n)
    da_r = da_n * gh_n * r * (1 - r)
    da_z = dh_new * (h - n) * z * (1 - z)
    dgi = np.concatenate([da_r, da_z, da_n], axis=1)
    dgh = np.concatenate([da_r, da_z, da_n * r], axis=1)
    return dgi, dgh, dh_new * z + dgh @ w_hh
