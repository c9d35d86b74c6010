"""Pareto fronts of a sweep's trials and the table that shows them.

A trial ``a`` dominates ``b`` when it is at least as good in every objective and strictly better in one
(accuracy: higher is better; bytes on disk, latency: lower is better). The front is the set of trials no
other trial dominates; trials with identical figures do not dominate each other, so both stay on it.
"""
from __future__ import annotations

from typing import Sequence

SIZE = "bytes_on_disk"
LATENCY = "latency_ms_per_sample"


def pareto_front(costs: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the points no other point dominates, every coordinate a cost to minimise.

    The simple cull: visit the points in lexicographic order; a point that some point dominates is
    dominated by an earlier one (a dominator is lexicographically smaller), and then by a front member
    (dominance is transitive), so each point is compared with the front found so far only.
    """
    order = sorted(range(len(costs)), key=lambda i: tuple(costs[i]))
    front: list[int] = []
    for i in order:
        p = costs[i]
        dominated = any(all(f <= c for f, c in zip(costs[j], p)) and tuple(costs[j]) != tuple(p) for j in front)
        if not dominated:
            front.append(i)
    return sorted(front)


def fronts(trials: list[dict]) -> dict[str, list[str]]:
    """The ids on the fronts of the done trials: ``pareto`` (accuracy, bytes on disk and latency together),
    ``pareto_size`` (accuracy vs bytes on disk) and ``pareto_latency`` (accuracy vs latency)."""
    done = [t for t in trials if t["status"] == "done"]

    def ids(keys: tuple[str, ...]) -> list[str]:
        costs = [(-t["final"]["accuracy"], *(t["final"][k] for k in keys)) for t in done]
        return [done[i]["id"] for i in pareto_front(costs)]

    return {"pareto": ids((SIZE, LATENCY)), "pareto_size": ids((SIZE,)), "pareto_latency": ids((LATENCY,))}


def format_table(trials: list[dict], keys: Sequence[str], front: dict[str, list[str]]) -> str:
    """A Markdown table: one row per trial, its varied keys, final accuracy, bytes, MACs, latency, and
    ``size`` / ``latency`` in the front column when it is on that Pareto front."""
    head = (f"| id | {' | '.join(keys)} | status | accuracy | bytes on disk | MACs | latency ms/sample | front |\n"
            f"|{'---|' * (len(keys) + 7)}\n")
    rows = []
    for t in trials:
        values = " | ".join(str(t["params"][k]) for k in keys)
        if t["status"] != "done":
            rows.append(f"| {t['id']} | {values} | {t['status']} | | | | | |")
            continue
        f = t["final"]
        marks = ", ".join(name for name, key in (("size", "pareto_size"), ("latency", "pareto_latency"))
                          if t["id"] in front[key])
        rows.append(f"| {t['id']} | {values} | done | {f['accuracy']:.4f} | {f[SIZE]:,} | {f['macs']:,} "
                    f"| {f[LATENCY]:.4f} | {marks} |")
    return head + "\n".join(rows)
