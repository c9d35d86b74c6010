"""Compression sweeps on Dask distributed (extra ``[sweep]``): ``minicompress sweep SWEEP.toml --out DIR``.

``spec`` parses and validates sweep files into trials, ``trial`` runs one trial and keeps its directory,
``driver`` submits the trials to a Dask cluster and keeps ``sweep.json``, ``pareto`` finds the fronts and
formats the table, ``plot`` draws ``pareto.png``. Nothing here imports Dask or matplotlib at import time.
"""
from .driver import run_sweep
from .pareto import pareto_front
from .spec import Sweep, Trial, load_sweep, parse_sweep
from .trial import run_trial, trial_id

__all__ = ["Sweep", "Trial", "load_sweep", "parse_sweep", "pareto_front", "run_sweep", "run_trial", "trial_id"]
