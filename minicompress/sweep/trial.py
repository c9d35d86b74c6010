"""One trial of a sweep: its id, its run on a worker, and its directory ``DIR/trials/<id>/`` on the client.

A trial is one ``pipeline.run`` of one recipe. ``run_trial`` is the Dask task: it runs in a temporary
directory *of the worker* and returns the run's files as bytes, so workers need no storage shared with
the client; the client writes them with ``write_trial`` into ``DIR/trials/<id>/`` as one transaction
(``run_dir.output_directory``): a trial directory is complete or absent, never half written. A trial is
finished iff its directory holds a ``report.json`` with stages (``finished_report``).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

from ..run_dir import REPORT, output_directory
from .toml_out import recipe_toml

TRIALS = "trials"
RECIPE_FILE = "recipe.toml"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameters (malloc.h)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def trial_id(recipe: dict) -> str:
    """``t-`` + the first 12 hex digits of the SHA-256 of the trial's full recipe as canonical JSON.

    The same recipe always gets the same id (``--resume`` and a re-run find its directory); a changed
    base recipe or data path is a different trial.
    """
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return "t-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def malloc_settings() -> bool:
    """Give a Dask worker glibc's usual handling of large allocations back; True where applied (glibc).

    The nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` (``pre-spawn-environ``) to return freed memory to
    the OS early. Setting it also freezes glibc's dynamic mmap threshold at 128 KiB, so every NumPy
    temporary above 128 KiB is mapped, page-faulted in and unmapped again: the quick recipe spent 3.7 s of
    its 7.9 s of CPU in the kernel that way (0.03 s without the variable). ``mallopt`` sets both thresholds
    to the values glibc's dynamic rule reaches on 64-bit systems (mmap 32 MiB, trim twice that).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1


def worker_settings() -> dict:
    """Pin Numba to one thread in this (worker) thread, set ``malloc_settings``, report what a trial runs with.

    The BLAS / OpenMP variables must be 1 before NumPy loads in the worker process: the Dask nanny sets
    them from ``distributed.nanny.pre-spawn-environ`` (``OMP``, ``MKL``, ``OPENBLAS``; ``driver`` adds
    ``NUMBA_NUM_THREADS``). ``numba.set_num_threads(1)`` is thread-local: it holds for the calling
    thread, the one running the trial, whatever the environment said.
    """
    import numba

    numba.set_num_threads(1)
    return {"numba": numba.get_num_threads(), "malloc": malloc_settings(),
            **{name: os.environ.get(name) for name in THREAD_VARIABLES}}


def run_trial(recipe: dict) -> dict:
    """The Dask task of one trial: run ``recipe`` in a temporary directory, return its outcome.

    Returns ``{"status": "done", "files": {name: bytes}, "seconds", "cpu_seconds" (of the trial's thread),
    "threads"}``, or ``{"status":
    "failed", "error": message}`` when the run raises (a bad data file, a failing stage): a failed run is
    the trial's result, not a task error, so Dask does not retry it. A worker that dies is another matter
    (the scheduler re-runs the task elsewhere: ``driver``).
    """
    from ..pipeline import run

    threads = worker_settings()
    start, cpu_start = time.perf_counter(), time.thread_time()
    with tempfile.TemporaryDirectory(prefix="minicompress-trial-") as tmp:
        out = Path(tmp) / "run"
        try:
            run(recipe, out, quiet=True, log=lambda _: None)
        except Exception as exc:  # noqa: BLE001 - any failure of the run is the trial's outcome
            last = traceback.extract_tb(exc.__traceback__)[-1]
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc} "
                                                 f"({Path(last.filename).name}:{last.lineno})",
                    "seconds": time.perf_counter() - start, "threads": threads}
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    return {"status": "done", "files": files, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.thread_time() - cpu_start, "threads": threads}


def write_trial(trial_dir: Path, recipe: dict, files: dict[str, bytes]) -> None:
    """Write a finished trial's files and its ``recipe.toml`` into ``trial_dir`` as one transaction."""
    with output_directory(trial_dir, set(files) | {RECIPE_FILE}) as work:
        (work / RECIPE_FILE).write_text(recipe_toml(recipe))
        for name, data in files.items():
            (work / name).write_bytes(data)


def finished_report(trial_dir: Path) -> dict | None:
    """The report of the finished trial in ``trial_dir``, or None (no directory, no or incomplete report)."""
    try:
        report = json.loads((trial_dir / REPORT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not isinstance(report.get("stages"), list) or not report["stages"]:
        return None
    return report
