"""Sweeps on real Dask clusters of worker processes: end to end, resume, thread pinning, a killed worker.

The trials are tiny runs (a CNN of 4-8 channels, 1 epoch each stage): about half a second in a warm worker.
"""
import json
import os
import signal
import threading
import time
import tomllib

import pytest

distributed = pytest.importorskip("distributed")

from minicompress.cli import main  # noqa: E402
from minicompress.sweep import load_sweep, trial_id  # noqa: E402
from minicompress.sweep.driver import local_cluster, run_sweep  # noqa: E402
from minicompress.sweep.pareto import fronts  # noqa: E402
from minicompress.sweep.trial import THREAD_VARIABLES, finished_report, worker_settings  # noqa: E402

TINY = """
[teacher]
channels = [4, 8]
hidden = 16
epochs = 1
[student]
channels = [4, 4]
hidden = 8
epochs = 1
[prune]
sparsity = 0.5
epochs = 0
[quant]
calibration_batches = 2
"""


def tiny_sweep(tmp_path, grid: str, name: str = "sweep.toml"):
    (tmp_path / "tiny.toml").write_text(TINY)
    path = tmp_path / name
    path.write_text(f'base = "tiny.toml"\n[grid]\n{grid}')
    return path


def snapshot(directory):
    """Every file of a trial directory with its inode, mtime and bytes: a re-run changes all three."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.iterdir())}


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(1) as c:
        yield c


def test_cli_sweep_on_local_workers_records_done_and_failed_trials(tmp_path, capsys):
    path = tiny_sweep(tmp_path, '"data.source" = ["digits", "nowhere.npz"]\n"quant.enabled" = [true, false]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 1         # two trials failed
    printed = capsys.readouterr()
    sweep = load_sweep(path)
    ids = [trial_id(t.recipe) for t in sweep.trials]
    state = json.loads((out / "sweep.json").read_text())
    assert [t["id"] for t in state["trials"]] == ids
    assert [t["params"] for t in state["trials"]] == [t.params for t in sweep.trials]
    assert [t["status"] for t in state["trials"]] == ["done", "done", "failed", "failed"]
    for t in state["trials"][2:]:
        assert "data set not found" in t["error"] and "nowhere.npz" in t["error"]
    assert sorted(p.name for p in (out / "trials").iterdir() if not p.name.startswith(".")) == sorted(ids[:2])
    for t, trial in zip(state["trials"][:2], sweep.trials[:2]):
        directory = out / "trials" / t["id"]
        report = finished_report(directory)
        assert t["final"] == report["stages"][-1]
        assert 0 < t["cpu_seconds"] <= t["seconds"]                        # one thread: CPU time within wall time
        assert t["final"]["stage"] == ("int8" if trial.params["quant.enabled"] else "pruned")
        assert report["recipe"] == trial.recipe
        assert tomllib.loads((directory / "recipe.toml").read_text()) == trial.recipe
        assert {row["file"] for row in report["stages"]} <= {p.name for p in directory.iterdir()}
    assert {k: state[k] for k in ("pareto", "pareto_size", "pareto_latency")} == fronts(state["trials"])
    assert state["pareto_size"] == [ids[0]]                                  # int8: smaller, same accuracy
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(line.split("]")[0] for line in printed.out.splitlines() if line.startswith("[")) == [
        "[1/4", "[2/4", "[3/4", "[4/4"]                                       # a line per trial as it ended
    assert "| id | data.source | quant.enabled | status | accuracy |" in printed.out
    assert "2 trial(s) failed" in printed.err
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 1      # not without --resume
    assert "holds a sweep already: pass --resume" in capsys.readouterr().err


def test_resume_skips_finished_trials_and_reruns_the_rest(tmp_path, cluster, capsys):
    path = tiny_sweep(tmp_path, '"student.alpha" = [0.3, 0.6, 0.9]\n')
    sweep = load_sweep(path)
    ids = [trial_id(t.recipe) for t in sweep.trials]
    out = tmp_path / "out"
    first = run_sweep(load_sweep(tiny_sweep(tmp_path, '"student.alpha" = [0.3, 0.9]\n', "two.toml")), out,
                      scheduler=cluster.scheduler_address, log=lambda _: None)
    assert [t["id"] for t in first["trials"]] == [ids[0], ids[2]]          # same recipe, same id
    before = {tid: snapshot(out / "trials" / tid) for tid in (ids[0], ids[2])}
    lines = []
    state = run_sweep(sweep, out, scheduler=cluster.scheduler_address, resume=True, log=lines.append)
    assert lines[0] == "3 trials: 2 finished already, 1 to run"
    assert len(lines) == 2 and lines[1].startswith(f"[3/3] {ids[1]} ")
    assert [t["id"] for t in state["trials"]] == ids and all(t["status"] == "done" for t in state["trials"])
    assert {tid: snapshot(out / "trials" / tid) for tid in (ids[0], ids[2])} == before      # untouched
    assert state["trials"][0]["final"] == first["trials"][0]["final"]
    assert main(["sweep", str(path), "--out", str(out), "--scheduler", cluster.scheduler_address, "--resume"]) == 0
    assert "3 trials: 3 finished already, 0 to run" in capsys.readouterr().out


def test_trials_run_with_one_thread_for_blas_openmp_and_numba_and_glibc_malloc_thresholds(cluster):
    with distributed.Client(cluster) as client:
        inside = client.submit(worker_settings, pure=False).result()
        numba_max = client.submit(lambda: __import__("numba").config.NUMBA_NUM_THREADS, pure=False).result()
    assert inside == {"numba": 1, "malloc": True, **{name: "1" for name in THREAD_VARIABLES}}
    assert numba_max == 1                      # NUMBA_NUM_THREADS was 1 when numba loaded in the worker


def test_a_worker_killed_mid_trial_costs_only_a_rerun_of_that_trial(tmp_path):
    """One worker; the second trial (more teacher epochs: seconds) is killed with SIGKILL while it runs.
    The nanny starts a new worker process, the scheduler runs the trial again; every trial ends done once."""
    path = tiny_sweep(tmp_path, '"teacher.epochs" = [1, 40, 2]\n')
    sweep = load_sweep(path)
    ids = [trial_id(t.recipe) for t in sweep.trials]
    out = tmp_path / "out"
    result, lines = {}, []
    with local_cluster(1) as cluster, distributed.Client(cluster) as client:
        (old_pid,) = client.run(os.getpid).values()
        sweeping = threading.Thread(target=lambda: result.update(
            state=run_sweep(sweep, out, scheduler=cluster.scheduler_address, log=lines.append)))
        sweeping.start()
        try:
            wait_for(lambda: finished_report(out / "trials" / ids[0]), "the first trial to finish")
            before = snapshot(out / "trials" / ids[0])
            key = f"minicompress-trial-{ids[1]}"
            wait_for(lambda: key in sum(client.run(
                lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing]).values(), []),
                "the second trial to start")
            time.sleep(0.5)
            assert finished_report(out / "trials" / ids[1]) is None             # still running: mid-trial
            os.kill(old_pid, signal.SIGKILL)
        finally:
            sweeping.join(timeout=120)
        assert not sweeping.is_alive()
        (new_pid,) = client.run(os.getpid).values()
    assert new_pid != old_pid                                                 # the worker really died
    state = result["state"]
    assert [t["id"] for t in state["trials"]] == ids
    assert [t["status"] for t in state["trials"]] == ["done"] * 3
    assert sorted(line.split("]")[0] for line in lines[1:]) == ["[1/3", "[2/3", "[3/3"]  # each ended once
    assert snapshot(out / "trials" / ids[0]) == before                       # finished trial untouched
    on_disk = json.loads((out / "sweep.json").read_text())
    assert [t["id"] for t in on_disk["trials"]] == ids
