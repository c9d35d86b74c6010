"""Sweep files: grid and random expansion, validation naming the key, trial ids, recipe.toml round trip."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import minicompress
from minicompress.recipe import RecipeError, default_recipe
from minicompress.sweep import load_sweep, trial_id
from minicompress.sweep.spec import random_params
from minicompress.sweep.toml_out import recipe_toml


def sweep_file(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_is_the_product_in_key_order_over_the_base_recipe(tmp_path):
    sweep_file(tmp_path, "[student]\nepochs = 2\n", "base.toml")
    sweep = load_sweep(sweep_file(tmp_path, 'base = "base.toml"\n[grid]\n"prune.sparsity" = [0.5, 0.8]\n'
                                            '"student.channels" = [[4, 8], [8, 16], [16, 32]]\n'))
    assert sweep.keys == ("prune.sparsity", "student.channels")
    assert [t.params for t in sweep.trials] == [
        {"prune.sparsity": s, "student.channels": c} for s in (0.5, 0.8) for c in ([4, 8], [8, 16], [16, 32])]
    for t in sweep.trials:
        assert t.recipe["prune"]["sparsity"] == t.params["prune.sparsity"]
        assert t.recipe["student"]["channels"] == t.params["student.channels"]
        assert t.recipe["student"]["epochs"] == 2                         # from the base
        assert t.recipe["teacher"] == default_recipe()["teacher"]         # the rest: defaults


def test_unquoted_dotted_keys_mean_the_same_as_quoted_ones(tmp_path):
    quoted = load_sweep(sweep_file(tmp_path, '[grid]\n"student.alpha" = [0.5, 0.9]\n"student.vit.num_heads" = [2]\n'))
    bare = load_sweep(sweep_file(tmp_path, '[grid]\nstudent.alpha = [0.5, 0.9]\nstudent.vit.num_heads = [2]\n', "b.toml"))
    assert bare.keys == quoted.keys == ("student.alpha", "student.vit.num_heads")
    assert bare.trials == quoted.trials
    ranged = load_sweep(sweep_file(tmp_path, '[random]\ntrials = 2\nseed = 0\nstudent.alpha = { low = 0.1, high = 0.9 }\n',
                                   "r.toml"))
    assert ranged.keys == ("student.alpha",) and 0.1 <= ranged.trials[0].params["student.alpha"] < 0.9


def test_relative_data_path_is_resolved_against_the_sweep_file(tmp_path):
    (tmp_path / "sub").mkdir()
    sweep = load_sweep(sweep_file(tmp_path / "sub", '[grid]\n"data.source" = ["digits", "d.npz", "/abs/e.npz"]\n'))
    assert [t.recipe["data"]["source"] for t in sweep.trials] == [
        "digits", str((tmp_path / "sub" / "d.npz").absolute()), "/abs/e.npz"]
    assert sweep.trials[1].params == {"data.source": "d.npz"}


@pytest.mark.parametrize("text, message", [
    ('[grid]\n"student.widht" = [1]\n', r"unknown recipe key 'student.widht' \(known under 'student'"),
    ('[grid]\n"nope" = [1]\n', "unknown recipe key 'nope'"),
    ('[grid]\n"student" = [1]\n', "'student' is a table of the recipe, not a value"),
    ('[grid]\n"seed.x" = [1]\n', "unknown recipe key 'seed.x'"),
    ('[grid]\n"student.alpha" = 0.5\n', r"grid.student.alpha: expected a non-empty list of values"),
    ('[grid]\n"student.alpha" = []\n', r"grid.student.alpha: expected a non-empty list"),
    ('[grid]\n', r"\[grid\] names no keys"),
    ('[grid]\na = [1]\n[random]\ntrials = 1\nseed = 0\n', "exactly one of .grid. or .random., got both"),
    ('base = "x.toml"\n', "exactly one of .grid. or .random., got neither"),
    ('grids = 1\n[grid]\n"seed" = [1]\n', r"unknown sweep keys \['grids'\]"),
    ('base = 3\n[grid]\n"seed" = [1]\n', "base: expected the path of a recipe file"),
    ('base = "missing.toml"\n[grid]\n"seed" = [1]\n', "recipe file not found"),
    ('[random]\nseed = 0\n"student.alpha" = [1.0]\n', r"random.trials: expected an integer in \[1, 10000\], got None"),
    ('[random]\ntrials = 0\nseed = 0\n"student.alpha" = [1.0]\n', r"random.trials: expected an integer"),
    ('[random]\ntrials = 2\n"student.alpha" = [1.0]\n', r"random.seed: expected an integer"),
    ('[random]\ntrials = 2\nseed = 0\n', r"\[random\] names no keys"),
    ('[random]\ntrials = 1\nseed = 0\n"student.alpha" = 0.5\n', "random.student.alpha: expected a non-empty list"),
    ('[random]\ntrials = 1\nseed = 0\n"student.alpha" = { low = 0.5, hi = 1.0 }\n', r"unknown range keys \['hi'\]"),
    ('[random]\ntrials = 1\nseed = 0\n"student.alpha" = { low = 0.5 }\n', r"student.alpha.high: expected a finite"),
    ('[random]\ntrials = 1\nseed = 0\n"student.alpha" = { low = "a", high = 1 }\n', r"alpha.low: expected a fin"),
    ('[random]\ntrials = 1\nseed = 0\n"student.alpha" = { low = 0.9, high = 0.1 }\n', "expected low < high"),
    ('[random]\ntrials = 1\nseed = 0\n"student.alpha" = { low = 0.5, high = 0.5 }\n', "expected low < high"),
    ('[random]\ntrials = 1\nseed = 0\n"student.lr" = { low = 0.0, high = 1.0, log = true }\n',
     r"student.lr: a log range needs low > 0, got low = 0.0"),
    ('[random]\ntrials = 1\nseed = 0\n"student.lr" = { low = -1.0, high = 1.0, log = true }\n', "needs low > 0"),
    ('[random]\ntrials = 1\nseed = 0\n"student.lr" = { low = 0.1, high = 1.0, log = 1 }\n', "log: expected true"),
    ('[random]\ntrials = 1\nseed = 0\n"student.hidden" = { low = 1.5, high = 9 }\n', "is an integer, got 1.5"),
    ('[random]\ntrials = 1\nseed = 0\n"quant.mode" = { low = 1, high = 9 }\n', "a range needs a number key"),
    ('[random]\ntrials = 1\nseed = 0\n"prune.enabled" = { low = 0, high = 1 }\n', "a range needs a number key"),
    ('[random]\ntrials = 3\nseed = 0\n"quant.enabled" = [true, false]\n', "asks for 3 distinct trials"),
])
def test_bad_sweeps_name_the_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_sweep(sweep_file(tmp_path, text))


def test_a_bad_value_in_a_late_trial_fails_before_anything_runs_naming_key_and_params(tmp_path):
    path = sweep_file(tmp_path, '[grid]\n"student.hidden" = [8, 16]\n"student.alpha" = [0.5, 0.9, 1.5]\n')
    with pytest.raises(RecipeError, match=r"trial 2 \{'student.hidden': 8, 'student.alpha': 1.5\}: "
                                          r"student.alpha: expected a number in \[0, 1\], got 1.5"):
        load_sweep(path)
    with pytest.raises(RecipeError, match="student.arch: expected one of 'cnn'"):
        load_sweep(sweep_file(tmp_path, '[grid]\n"student.arch" = ["mlp", "cnnn"]\n'))
    with pytest.raises(RecipeError, match="quant.mode: a 'vit' model is quantized with mode = 'dynamic'"):
        load_sweep(sweep_file(tmp_path, '[grid]\n"student.arch" = ["cnn", "vit"]\n'))


def test_missing_or_broken_sweep_files(tmp_path):
    with pytest.raises(RecipeError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.toml")
    with pytest.raises(RecipeError, match="is a directory"):
        load_sweep(tmp_path)
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_sweep(sweep_file(tmp_path, "[grid\n"))


RANDOM = ('[random]\ntrials = 12\nseed = {seed}\n"student.lr" = {{ low = 0.0001, high = 0.1, log = true }}\n'
          '"student.alpha" = {{ low = 0.2, high = 0.8 }}\n"student.hidden" = {{ low = 8, high = 64 }}\n'
          '"student.epochs" = {{ low = 1, high = 1000, log = true }}\n"quant.mode" = ["ptq", "qat"]\n')


def test_random_sampling_is_deterministic_in_its_seed_and_within_its_ranges(tmp_path):
    first = load_sweep(sweep_file(tmp_path, RANDOM.format(seed=7)))
    again = load_sweep(sweep_file(tmp_path, RANDOM.format(seed=7), "again.toml"))
    other = load_sweep(sweep_file(tmp_path, RANDOM.format(seed=8), "other.toml"))
    params = [t.params for t in first.trials]
    assert params == [t.params for t in again.trials]
    assert params != [t.params for t in other.trials]
    assert first.keys == ("student.lr", "student.alpha", "student.hidden", "student.epochs", "quant.mode")
    assert len(params) == 12 and len({repr(p) for p in params}) == 12
    for p in params:
        assert 1e-4 <= p["student.lr"] < 0.1 and isinstance(p["student.lr"], float)
        assert 0.2 <= p["student.alpha"] < 0.8
        assert 8 <= p["student.hidden"] <= 64 and type(p["student.hidden"]) is int
        assert 1 <= p["student.epochs"] <= 1000 and type(p["student.epochs"]) is int
        assert p["quant.mode"] in ("ptq", "qat")
    # log-uniform: about half of the draws below the geometric mean of the range, not ~10 %
    lrs = [p["student.lr"] for p in (t.params for t in load_sweep(sweep_file(
        tmp_path, RANDOM.format(seed=1).replace("trials = 12", "trials = 400"), "many.toml")).trials)]
    assert 0.4 < sum(lr < 10 ** -2.5 for lr in lrs) / len(lrs) < 0.6


@given(low=st.integers(0, 20), span=st.integers(1, 5), seed=st.integers(0, 2 ** 32))
def test_integer_ranges_cover_both_ends(low, span, seed):
    table = {"trials": span + 1, "seed": seed, "student.epochs": {"low": low, "high": low + span}}
    drawn = sorted(p["student.epochs"] for p in random_params(table, "test"))
    assert drawn == list(range(low, low + span + 1))      # span + 1 distinct values: all of them


def test_trial_ids_are_stable_and_follow_the_whole_recipe(tmp_path):
    text = '[grid]\n"student.alpha" = [0.5, 0.9]\n'
    a = [trial_id(t.recipe) for t in load_sweep(sweep_file(tmp_path, text)).trials]
    b = [trial_id(t.recipe) for t in load_sweep(sweep_file(tmp_path, text, "copy.toml")).trials]
    assert a == b and len(set(a)) == 2
    assert all(re.fullmatch(r"t-[0-9a-f]{12}", i) for i in a)
    assert trial_id(load_sweep(sweep_file(tmp_path, '[grid]\n"student.alpha" = [0.9, 0.5]\n', "r.toml"))
                    .trials[1].recipe) == a[0]                        # the recipe decides, not the position
    sweep_file(tmp_path, "[teacher]\nepochs = 3\n", "base.toml")
    based = load_sweep(sweep_file(tmp_path, 'base = "base.toml"\n' + text, "based.toml"))
    assert trial_id(based.trials[0].recipe) != a[0]                    # same params, another base: another trial


def test_recipe_toml_round_trips_every_trial_and_shipped_recipe(tmp_path):
    recipes = [t.recipe for t in load_sweep(sweep_file(tmp_path, RANDOM.format(seed=3))).trials]
    recipes.append(default_recipe())
    recipes += [t.recipe for t in load_sweep(Path(minicompress.__file__).parent / "recipes" /
                                             "sweep_example.toml").trials]
    recipes[0]["data"]["source"] = 'dir "quoted" \\ ü\n'
    for recipe in recipes:
        assert tomllib.loads(recipe_toml(recipe)) == recipe


def test_the_package_and_cli_load_without_importing_dask_or_matplotlib():
    code = ("import sys, minicompress.cli, minicompress.sweep; minicompress.cli.build_parser(); "
            "print(sorted(m for m in ('dask', 'distributed', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.stdout.strip() == "[]"


def test_without_distributed_the_sweep_names_the_extra(tmp_path, monkeypatch, capsys):
    from minicompress.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)            # as on a machine without it
    path = sweep_file(tmp_path, '[grid]\n"student.alpha" = [0.5]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "pip install 'minicompress[sweep]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                             # nothing written: a rerun needs no --resume
    assert main(["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "out")]) == 1
    assert "sweep file not found" in capsys.readouterr().err


def test_bad_workers_or_unreachable_scheduler_leave_no_started_sweep(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from minicompress.cli import main
    from minicompress.sweep import driver

    monkeypatch.setattr(driver, "CONNECT_TIMEOUT", "0.5s")

    path = sweep_file(tmp_path, '[grid]\n"student.alpha" = [0.5]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "0"]) == 1
    assert "--workers must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not out.exists()
    assert main(["sweep", str(path), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9", "--retries", "0"]) == 1
    assert "cannot reach a Dask scheduler there" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9"]) == 1
    assert "cannot reach a Dask scheduler there" in capsys.readouterr().err      # no --resume needed
    assert main(["sweep", str(path), "--out", str(out), "--retries", "-1"]) == 1
    assert "--retries must be >= 0" in capsys.readouterr().err


def test_readme_sweep_example_is_the_shipped_one_and_its_random_variant_loads(tmp_path):
    readme = (Path(minicompress.__file__).parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "[grid]" in b]
    shipped = Path(minicompress.__file__).parent / "recipes" / "sweep_example.toml"
    assert tomllib.loads(block) == tomllib.loads(shipped.read_text())
    random_variant = "\n".join(line.removeprefix("# ") for line in block.split("# or, instead of [grid]:\n")[1]
                               .splitlines())
    (tmp_path / "quick.toml").write_text("")
    sweep = load_sweep(sweep_file(tmp_path, 'base = "quick.toml"\n' + random_variant))
    assert len(sweep.trials) == 8 and sweep.keys == ("student.temperature", "student.hidden", "quant.mode")
