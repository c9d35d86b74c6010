"""Issue 12 regressions outside io and quant: recipe ranges, user data, transactional run directories,
state-dict loading, CLI arguments, progress lines. Every bad input is a clear error naming the key,
array or file, raised before any training."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from minicompress import nn, pipeline
from minicompress.cli import main
from minicompress.data import DataLoader
from minicompress.distill import Distiller
from minicompress.recipe import RecipeError, load_recipe
from minicompress.train import evaluate, fit

TINY = """
seed = 1
[teacher]
channels = [4, 8]
hidden = 16
epochs = 1
[student]
channels = [2, 4]
hidden = 8
epochs = 1
[prune]
epochs = 1
[quant]
calibration_batches = 1
"""


# ---------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("text, message", [
    ("[student]\nchannels = [0, 16]\n", r"student.channels: expected integers in \[1, 4096\], got \[0, 16\]"),
    ("[student]\nchannels = [-8, 16]\n", "student.channels: expected integers in"),
    ("[teacher]\nhidden = 1000000000\n", r"teacher.hidden: expected integers in \[1, 65536\]"),
    ("[teacher]\nhidden = 0\n", "teacher.hidden"),
    ("seed = -1\n", "seed: expected an integer in"),
    ("[teacher]\nlr = 0.0\n", r"teacher.lr: expected a number in \(0, 10\]"),
    ("[student]\nlr = -1e-3\n", "student.lr"),
    ("[prune]\nlr = nan\n", "prune.lr: expected a finite number"),
    ("[prune]\nepochs = -1\n", r"prune.epochs: expected an integer in \[0, 100000\]"),
    ("[quant]\nqat_epochs = 0\n", "quant.qat_epochs"),
    ("[quant]\nqat_lr = inf\n", "quant.qat_lr: expected a finite number"),
    ("[student]\ntemperature = inf\n", "student.temperature: expected a finite number"),
])
def test_every_recipe_number_is_range_checked(tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_non_utf8_recipe_names_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[teacher]\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1.toml: not UTF-8"):
        load_recipe(path)


def test_run_checks_a_recipe_dict_before_training(tmp_path):
    recipe = load_recipe()
    recipe["prune"]["epochs"] = -3
    with pytest.raises(RecipeError, match="prune.epochs"):
        pipeline.run(recipe, tmp_path / "out", quiet=True, log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_prune_epochs_zero_prunes_one_shot(tmp_path):
    """Regression: epochs = 0 reported sparsity 0.5 while the pruned model had no zeros."""
    path = tmp_path / "r.toml"
    path.write_text(TINY.replace("[prune]\nepochs = 1", "[prune]\nepochs = 0\nsparsity = 0.5\nchannel_amount = 0.0")
                    + "enabled = false\n")
    report = pipeline.run(load_recipe(path), tmp_path / "out", quiet=True, log=lambda _: None)
    pruned = report["stages"][-1]
    assert pruned["stage"] == "pruned"
    weights = sum(w.size for w in _weights(tmp_path / "out" / pruned["file"]))
    assert pruned["params"] - pruned["nonzeros"] >= weights // 2 - 4


def _weights(path):
    from minicompress import io, prune
    model = io.load(path)
    return [prune.effective_weight(m, "weight") for m, _ in prune.prunable_weights(model)]


# ---------------------------------------------------------------------------- user data
def _npz(tmp_path, name="d.npz", **overrides):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.random((20, 1, 4, 4), dtype=np.float32), y_train=np.arange(20) % 3,
                  x_test=rng.random((6, 1, 4, 4), dtype=np.float32), y_test=np.arange(6) % 3)
    arrays.update(overrides)
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


@pytest.mark.parametrize("overrides, message", [
    (dict(y_train=np.arange(20) % 3 + 1), r"y_train: labels must be the classes 0 .. K-1 .* \[0\] never occur"),
    (dict(y_train=np.r_[np.arange(19) % 3, 10_000_000]), "y_train: labels must be the classes 0 .. K-1"),
    (dict(y_train=np.r_[np.arange(19) % 3, -1]), "y_train: labels must be >= 0, got -1"),
    (dict(y_train=np.arange(20) % 3 + 0.5), r"y_train: labels must be integers, got \[0.5"),
    (dict(y_test=np.array([0, 1, 2, 3, 0, 1])), "y_test: label 3 is out of range for 3 classes"),
    (dict(x_train=np.ones((20, 1, 4, 4), np.complex64)), "x_train: expected real numbers, got dtype complex64"),
    (dict(x_train=np.full((20, 1, 4, 4), "a")), "x_train: expected real numbers"),
    (dict(x_test=np.full((6, 1, 4, 4), np.nan, np.float32)), "x_test: 96 values are NaN or infinite"),
    (dict(x_train=np.ones((20, 4, 4, 1), np.float32)), r"x_train: shape \(20, 4, 4, 1\) looks channels-last"),
    (dict(x_train=np.ones((0, 1, 4, 4), np.float32), y_train=np.zeros(0, np.int64)), "x_train: holds no samples"),
])
def test_bad_user_data_is_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        pipeline.load_data(_npz(tmp_path, **overrides))


def test_data_that_is_not_an_npz_archive(tmp_path):
    np.save(tmp_path / "x.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"not an .npz archive") as info:
        pipeline.load_data(str(tmp_path / "x.npy"))
    assert "allow_pickle" not in str(info.value)
    with pytest.raises(ValueError, match="is a directory"):
        pipeline.load_data(str(tmp_path))


def test_evaluate_refuses_labels_out_of_range():
    model = nn.Linear(4, 3, rng=0)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="evaluate: y: labels must be >= 0, got -1"):
        evaluate(model, x, np.array([0, -1]))
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        evaluate(model, x, np.array([0, 3]))


def test_fit_and_distiller_refuse_empty_data():
    model = nn.Linear(4, 3, rng=0)
    from minicompress import optim
    empty = DataLoader(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="fit: the loader yields no batches"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), 0.1), empty, quiet=True)
    with pytest.raises(ValueError, match="Distiller.fit: x and y hold no samples"):
        Distiller(quiet=True).fit(model, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), teacher=model)


# ---------------------------------------------------------------------------- state dicts
def test_load_state_dict_checks_every_value_before_changing_anything():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.BatchNorm1d(2))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = {k: np.full_like(v, 7) for k, v in before.items()}
    bad["1.running_var"] = np.array(["a", "b"])
    bad["1.num_batches_tracked"] = np.array(2.5)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    assert "'1.running_var' holds <U1 values, not numbers" in str(info.value)
    assert "'1.num_batches_tracked': the model holds integers (int64), got non-integer floats" in str(info.value)
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in before.items())


# ---------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "--lr", "nan"], "--lr must be a finite number > 0"),
    (["train", "--out", "/nonexistent/dir/m.npz"], "the directory /nonexistent/dir does not exist"),
    (["run", "--out", ""], "--out must name a directory"),
])
def test_cli_refuses_before_any_work(capsys, argv, message):
    start = time.perf_counter()
    assert main(argv + ["--quiet"]) == 1
    assert message in capsys.readouterr().err
    assert time.perf_counter() - start < 5          # refused up front, not after training


# ---------------------------------------------------------------------------- run directories
def _run(tmp_path, out, **kwargs):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return pipeline.run(load_recipe(path), out, quiet=True, log=kwargs.get("log", lambda _: None))


def _consistent(out):
    report = json.loads((out / "report.json").read_text())
    listed = set(report["files"])
    present = {p.name for p in out.iterdir()}
    return report, listed, present


def test_run_directory_holds_exactly_the_files_its_report_lists(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")                      # a user's file: kept
    (out / "9_old.npz").write_bytes(b"x")                       # not a run's file (no report): kept too
    lines = []
    _run(tmp_path, out, log=lines.append)
    report, listed, present = _consistent(out)
    assert present == listed | {"notes.txt", "9_old.npz"} and (out / "notes.txt").read_text() == "mine"
    assert any("teacher  training" in line for line in lines) and any("int8     done" in line for line in lines)
    # an earlier run with more stages: its stale stage files are dropped by the next run
    recipe = load_recipe(tmp_path / "tiny.toml")
    recipe["quant"]["enabled"] = False
    pipeline.run(recipe, out, quiet=True, log=lambda _: None)
    report, listed, present = _consistent(out)
    assert "3_int8.npz" not in present and present == listed | {"notes.txt", "9_old.npz"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]


def test_a_users_file_with_a_run_name_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"would overwrite \(\['report.md'\]"):
        _run(tmp_path, out)
    assert (out / "report.md").read_text() == "my notes" and len(list(out.iterdir())) == 1


def test_a_concurrent_run_into_the_same_directory_is_refused(tmp_path):
    from minicompress.run_dir import output_directory
    out = tmp_path / "out"
    with output_directory(out) as work:
        (work / "report.json").write_text(json.dumps({"stages": [], "files": ["report.json"]}))
        with pytest.raises(FileExistsError, match="another minicompress run is writing this directory"):
            with output_directory(out):
                pass
    assert (out / "report.json").exists()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from minicompress import pipeline
    from minicompress.recipe import load_recipe
    pipeline.run(load_recipe(sys.argv[1]), sys.argv[2], quiet=True, log=lambda _: None)
""")


def test_killed_runs_leave_one_consistent_run(tmp_path):
    """Kill `run --out DIR` at random points over an earlier run: DIR always holds one whole run."""
    recipe = tmp_path / "slow.toml"
    recipe.write_text(TINY.replace("epochs = 1", "epochs = 6"))
    out = tmp_path / "out"
    _run(tmp_path, out)
    first = json.loads((out / "report.json").read_text())
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.perf_counter()                                # one whole run in a subprocess: its length
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(recipe), str(out)], env=env, check=True)
    length = time.perf_counter() - start
    killed_mid_run = 0
    for delay in rng.uniform(0.2, 1.0, size=12) * length:   # until 4 kills have hit a running run
        if killed_mid_run == 4:
            break
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(recipe), str(out)], env=env)
        time.sleep(delay)
        killed_mid_run += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report, listed, present = _consistent(out)
        assert present == listed, (delay, present ^ listed)
        for row in report["stages"]:                           # the files are the report's own run
            assert (out / row["file"]).stat().st_size == row["bytes_on_disk"]
    assert killed_mid_run >= 4
    _run(tmp_path, out)                                        # a later run cleans the killed runs' temp dirs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert json.loads((out / "report.json").read_text())["stages"][0]["stage"] == first["stages"][0]["stage"]
