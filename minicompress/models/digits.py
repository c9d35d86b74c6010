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
