"""Sweep files: a base recipe and the recipe keys to vary, expanded into the recipes of the trials.

A sweep file (TOML) holds an optional ``base = "recipe.toml"`` (relative to the sweep file; else the
default recipe) and exactly one of

- ``[grid]``: dotted recipe keys mapping to lists of values; the trials are the product of the lists,
  in the order the keys are written (the last key varies fastest);
- ``[random]``: ``trials = N``, ``seed = S``, and dotted recipe keys mapping to a list (one value drawn
  uniformly) or to a range ``{ low = a, high = b, log = false }``: a float drawn uniformly from [a, b)
  (``log = true``: exp of a uniform draw from [ln a, ln b), a > 0), an integer key drawn uniformly from
  the integers of [a, b] (``log = true``: round(exp(...)) of the same log-uniform draw).

Random draws come from ``numpy.random.default_rng(S)`` in key order, trial by trial; a draw whose params
equal an earlier trial's is drawn again (the same recipe would give the same result), so N trials are N
distinct recipes, or an error when the lists allow fewer than N.

Dotted keys may be quoted (``"student.alpha" = [...]``) or not (TOML then reads a nested table, which is
flattened back where the recipe has that table: ``dotted_keys``).

Every trial's recipe is checked with ``recipe.validate_recipe`` before anything runs: a bad value in the
seventh trial is an error naming the key and that trial's params. A relative ``data.source`` path is
taken relative to the sweep file and made absolute, so every worker reads the same file.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..recipe import RecipeError, default_recipe, load_recipe, read_toml, validate_recipe

MAX_TRIALS = 10_000
_TOP_KEYS = ("base", "grid", "random")
_RANGE_KEYS = ("low", "high", "log")


@dataclass(frozen=True)
class Trial:
    """One trial: its varied keys (``params``, dotted key -> value) and its full, validated recipe."""
    params: dict
    recipe: dict


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: where it is, the varied keys in order, and its trials."""
    path: Path
    keys: tuple[str, ...]
    trials: tuple[Trial, ...]


def default_of(key: str, where: str) -> Any:
    """The default recipe's value of dotted ``key``; a RecipeError naming the key if it is not a recipe value."""
    node: Any = default_recipe()
    done = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            prefix = ".".join(done)
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none: it is a value"
            raise RecipeError(f"{where}: unknown recipe key {key!r} (known under {prefix or 'the top level'!r}: "
                              f"{known})")
        node = node[part]
        done.append(part)
    if isinstance(node, dict):
        raise RecipeError(f"{where}: {key!r} is a table of the recipe, not a value; vary one of its keys "
                          f"({', '.join(sorted(node))})")
    return node


def with_params(recipe: dict, params: dict) -> dict:
    """A copy of ``recipe`` with each dotted key of ``params`` set to its value."""
    out = copy.deepcopy(recipe)
    for key, value in params.items():
        *tables, leaf = key.split(".")
        node = out
        for part in tables:
            node = node[part]
        node[leaf] = value
    return out


def dotted_keys(table: dict, recipe: dict, prefix: str = "") -> dict:
    """``table`` with nested recipe tables flattened into dotted keys: TOML reads an unquoted
    ``student.alpha = [...]`` as ``{"student": {"alpha": [...]}}``, which means ``"student.alpha" = [...]``.
    A table is flattened only where the recipe has a table of that name (a range stays a value)."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            out.update(dotted_keys(value, recipe[key], f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def grid_params(grid: dict, where: str) -> list[dict]:
    """The product of the grid's lists, one params dict per trial (the last key varies fastest)."""
    if not grid:
        raise RecipeError(f"{where}: [grid] names no keys to vary")
    for key, values in grid.items():
        default_of(key, where)
        if not isinstance(values, list) or not values:
            raise RecipeError(f"{where}: grid.{key}: expected a non-empty list of values, got {values!r}")
    count = math.prod(len(v) for v in grid.values())
    if count > MAX_TRIALS:
        raise RecipeError(f"{where}: [grid] makes {count} trials, more than {MAX_TRIALS}")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def _check_range(key: str, spec: dict, default: Any, where: str) -> None:
    unknown = sorted(set(spec) - set(_RANGE_KEYS))
    if unknown:
        raise RecipeError(f"{where}: random.{key}: unknown range keys {unknown} (a range is "
                          f"{{ low = a, high = b, log = false }})")
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise RecipeError(f"{where}: random.{key}: a range needs a number key, {key} is not one; give a list")
    for bound in ("low", "high"):
        value = spec.get(bound)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RecipeError(f"{where}: random.{key}.{bound}: expected a finite number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise RecipeError(f"{where}: random.{key}.{bound}: {key} is an integer, got {value!r}")
    if not isinstance(spec.get("log", False), bool):
        raise RecipeError(f"{where}: random.{key}.log: expected true or false, got {spec['log']!r}")
    if not spec["low"] < spec["high"]:
        raise RecipeError(f"{where}: random.{key}: expected low < high, got low = {spec['low']!r}, "
                          f"high = {spec['high']!r}")
    if spec.get("log", False) and spec["low"] <= 0:
        raise RecipeError(f"{where}: random.{key}: a log range needs low > 0, got low = {spec['low']!r}")


def draw(spec: Any, default: Any, rng: np.random.Generator) -> Any:
    """One value of a random key: an item of a list, or a (log-)uniform number of a range (module doc)."""
    if isinstance(spec, list):
        return copy.deepcopy(spec[int(rng.integers(len(spec)))])
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return min(max(round(value), low), high) if isinstance(default, int) else value
    if isinstance(default, int):
        return int(rng.integers(low, high + 1))
    return float(rng.uniform(low, high))


def random_params(table: dict, where: str) -> list[dict]:
    """``table["trials"]`` distinct params dicts drawn with ``numpy.random.default_rng(table["seed"])``."""
    table = dict(table)
    trials, seed = table.pop("trials", None), table.pop("seed", None)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise RecipeError(f"{where}: random.trials: expected an integer in [1, {MAX_TRIALS}], got {trials!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise RecipeError(f"{where}: random.seed: expected an integer in [0, 2**63), got {seed!r}")
    if not table:
        raise RecipeError(f"{where}: [random] names no keys to vary")
    defaults = {}
    for key, spec in table.items():
        defaults[key] = default_of(key, where)
        if isinstance(spec, dict):
            _check_range(key, spec, defaults[key], where)
        elif not isinstance(spec, list) or not spec:
            raise RecipeError(f"{where}: random.{key}: expected a non-empty list of values or a range "
                              f"{{ low = a, high = b, log = false }}, got {spec!r}")
    rng = np.random.default_rng(seed)
    drawn: list[dict] = []
    for _ in range(100 * trials):
        params = {key: draw(spec, defaults[key], rng) for key, spec in table.items()}
        if params not in drawn:
            drawn.append(params)
            if len(drawn) == trials:
                return drawn
    raise RecipeError(f"{where}: [random] asks for {trials} distinct trials, but 100 x {trials} draws gave only "
                      f"{len(drawn)}: its lists allow fewer combinations")


def parse_sweep(table: dict, path: Path) -> Sweep:
    """A sweep from the parsed TOML ``table`` of the file at ``path`` (module doc); every trial validated."""
    where = str(path)
    unknown = sorted(set(table) - set(_TOP_KEYS))
    if unknown:
        raise RecipeError(f"{where}: unknown sweep keys {unknown} (known: base, grid, random)")
    if ("grid" in table) == ("random" in table):
        raise RecipeError(f"{where}: a sweep needs exactly one of [grid] or [random], got "
                          f"{'both' if 'grid' in table else 'neither'}")
    kind = "grid" if "grid" in table else "random"
    if not isinstance(table[kind], dict):
        raise RecipeError(f"{where}: {kind} must be a table, got {table[kind]!r}")
    base_name = table.get("base")
    if base_name is not None and not isinstance(base_name, str):
        raise RecipeError(f"{where}: base: expected the path of a recipe file, got {base_name!r}")
    base = load_recipe(path.parent / base_name) if base_name is not None else default_recipe()
    varied = dotted_keys(table[kind], default_recipe())
    all_params = grid_params(varied, where) if kind == "grid" else random_params(varied, where)
    trials = []
    for index, params in enumerate(all_params):
        recipe = validate_recipe(with_params(base, params), f"{where}: trial {index} {params}")
        source = recipe["data"]["source"]
        if source != "digits":
            recipe["data"]["source"] = str((path.parent / source).absolute())
        trials.append(Trial(params=params, recipe=recipe))
    keys = tuple(k for k in varied if k not in ("trials", "seed") or kind == "grid")
    return Sweep(path=path, keys=keys, trials=tuple(trials))


def load_sweep(path: str | Path) -> Sweep:
    """The sweep file at ``path``, parsed and every trial recipe validated (module doc)."""
    return parse_sweep(read_toml(path, "sweep"), Path(path))
