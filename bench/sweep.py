"""Question: how much faster does a sweep finish on 2 local Dask workers than on 1?

Runs the same 8-trial sweep (``minicompress/recipes/sweep_example.toml``'s grid over a base recipe with
longer training, so that a trial takes about ten seconds on one core) twice, into fresh directories: on a
LocalCluster of 1 worker process, then of 2 (one thread each). Wall time includes starting and closing
the cluster, as a user pays it. Prints a table (wall time, the trials' summed run time, speed-up) and one
JSON line; "busy workers" = the trials' summed run time / wall time (how many ran at once, on average): on
an idle machine the speed-up approaches it, on a loaded one each trial slows down instead. "trial CPU s"
(the trials' own thread CPU time) should not grow with the workers: that is the work, wherever it ran.
Usage: PYTHONPATH=. python bench/sweep.py [--workers 1 2] [--epochs-scale 2] [--rounds 1]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import tomllib
from pathlib import Path

from minicompress.sweep import load_sweep, run_sweep
from minicompress.sweep.toml_out import toml_value

EXAMPLE = Path(__file__).resolve().parents[1] / "minicompress" / "recipes" / "sweep_example.toml"


def bench_sweep(directory: Path, epochs_scale: int) -> Path:
    """The example's grid over a base of 4 x ``epochs_scale`` teacher, 5 x student and 2 x pruning epochs."""
    (directory / "base.toml").write_text(
        f"[teacher]\nepochs = {4 * epochs_scale}\n[student]\nepochs = {5 * epochs_scale}\n"
        f"[prune]\nepochs = {2 * epochs_scale}\n[quant]\ncalibration_batches = 4\n")
    grid = tomllib.loads(EXAMPLE.read_text())["grid"]
    path = directory / "sweep.toml"
    path.write_text('base = "base.toml"\n[grid]\n' + "".join(f'"{k}" = {toml_value(v)}\n' for k, v in grid.items()))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs-scale", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the fastest wall time counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="minicompress-bench-sweep-"))
    sweep = load_sweep(bench_sweep(work, args.epochs_scale))
    best: dict[int, dict] = {}
    for r in range(args.rounds):
        for workers in args.workers:
            start = time.perf_counter()
            state = run_sweep(sweep, work / f"out-{workers}-{r}", workers=workers, log=lambda _: None)
            wall = time.perf_counter() - start
            assert all(t["status"] == "done" for t in state["trials"]), state["trials"]
            row = {"workers": workers, "trials": len(state["trials"]), "wall_s": wall,
                   "trial_s_sum": sum(t["seconds"] for t in state["trials"]),
                   "trial_cpu_s_sum": sum(t["cpu_seconds"] for t in state["trials"])}
            if workers not in best or wall < best[workers]["wall_s"]:
                best[workers] = row
    rows = [best[w] for w in args.workers]
    print(f"{len(sweep.trials)} trials ({', '.join(sweep.keys)}), teacher/student/prune epochs x{args.epochs_scale}, "
          f"fastest of {args.rounds} interleaved round(s)")
    print(f"{'workers':>7}  {'wall s':>7}  {'sum of trial s':>14}  {'trial CPU s':>11}  {'busy workers':>12}  "
          f"{'speed-up':>8}")
    for row in rows:
        row["speedup"] = rows[0]["wall_s"] / row["wall_s"]
        row["busy_workers"] = row["trial_s_sum"] / row["wall_s"]      # trials running at once, on average
        print(f"{row['workers']:>7}  {row['wall_s']:7.1f}  {row['trial_s_sum']:14.1f}  {row['trial_cpu_s_sum']:11.1f}  "
              f"{row['busy_workers']:12.2f}  "
              f"{row['speedup']:7.2f}x")
    print(json.dumps({"bench": "sweep", "rows": rows}))


if __name__ == "__main__":
    main()
