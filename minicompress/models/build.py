"""One entry point for the architectures a recipe can name: ``build(arch, num_classes, in_shape, ...)``."""
from __future__ import annotations

from typing import Any

from .. import nn
from .digits import digits_cnn, digits_mlp
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet20, resnet32, resnet34, resnet50, resnet56
from .vit import VisionTransformer

__all__ = ["ARCHITECTURES", "RESNET_DEPTHS", "build"]

ARCHITECTURES = ("cnn", "mlp", "resnet", "mobilenet_v2", "vit")
RESNET_DEPTHS = {20: resnet20, 32: resnet32, 56: resnet56, 18: resnet18, 34: resnet34, 50: resnet50}


def build(arch: str, num_classes: int, in_shape: tuple[int, int, int], *, channels: tuple[int, int] = (16, 32),
          hidden: int = 64, depth: int = 20, width_mult: float = 1.0, patch_size: int = 2, num_layers: int = 4,
          num_heads: int = 4, hidden_dim: int = 64, mlp_dim: int = 128, rng: Any = None) -> nn.Module:
    """A model for (C, H, W) = ``in_shape`` inputs:

    'cnn'           ``digits_cnn(channels, hidden)``
    'mlp'           ``digits_mlp((hidden,))`` (flattened 1 x 8 x 8 inputs)
    'resnet'        depth 20 / 32 / 56: CIFAR-style; 18 / 34 / 50: torchvision's with the small-input stem
    'mobilenet_v2'  ``width_mult``, stride-1 stem
    'vit'           ``VisionTransformer(H, patch_size, num_layers, num_heads, hidden_dim, mlp_dim)`` (square H = W)
    """
    c, h, w = in_shape
    if arch == "cnn":
        return digits_cnn(tuple(channels), hidden, num_classes, in_shape=in_shape, rng=rng)
    if arch == "mlp":
        if tuple(in_shape) != (1, 8, 8):
            raise ValueError(f"arch 'mlp' takes 1 x 8 x 8 images (64 inputs), got {tuple(in_shape)}")
        return digits_mlp((hidden,), num_classes, rng=rng)
    if arch == "resnet":
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"resnet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        extra = {} if depth in (20, 32, 56) else {"small_input": True}
        return RESNET_DEPTHS[depth](num_classes=num_classes, in_channels=c, rng=rng, **extra)
    if arch == "mobilenet_v2":
        return mobilenet_v2(num_classes=num_classes, width_mult=width_mult, in_channels=c, small_input=True, rng=rng)
    if arch == "vit":
        if h != w or h % patch_size:
            raise ValueError(f"arch 'vit' needs square images divisible by patch_size={patch_size}, got {h} x {w}")
        if hidden_dim % num_heads:
            raise ValueError(f"vit hidden_dim={hidden_dim} must be divisible by num_heads={num_heads}")
        return VisionTransformer(h, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes=num_classes,
                                 in_channels=c, rng=rng)
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHITECTURES}")
