"""``describe(path)``: what ``minicompress inspect FILE`` prints — format, layers, tensors, sparsity, size."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .model_file import read_model_file
from .limits import ByteBudget
from .npz import read_npz
from .safetensors import decode_safetensors
from .state_dict_file import NESTED_KEYS, _is_tensor_dict, detect_format, find_state_dict
from .torch_checkpoint import load_torch_file

_FORMATS = {"torch-zip": "PyTorch checkpoint (zip format)", "torch-legacy": "PyTorch checkpoint (legacy format)",
            "safetensors": "safetensors file", "npz": ".npz state dict"}


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def describe(path: str | os.PathLike, max_rows: int = 500, *, max_bytes: int | None = None) -> str:
    """A human-readable summary of a model or state-dict file (any format ``io`` reads).

    Lists the module tree (whole-model files), then one row per tensor — name, shape, dtype, number
    of elements, sparsity (fraction of exact zeros), bytes — and totals with the size on disk.
    Raises ``FileFormatError`` for files it cannot read, like the loaders (``max_bytes`` as theirs).
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        data = f.read()
    fmt = detect_format(data, name)
    budget = ByteBudget(name, len(data), max_bytes)
    lines: list[str] = []
    if fmt == "model":
        architecture, tensors, _ = read_model_file(name, max_bytes=max_bytes)
        lines.append(f"{name}: minicompress model file (format {architecture['format_version']}, written by "
                     f"minicompress {architecture.get('minicompress_version', '?')})")
        for key, value in architecture.get("metadata", {}).items():
            lines.append(f"  {key}: {value}")
        lines += ["", "architecture:"] + _tree(architecture["model"], "  ")
    elif fmt == "safetensors":
        tensors, metadata = decode_safetensors(data, name, budget)
        lines.append(f"{name}: {_FORMATS[fmt]}")
        lines += [f"  {k}: {v}" for k, v in metadata.items()]
    elif fmt == "npz":
        tensors = read_npz(data, name, budget)
        lines.append(f"{name}: {_FORMATS[fmt]}")
    else:
        obj = load_torch_file(data, name, budget)
        tensors = find_state_dict(obj, name)
        lines.append(f"{name}: {_FORMATS[fmt]}")
        lines += _checkpoint_note(obj)
    lines += [""] + _table(tensors, max_rows)
    lines.append(f"size on disk: {len(data)} bytes ({human_bytes(len(data))})")
    return "\n".join(lines)


def _checkpoint_note(obj: Any) -> list[str]:
    if not isinstance(obj, dict) or all(isinstance(v, np.ndarray) for v in obj.values()):
        return []
    key = next(k for k in NESTED_KEYS if _is_tensor_dict(obj.get(k)))
    others = [k for k in obj if k != key]
    return [f"  state dict under {key!r}; other entries: {', '.join(map(str, others[:10]))}"]


def _tree(node: dict, indent: str, label: str = "") -> list[str]:
    cls = str(node.get("class", "?")).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={_short(v)}" for k, v in node.get("config", {}).items())
    pruned = f"  [pruned: {', '.join(node['pruned'])}]" if node.get("pruned") else ""
    lines = [f"{indent}{label}{cls}({args}){pruned}"]
    for child_name, child in node.get("children", {}).items():
        if child is not None:
            lines += _tree(child, indent + "  ", f"({child_name}) ")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 16:          # a GraphModule's wiring: one line per child below
        return f"<{len(value)} entries>"
    if isinstance(value, list):
        return "(" + ", ".join(_short(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict) and len(value) == 1:
        tag, inner = next(iter(value.items()))
        return {"__dtype__": f"dtype({inner!r})", "__array__": "<array>", "__child__": f"<{inner}>"}.get(tag, "{...}")
    return repr(value)


def _table(tensors: dict[str, np.ndarray], max_rows: int) -> list[str]:
    rows = [("tensor", "shape", "dtype", "elements", "sparsity", "bytes")]
    total_elements = total_zeros = total_bytes = 0
    for key, array in tensors.items():
        zeros = int(array.size - np.count_nonzero(array))
        total_elements += array.size
        total_zeros += zeros
        total_bytes += array.nbytes
        if len(rows) <= max_rows:
            sparsity = f"{zeros / array.size:.1%}" if array.size else "-"
            rows.append((key, str(tuple(array.shape)), str(array.dtype), str(array.size), sparsity, str(array.nbytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
           for r in rows]
    if len(tensors) > max_rows:
        out.append(f"... {len(tensors) - max_rows} more tensors")
    sparsity = f"{total_zeros / total_elements:.1%}" if total_elements else "-"
    out.append(f"total: {len(tensors)} tensors, {total_elements} elements, {total_elements - total_zeros} nonzero "
               f"(sparsity {sparsity}), {total_bytes} bytes in memory ({human_bytes(total_bytes)})")
    return out
