"""``fuse_model()`` support for the reference models: torchvision's ``_fuse_modules`` and ``_replace_relu``."""
from __future__ import annotations

from typing import Any, Sequence

from .. import nn
from ..quant import fuse_modules, fuse_modules_qat

__all__ = ["fuse", "replace_relu"]


def fuse(module: nn.Module, groups: Sequence[Any], is_qat: bool | None) -> None:
    """Fuse ``groups`` of ``module``'s children in place: for ``prepare_qat`` when ``is_qat`` (default: the
    module is training), else for ``prepare`` (eval, BatchNorm folded), as torchvision's ``_fuse_modules``."""
    is_qat = module.training if is_qat is None else is_qat
    (fuse_modules_qat if is_qat else fuse_modules)(module, groups, inplace=True)


def replace_relu(model: nn.Module) -> nn.Module:
    """Every child of exact type ReLU or ReLU6 becomes ``ReLU()``, in place (torchvision's ``_replace_relu``:
    its quantizable MobileNetV2 uses ReLU so that conv-bn-relu can be fused; this changes the float function
    where an activation exceeded 6). Returns ``model``."""
    for name, child in list(model.named_children()):
        replace_relu(child)
        if type(child) in (nn.ReLU, nn.ReLU6):
            model.set_submodule(name, nn.ReLU())
    return model
