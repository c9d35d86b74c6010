"""``DIR/pareto.png``: accuracy vs size and accuracy vs latency of every done trial, the fronts marked."""
from __future__ import annotations

import os
from pathlib import Path

from .pareto import LATENCY, SIZE


def plot_pareto(trials: list[dict], front: dict[str, list[str]], path: Path) -> str | None:
    """Two panels (size on disk in KiB and latency in ms/sample, both log scale, against test accuracy):
    every done trial a grey point, the front's trials joined in order and labelled with their ids.
    Written atomically; returns the file name, or None without matplotlib or without a done trial."""
    done = [t for t in trials if t["status"] == "done"]
    if not done:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    panels = ((axes[0], SIZE, 1 / 1024, "size on disk (KiB, log scale)", "pareto_size"),
              (axes[1], LATENCY, 1.0, "latency (ms/sample, log scale)", "pareto_latency"))
    for ax, key, unit, label, front_key in panels:
        ax.plot([t["final"][key] * unit for t in done], [100 * t["final"]["accuracy"] for t in done], "o",
                color="0.7", label="trial")
        on_front = sorted((t for t in done if t["id"] in front[front_key]), key=lambda t: t["final"][key])
        xs = [t["final"][key] * unit for t in on_front]
        ys = [100 * t["final"]["accuracy"] for t in on_front]
        ax.plot(xs, ys, "o-", color="C0", label="Pareto front")
        for t, x, y in zip(on_front, xs, ys):
            ax.annotate(t["id"], (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        xs_all = [t["final"][key] * unit for t in done]
        ax.set_xlim(min(xs_all) / 1.3, max(xs_all) * 1.3)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"sweep: {len(done)} trials, accuracy vs size and vs latency")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path.name
