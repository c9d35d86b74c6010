"""A recipe written back as TOML, so that a trial's ``recipe.toml`` reruns it: ``minicompress run --recipe``.

Recipes hold tables of booleans, integers, finite floats, strings and lists of those, which is all this
writer knows; ``tomllib.loads(recipe_toml(r)) == r`` for every recipe (tests/sweep/test_spec.py).
"""
from __future__ import annotations

import json
from typing import Any


def toml_value(value: Any) -> str:
    """One TOML value: ``true`` / ``false``, an integer, a float (``repr``, always with a point or exponent),
    a string (JSON's escapes are TOML's basic-string escapes), or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a recipe value")


def recipe_toml(recipe: dict, prefix: str = "") -> str:
    """``recipe`` as TOML text: its values, then each table as ``[prefix.name]`` (recursively)."""
    lines = [f"{key} = {toml_value(value)}" for key, value in recipe.items() if not isinstance(value, dict)]
    for key, value in recipe.items():
        if isinstance(value, dict):
            lines += ["", f"[{prefix}{key}]", recipe_toml(value, f"{prefix}{key}.")]
    return "\n".join(lines).replace("\n\n\n", "\n\n").strip("\n") + "\n"
