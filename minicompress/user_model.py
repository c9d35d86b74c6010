"""The user's own model as the pipeline's teacher: ``minicompress run --model FILE [--arch NAME]``.

FILE is one of

    an ONNX model (.onnx)                   ``io.load_onnx`` (the [onnx] extra)
    a minicompress model file               ``io.load`` (any file ``io.save`` wrote)
    a state dict (.pt / .pth / .npz / .safetensors) with ``--arch``
                                            ``models.build`` + ``load_state_dict(strict=True)``

For a state dict, ``--arch`` is a recipe arch ('cnn', 'mlp', 'mobilenet_v2', 'vit') or 'resnetNN'
(NN one of 18 / 34 / 50 / 20 / 32 / 56); the recipe's teacher table gives the other arguments
(channels, hidden, width_mult, the vit table). The number of classes is read from the state dict (the
entries whose shape follows num_classes); a ResNet-18/34/50 takes torchvision's 7x7 stem or the
small-input 3x3 stem from its ``conv1.weight``. The model must accept the data's images and give at
least as many logits as the data has classes; both are checked before anything runs.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import io, models, nn
from .io.model_file import ARCHITECTURE
from .models.build import RESNET_DEPTHS

STATE_DICT_SUFFIXES = (".pt", ".pth", ".npz", ".safetensors")


def is_model_file(path: Path) -> bool:
    """A zip holding a minicompress architecture (what ``io.save`` writes), not a plain ``.npz`` state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return ARCHITECTURE in archive.namelist()


def _arch_options(arch: str, cfg: dict) -> tuple[str, dict]:
    """(models.build arch, its keyword arguments) for ``--arch`` and the recipe's teacher table."""
    options = {"channels": tuple(cfg["channels"]), "hidden": cfg["hidden"], "depth": cfg["resnet"]["depth"],
               "width_mult": cfg["mobilenet_v2"]["width_mult"], **cfg["vit"]}
    if arch.startswith("resnet") and arch[len("resnet"):].isdigit():
        options["depth"] = int(arch[len("resnet"):])
        arch = "resnet"
    if arch not in models.ARCHITECTURES:
        raise ValueError(f"--arch {arch!r}: expected one of {models.ARCHITECTURES[:2]}, resnet18 / 34 / 50 / 20 / 32 / "
                         f"56, {models.ARCHITECTURES[3:]}")
    return arch, options


def _build(arch: str, options: dict, num_classes: int, in_shape: tuple, state: dict) -> nn.Module:
    if arch == "resnet" and options["depth"] in (18, 34, 50) and np.shape(state.get("conv1.weight"))[-1:] == (7,):
        return RESNET_DEPTHS[options["depth"]](num_classes=num_classes, in_channels=in_shape[0])
    return models.build(arch, num_classes, in_shape, **options)


def _num_classes(arch: str, options: dict, in_shape: tuple, state: dict, path: Path) -> int:
    """The size the state dict gives the entries that follow num_classes (found by building with 2 and 3)."""
    two, three = (_build(arch, options, n, in_shape, state).state_dict() for n in (2, 3))
    for key in two:
        if np.shape(two[key]) != np.shape(three[key]) and key in state:
            axis = next(a for a, (p, q) in enumerate(zip(np.shape(two[key]), np.shape(three[key]))) if p != q)
            return int(np.shape(state[key])[axis])
    raise ValueError(f"{path}: holds none of the classifier entries of arch {arch!r} "
                     f"({[k for k in two if np.shape(two[k]) != np.shape(three[k])]})")


def load_user_model(path: str, arch: str | None, cfg: dict, data: tuple) -> nn.Module:
    """The model in ``path`` (module docstring), in eval mode, checked against ``data``."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--model {path}: no such file")
    in_shape = tuple(data[0].shape[1:])
    if file.suffix == ".onnx":
        model = io.load_onnx(file)
    elif is_model_file(file):
        model = io.load(file)
    elif file.suffix in STATE_DICT_SUFFIXES:
        if arch is None:
            raise ValueError(f"--model {path} is a state dict: give its architecture with --arch "
                             f"(cnn, mlp, resnet18, mobilenet_v2, vit, ...)")
        state = io.load_state_dict_file(file)
        name, options = _arch_options(arch, cfg)
        model = _build(name, options, _num_classes(name, options, in_shape, state, file), in_shape, state)
        try:
            model.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"--model {path} does not fit --arch {arch} on {in_shape} images: {exc}") from None
    else:
        raise ValueError(f"--model {path}: expected an .onnx file, a minicompress model file or a state dict "
                         f"({', '.join(STATE_DICT_SUFFIXES)})")
    return check_against_data(model.eval(), data, path)


def check_against_data(model: nn.Module, data: tuple, path: Any) -> nn.Module:
    """The model must take the data's (C, H, W) images and give (N, K) logits with K >= the data's classes."""
    x = data[0][:2]
    classes = int(max(data[1].max(), data[3].max()) + 1)
    try:
        with nn.no_grad():
            y = model(x)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"--model {path} does not accept the data's images of shape {tuple(x.shape[1:])} "
                         f"(batch {tuple(x.shape)}): {exc}") from None
    if not isinstance(y, np.ndarray) or y.ndim != 2 or y.shape[1] < classes:
        raise ValueError(f"--model {path} gives outputs of shape {np.shape(y)} for {tuple(x.shape)} images; the data "
                         f"needs (N, K) logits with K >= its {classes} classes")
    return model
