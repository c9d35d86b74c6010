"""The ``minicompress sweep`` subcommand: argument parsing and the printed result (``driver`` does the work)."""
from __future__ import annotations

import argparse
import sys


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``minicompress sweep SWEEP.toml --out DIR [--workers N | --scheduler ADDR] [--resume]``."""
    p = sub.add_parser("sweep", help="run a grid or random search of recipes as Dask tasks (extra [sweep])",
                       description="Run every trial of a sweep file (a base recipe and the keys to vary) as one "
                                   "'minicompress run' per Dask task, on local worker processes or an existing "
                                   "Dask cluster; write DIR/trials/<id>/, DIR/sweep.json and DIR/pareto.png.")
    p.add_argument("sweep", help="the sweep file (TOML: base, then [grid] or [random])")
    p.add_argument("--out", required=True, help="output directory of the sweep")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local worker processes, one thread each (default: all CPUs)")
    where.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--resume", action="store_true", help="keep the finished trials in --out, run the others")
    p.add_argument("--retries", type=int, default=2,
                   help="Dask retries of a trial task that raised (default 2; a failed run is not retried)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; print a line per trial as it ends, then the table. Exit 1 if any trial failed."""
    from .driver import SWEEP_JSON, run_sweep
    from .pareto import format_table
    from .spec import load_sweep

    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    sweep = load_sweep(args.sweep)
    try:
        state = run_sweep(sweep, args.out, workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                          retries=args.retries)
    except ImportError as exc:
        print(f"minicompress sweep: error: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_table(state["trials"], sweep.keys, state))
    print(f"\nfront: 'size' = Pareto front of accuracy vs bytes on disk, 'latency' = of accuracy vs latency; "
          f"wrote {args.out}/{SWEEP_JSON}" + (f" and {args.out}/{state['plot']}" if state["plot"] else ""))
    failed = [t["id"] for t in state["trials"] if t["status"] == "failed"]
    if failed:
        print(f"{len(failed)} trial(s) failed: {', '.join(failed)} (errors in {SWEEP_JSON}; --resume reruns them)",
              file=sys.stderr)
    return 1 if failed else 0
