"""Small reference networks for the bundled 8x8 digits (used by the CLI, tests and benchmarks)."""
from __future__ import annotations

import numpy as np

from .. import nn


def digits_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 64, num_classes: int = 10,
               in_shape: tuple[int, int, int] = (1, 8, 8),
               rng: np.random.Generator | None = None) -> nn.Sequential:
    """Conv-BN-ReLU x2, max-pool, then a two-layer classifier; input (N, C, H, W), default (N, 1, 8, 8).

    conv(C->c1, 3x3, pad 1) -> BN -> ReLU -> conv(c1->c2, 3x3, pad 1) -> BN -> ReLU -> maxpool 2
    -> flatten (c2 * H/2 * W/2) -> linear(hidden) -> ReLU -> linear(num_classes)
    """
    c1, c2 = channels
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1, rng=rng), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, rng=rng), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(c2 * (h // 2) * (w // 2), hidden, rng=rng), nn.ReLU(),
        nn.Linear(hidden, num_classes, rng=rng),
    )


def digits_mlp(hidden: tuple[int, ...] = (128,), num_classes: int = 10,
               rng: np.random.Generator | None = None) -> nn.Sequential:
    """Flatten (64) -> [Linear -> BatchNorm1d -> ReLU] per hidden width -> Linear(num_classes)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 64
    for h in hidden:
        layers += [nn.Linear(width, h, rng=rng), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes, rng=rng))
    return nn.Sequential(*layers)


class FinalHidden(nn.Module):
    """The last layer's final hidden state of a recurrent layer as features: from ``(output, h_n)`` (LSTM:
    ``(output, (h_n, c_n))``), h_n of shape (L * D, N, H), return [h_n[L*D - D] | ... | h_n[L*D - 1]]: (N, D * H).
    Backward gives the recurrent layer ``(None, d h_n)`` with d h_n zero but for those rows."""

    def __init__(self, directions: int = 1) -> None:
        super().__init__()
        self.directions = directions

    def forward(self, rnn_out: tuple) -> np.ndarray:
        if not (isinstance(rnn_out, tuple) and len(rnn_out) == 2):
            raise TypeError(f"{self._name()}: expected a recurrent layer's (output, h_n), got {type(rnn_out).__name__}")
        state = rnn_out[1]
        lstm = isinstance(state, tuple)
        h_n = state[0] if lstm else state
        if h_n.ndim != 3 or h_n.shape[0] % self.directions:
            raise ValueError(f"{self._name()}: expected h_n (num_layers * {self.directions}, N, H), got {h_n.shape}")
        self._save_for_backward((h_n.shape, h_n.dtype, lstm))
        last = h_n[h_n.shape[0] - self.directions:]                   # (D, N, H)
        return np.concatenate(list(last), axis=-1)

    def backward(self, grad_output: np.ndarray) -> tuple:
        shape, dtype, lstm = self._saved()
        d_h = np.zeros(shape, dtype)
        H = shape[2]
        for d in range(self.directions):
            d_h[shape[0] - self.directions + d] = grad_output[:, d * H:(d + 1) * H]
        return None, ((d_h, None) if lstm else d_h)

    def extra_repr(self) -> str:
        return f"directions={self.directions}"


class DigitsRNN(nn.Module):
    """The digits as sequences: each 8x8 image is 8 time steps (its rows) of 8 pixels.

    (N, 1, 8, 8) -> rows: Flatten(1, 2) -> (N, 8, 8) -> rnn: GRU / LSTM / RNN (batch_first)
    -> final: FinalHidden -> (N, D * hidden) -> fc: Linear -> (N, num_classes)

    Every step is a child module call, so hooks, taps (``'final'`` is the final hidden state) and the
    dataflow graph see them; backward passes the recurrent layer's d input (not its d h0) on.
    """

    def __init__(self, mode: str = "GRU", hidden: int = 64, num_layers: int = 1, bidirectional: bool = False,
                 num_classes: int = 10, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        layers = {"GRU": nn.GRU, "LSTM": nn.LSTM, "RNN": nn.RNN}
        if mode not in layers:
            raise ValueError(f"DigitsRNN: mode must be one of {sorted(layers)}, got {mode!r}")
        self.mode, self.hidden, self.num_layers, self.bidirectional = mode, hidden, num_layers, bidirectional
        self.num_classes = num_classes
        D = 2 if bidirectional else 1
        self.rows = nn.Flatten(1, 2)
        self.rnn = layers[mode](8, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
                                rng=rng)
        self.final = FinalHidden(D)
        self.fc = nn.Linear(D * hidden, num_classes, rng=rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fc(self.final(self.rnn(self.rows(x))))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        d_seq, _ = self.rnn.backward(self.final.backward(self.fc.backward(grad_output)))
        return self.rows.backward(d_seq)


def digits_rnn(mode: str = "GRU", hidden: int = 64, num_layers: int = 1, bidirectional: bool = False,
               num_classes: int = 10, rng: np.random.Generator | None = None) -> DigitsRNN:
    """``DigitsRNN(...)``: a small recurrent classifier of the digits read row by row."""
    return DigitsRNN(mode, hidden, num_layers, bidirectional, num_classes, rng)
