"""How sparse is a model: zeros, nonzeros, and what the weights would cost dense vs sparse.

Every parameter is counted as the network sees it: a pruned tensor ``w`` counts as
``w_mask * w_orig`` (the effective weight), not as ``w_orig``. Sizes::

    dense_bytes  = numel * itemsize
    sparse_bytes = nnz * (itemsize + 4) + (rows + 1) * 4        (CSR, int32 indices)

where ``rows = shape[0]`` and the tensor is seen as a (rows, numel / rows) matrix (a 0-D or 1-D
tensor is one row).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..nn.module import Module
from .base import parameters_by_tensor, pruning_hook

__all__ = ["effective_tensors", "sparsity_report", "format_report"]


def effective_tensors(model: Module) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` for every parameter, pruned ones as ``mask * orig`` under their own name."""
    for key, module, tensor, param in parameters_by_tensor(model):
        hook = pruning_hook(module, tensor)
        yield key, (param.data if hook is None else hook.apply_mask(module))


def _row(name: str, t: np.ndarray) -> dict:
    nnz = int(np.count_nonzero(t))
    rows = t.shape[0] if t.ndim >= 2 else 1
    return {"name": name, "shape": tuple(t.shape), "numel": int(t.size), "zeros": int(t.size) - nnz,
            "nonzeros": nnz, "sparsity": (t.size - nnz) / t.size if t.size else 0.0,
            "dense_bytes": int(t.size * t.itemsize), "sparse_bytes": int(nnz * (t.itemsize + 4) + (rows + 1) * 4)}


def sparsity_report(model: Module, weights_only: bool = False) -> dict:
    """Per-tensor and total sparsity.

    Parameters
    ----------
    model : Module
    weights_only : bool
        Count only tensors with >= 2 dimensions (Linear/Conv weights), as pruning papers do.

    Returns
    -------
    ``{"layers": [row, ...], "total": row}``, each row ``{"name", "shape", "numel", "zeros",
    "nonzeros", "sparsity", "dense_bytes", "sparse_bytes"}`` (the total has no shape).
    """
    layers = [_row(name, t) for name, t in effective_tensors(model) if not weights_only or t.ndim >= 2]
    total = {"name": "total", "shape": None}
    for key in ("numel", "zeros", "nonzeros", "dense_bytes", "sparse_bytes"):
        total[key] = sum(row[key] for row in layers)
    total["sparsity"] = total["zeros"] / total["numel"] if total["numel"] else 0.0
    return {"layers": layers, "total": total}


def format_report(report: dict) -> str:
    """The report as a fixed-width text table."""
    header = f"{'tensor':<28}{'shape':>18}{'numel':>10}{'zeros':>10}{'sparsity':>10}{'dense B':>11}{'sparse B':>11}"
    lines = [header, "-" * len(header)]
    for row in report["layers"] + [report["total"]]:
        shape = "" if row["shape"] is None else "x".join(map(str, row["shape"]))
        lines.append(f"{row['name']:<28}{shape:>18}{row['numel']:>10}{row['zeros']:>10}"
                     f"{row['sparsity']:>10.2%}{row['dense_bytes']:>11}{row['sparse_bytes']:>11}")
    return "\n".join(lines)
