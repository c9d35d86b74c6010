"""Compression recipes: TOML files validated against the defaults in ``recipes/default.toml``.

A recipe only needs the keys it changes; every other value comes from the default recipe. Unknown
keys and wrongly typed values are errors naming the key (``prune.sparsity: expected a number, got 'high'``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_RECIPE = Path(__file__).with_name("recipes") / "default.toml"

# value checks beyond the type of the default: key -> (predicate, description)
_CHECKS = {
    "data.batch_size": (lambda v: v >= 1, "a positive integer"),
    "teacher.epochs": (lambda v: v >= 1, "a positive integer"),
    "student.epochs": (lambda v: v >= 0, "a non-negative integer"),
    "student.temperature": (lambda v: v > 0, "a number > 0"),
    "student.alpha": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "prune.channel_amount": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "prune.sparsity": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "prune.importance": (lambda v: v in ("l1", "l2", "bn_scale"), "one of 'l1', 'l2', 'bn_scale'"),
    "quant.mode": (lambda v: v in ("ptq", "qat"), "'ptq' or 'qat'"),
    "quant.backend": (lambda v: v in ("fbgemm", "x86", "qnnpack"), "'fbgemm', 'x86' or 'qnnpack'"),
    "quant.calibration_batches": (lambda v: v >= 1, "a positive integer"),
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
        check = _CHECKS.get(name)
        if check is not None and not check[0](value):
            raise RecipeError(f"{where}: {name}: expected {check[1]}, got {value!r}")
        out[key] = float(value) if isinstance(default, float) else value
    return out


def load_recipe(path: str | Path | None = None) -> dict:
    """The default recipe, updated with the TOML file at ``path`` (validated key by key)."""
    defaults = default_recipe()
    if path is None:
        return defaults
    path = Path(path)
    try:
        with open(path, "rb") as f:
            given = tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    return _merge(defaults, given, "", str(path))
