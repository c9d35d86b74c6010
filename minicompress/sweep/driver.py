"""The Dask driver of a sweep: submit every unfinished trial, collect each as it finishes, keep ``sweep.json``.

``run_sweep(sweep, DIR)`` runs on a ``LocalCluster`` of ``workers`` processes with one thread each (the
default), or on the existing cluster at ``scheduler`` (``tcp://HOST:8786``). Each trial is one Dask task
(``trial.run_trial``); as each finishes, the client writes ``DIR/trials/<id>/`` (one transaction) and
rewrites ``DIR/sweep.json`` atomically, so a sweep stopped at any point keeps every finished trial, and
``resume=True`` runs only the trials whose directory holds no complete report.

A worker that dies mid-trial: the scheduler sees the worker leave, marks its running task suspicious and
runs it again on another worker (or the nanny's restarted one), up to
``distributed.scheduler.allowed-failures`` (3) deaths; one more and the future raises ``KilledWorker``,
recorded as a failed trial. ``retries`` (``Client.submit(..., retries=)``) is the other path: it re-runs a
task that *raised* (not a failed run, which ``run_trial`` returns as its result, but e.g. a worker out of
disk space); it never applies to a worker death. Nothing finished is lost (trial directories are only
ever written whole, by the client) or duplicated (one record per trial id, one future per trial).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ..io import atomic_write
from .pareto import fronts
from .plot import plot_pareto
from .spec import Sweep
from .trial import TRIALS, finished_report, run_trial, trial_id, write_trial

SWEEP_JSON = "sweep.json"
PLOT = "pareto.png"
EXTRA = "pip install 'minicompress[sweep]'"
CONNECT_TIMEOUT = "20s"          # to reach an existing scheduler


def _distributed():
    try:
        import dask
        import distributed
    except ImportError:
        raise ImportError(f"minicompress sweep runs on Dask distributed: {EXTRA}") from None
    return dask, distributed


def check_workers(workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` of ``workers`` nanny-managed processes, one thread each, no dashboard; closed on exit.

    The nanny exports ``distributed.nanny.pre-spawn-environ`` before it starts a worker process (and before
    that process imports NumPy): Dask's defaults pin OMP, MKL and OpenBLAS to 1 thread, we add Numba.
    ``dashboard_address=None`` turns the dashboard off, but the scheduler still serves its HTTP routes
    (health, metrics) on port 8787 by default, warning when that is taken: they go to a free loopback port.
    """
    dask, distributed = _distributed()
    check_workers(workers)
    env = {name: 1 for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": v for name, v in env.items()}):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None,
                                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    with cluster:
        yield cluster


@contextlib.contextmanager
def sweep_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A Dask client of the cluster at ``scheduler``, or of a new ``local_cluster(workers)`` (all CPUs by default)."""
    _, distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc})") from None
        with client:
            yield client
        return
    with local_cluster(workers or os.cpu_count() or 1) as cluster, distributed.Client(cluster) as client:
        yield client


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a directory")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the parent directory {out.parent} does not exist")
    trials = out / TRIALS
    try:
        recorded = json.loads((out / SWEEP_JSON).read_text()).get("trials")
    except (OSError, ValueError, AttributeError):
        recorded = None
    started = bool(recorded) or (trials.is_dir() and any(not p.name.startswith(".") for p in trials.iterdir()))
    if started and not resume:
        raise FileExistsError(f"--out {out} holds a sweep already: pass --resume to run only its unfinished "
                              f"trials, or choose another --out")


def done_record(tid: str, params: dict, report: dict, outcome: dict | None = None) -> dict:
    """The ``sweep.json`` entry of a finished trial: its final stage's row of ``report.json``, and the
    wall and CPU seconds of its run when it ran in this sweep (``outcome`` of ``run_trial``)."""
    record = {"id": tid, "params": params, "status": "done", "final": report["stages"][-1]}
    if outcome is not None:
        record.update(seconds=outcome["seconds"], cpu_seconds=outcome["cpu_seconds"])
    return record


def write_sweep_json(out: Path, sweep: Sweep, ids: list[str], records: dict[str, dict]) -> dict:
    """``DIR/sweep.json`` (atomically): the trials that ended, in sweep order, and the Pareto fronts."""
    trials = [records[tid] for tid in ids if tid in records]
    state = {"keys": list(sweep.keys), "trials": trials, **fronts(trials)}
    with atomic_write(out / SWEEP_JSON) as f:
        f.write(json.dumps(state, indent=2).encode())
    return state


def _progress(n: int, total: int, record: dict) -> str:
    head = f"[{n}/{total}] {record['id']} {record['params']}"
    if record["status"] == "failed":
        return f"{head}: FAILED: {record['error']}"
    f = record["final"]
    return (f"{head}: done in {record['seconds']:.1f} s, accuracy {f['accuracy']:.4f}, {f['bytes_on_disk']:,} bytes, "
            f"{f['macs']:,} MACs, {f['latency_ms_per_sample']:.4f} ms/sample")


def run_sweep(sweep: Sweep, out_dir: str | os.PathLike, workers: int | None = None, scheduler: str | None = None,
              resume: bool = False, retries: int = 2, log: Callable[[str], Any] = print) -> dict:
    """Run the unfinished trials of ``sweep`` on Dask; returns the final ``sweep.json`` content (module doc).

    Writes ``DIR/trials/<id>/`` per finished trial, ``DIR/sweep.json`` after each trial, and ``DIR/pareto.png``
    at the end (with matplotlib; its name under ``"plot"`` in the returned dict). ``log`` gets one line
    per trial as it ends.
    """
    _, distributed = _distributed()
    if scheduler is None and workers is not None:
        check_workers(workers)
    out = Path(out_dir).absolute()
    _check_out(out, resume)
    (out / TRIALS).mkdir(parents=True, exist_ok=True)
    ids = [trial_id(t.recipe) for t in sweep.trials]
    records: dict[str, dict] = {}
    pending = []
    for tid, trial in zip(ids, sweep.trials):
        report = finished_report(out / TRIALS / tid)
        if report is not None:
            records[tid] = done_record(tid, trial.params, report)
        else:
            pending.append((tid, trial))
    log(f"{len(ids)} trials: {len(records)} finished already, {len(pending)} to run")
    write_sweep_json(out, sweep, ids, records)
    if pending:
        with sweep_client(workers, scheduler) as client:
            futures = {client.submit(run_trial, trial.recipe, key=f"minicompress-trial-{tid}", pure=False,
                                     retries=retries): (tid, trial) for tid, trial in pending}
            for n, future in enumerate(distributed.as_completed(futures), start=len(ids) - len(pending) + 1):
                tid, trial = futures.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker or a task error after its retries
                    outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                if outcome["status"] == "done":
                    write_trial(out / TRIALS / tid, trial.recipe, outcome["files"])
                    report = json.loads(outcome["files"]["report.json"])
                    records[tid] = done_record(tid, trial.params, report, outcome)
                else:
                    records[tid] = {"id": tid, "params": trial.params, "status": "failed", "error": outcome["error"]}
                write_sweep_json(out, sweep, ids, records)
                log(_progress(n, len(ids), records[tid]))
    state = write_sweep_json(out, sweep, ids, records)
    state["plot"] = plot_pareto(state["trials"], state, out / PLOT)
    return state
