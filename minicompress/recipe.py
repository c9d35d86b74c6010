"""Compression recipes: TOML files validated against the defaults in ``recipes/default.toml``.

A recipe only needs the keys it changes; every other value comes from the default recipe. Unknown
keys, wrongly typed values and values out of range are errors naming the key
(``prune.sparsity: expected a number, got 'high'``), raised when the recipe is loaded, before any
training: every number has a range (``_CHECKS``; sizes are capped so that a typo cannot ask for a
954 GiB layer), floats must be finite.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_RECIPE = Path(__file__).with_name("recipes") / "default.toml"

MAX_WIDTH = 4096          # channels of a conv layer
MAX_HIDDEN = 65536        # units of the hidden Linear
MAX_EPOCHS = 100_000


def _width(limit: int) -> tuple:
    return (lambda v: all(1 <= c <= limit for c in v) if isinstance(v, list) else 1 <= v <= limit,
            f"integers in [1, {limit}]")


_LR = (lambda v: 0 < v <= 10, "a number in (0, 10]")
_ARCH = (lambda v: v in ("cnn", "mlp", "resnet", "mobilenet_v2", "vit"),
         "one of 'cnn', 'mlp', 'resnet', 'mobilenet_v2', 'vit'")
_DEPTH = (lambda v: v in (18, 20, 32, 34, 50, 56), "one of 18, 20, 32, 34, 50, 56")
_WIDTH_MULT = (lambda v: 0.05 <= v <= 4, "a number in [0.05, 4]")
_EPOCHS = (lambda v: 0 <= v <= MAX_EPOCHS, f"an integer in [0, {MAX_EPOCHS}]")
_POSITIVE_EPOCHS = (lambda v: 1 <= v <= MAX_EPOCHS, f"an integer in [1, {MAX_EPOCHS}]")

# value checks beyond the type of the default: key -> (predicate, description)
_CHECKS = {
    "seed": (lambda v: 0 <= v < 2 ** 63, "an integer in [0, 2**63)"),
    "data.batch_size": (lambda v: 1 <= v <= 2 ** 20, "an integer in [1, 1048576]"),
    "teacher.channels": _width(MAX_WIDTH),
    "teacher.hidden": _width(MAX_HIDDEN),
    "teacher.epochs": _POSITIVE_EPOCHS,
    "teacher.lr": _LR,
    "student.channels": _width(MAX_WIDTH),
    "student.hidden": _width(MAX_HIDDEN),
    "student.epochs": _EPOCHS,
    "student.lr": _LR,
    "student.temperature": (lambda v: 0 < v <= 1000, "a number in (0, 1000]"),
    "student.alpha": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "teacher.arch": _ARCH,
    "student.arch": _ARCH,
    "teacher.resnet.depth": _DEPTH,
    "student.resnet.depth": _DEPTH,
    "teacher.mobilenet_v2.width_mult": _WIDTH_MULT,
    "student.mobilenet_v2.width_mult": _WIDTH_MULT,
    **{f"{stage}.vit.{key}": _width(limit) for stage in ("teacher", "student")
       for key, limit in (("patch_size", 64), ("num_layers", 64), ("num_heads", 64), ("hidden_dim", MAX_WIDTH),
                          ("mlp_dim", MAX_HIDDEN))},
    "prune.channel_amount": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "prune.round_to": (lambda v: 1 <= v <= MAX_WIDTH, f"an integer in [1, {MAX_WIDTH}]"),
    "prune.heads": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "prune.sparsity": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "prune.importance": (lambda v: v in ("l1", "l2", "bn_scale"), "one of 'l1', 'l2', 'bn_scale'"),
    "prune.epochs": _EPOCHS,
    "prune.lr": _LR,
    "quant.mode": (lambda v: v in ("ptq", "qat", "dynamic"), "'ptq', 'qat' or 'dynamic'"),
    "quant.backend": (lambda v: v in ("fbgemm", "x86", "qnnpack"), "'fbgemm', 'x86' or 'qnnpack'"),
    "quant.calibration_batches": (lambda v: 1 <= v <= 1_000_000, "an integer in [1, 1000000]"),
    "quant.qat_epochs": _POSITIVE_EPOCHS,
    "quant.qat_lr": _LR,
}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


def default_recipe() -> dict:
    with open(DEFAULT_RECIPE, "rb") as f:
        return tomllib.load(f)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a table"


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, list) and len(value) == len(default) and all(
            _same_type(default[0], v) for v in value)
    return type(default) is type(value)


def _merge(defaults: dict, given: dict, prefix: str, where: str) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise RecipeError(f"{where}: unknown key {name!r} (known here: {known})")
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise RecipeError(f"{where}: {name} must be a table, got {_type_name(value)}")
            out[key] = _merge(default, value, name + ".", where)
            continue
        if not _same_type(default, value):
            raise RecipeError(f"{where}: {name}: expected {_type_name(default)}"
                              f"{f' of {len(default)} items' if isinstance(default, list) else ''}, "
                              f"got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{where}: {name}: expected a finite number, got {value!r}")
        check = _CHECKS.get(name)
        if check is not None and not check[0](value):
            raise RecipeError(f"{where}: {name}: expected {check[1]}, got {value!r}")
        out[key] = float(value) if isinstance(default, float) else value
    return out


def validate_recipe(recipe: dict, where: str = "recipe") -> dict:
    """``recipe`` (a full or partial recipe dict) checked key by key and merged into the defaults; then the
    rules between keys (a ViT student is quantized dynamically; static int8 needs conv / Linear models)."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"{where}: expected a table of recipe keys, got {type(recipe).__name__}")
    merged = _merge(default_recipe(), recipe, "", where)
    final = merged["student"]["arch"] if merged["student"]["enabled"] else merged["teacher"]["arch"]
    if merged["quant"]["enabled"] and final == "vit" and merged["quant"]["mode"] != "dynamic":
        raise RecipeError(f"{where}: quant.mode: a 'vit' model is quantized with mode = 'dynamic' (its attention, "
                          f"LayerNorm and GELU stay float), got {merged['quant']['mode']!r}")
    return merged


def load_recipe(path: str | Path | None = None) -> dict:
    """The default recipe, updated with the TOML file at ``path`` (validated key by key)."""
    if path is None:
        return default_recipe()
    return validate_recipe(read_toml(path, "recipe"), str(path))


def read_toml(path: str | Path, kind: str) -> dict:
    """The TOML file at ``path`` as a dict; a RecipeError naming the ``kind`` of file and the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{kind} {path} is a directory, not a TOML file")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"{kind} file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (TOML must be UTF-8): {exc.reason} at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
