"""State-dict files: ``{name: ndarray}`` in ``.npz``, ``.safetensors`` or PyTorch ``.pt``/``.pth``.

The format is recognised from the file's first bytes, not its name (a ``.bin`` written by
``torch.save`` loads like a ``.pt``); the name only shapes the error message when nothing matches::

    PK\\x03\\x04 ...                 zip: PyTorch checkpoint (has */data.pkl), minicompress model
                                    file (has architecture.json) or .npz (members *.npy)
    <u64 N> {...                    safetensors (also anything named *.safetensors)
    \\x80 <protocol 2..5> ...        legacy PyTorch checkpoint (a pickle)

Every loader raises ``FileFormatError`` (a ``ValueError``) naming the file for a corrupt or
unrecognised file, and ``UnsafePickleError`` for a pickle that asks for anything but tensors. The
memory a load may take is bounded by ``max_bytes`` (``limits.py``).
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

from .atomic import atomic_write
from .errors import FileFormatError
from .limits import ByteBudget
from .npz import read_npz, write_npz
from .safetensors import decode_safetensors, write_safetensors
from .torch_checkpoint import load_torch_file

# Keys under which training scripts commonly nest the state dict in a checkpoint dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


def detect_format(data: bytes, name: str) -> str:
    """``'torch-zip'``, ``'torch-legacy'``, ``'safetensors'``, ``'npz'`` or ``'model'`` (see module doc)."""
    suffix = os.path.splitext(name)[1].lower()
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except Exception as e:
            raise FileFormatError(f"{name}: corrupt zip archive ({type(e).__name__}: {e})") from None
        if "architecture.json" in names:
            return "model"
        if any(n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        if suffix in TORCH_SUFFIXES:
            raise FileFormatError(f"{name}: a zip archive without data.pkl: not a PyTorch checkpoint")
        return "npz"
    if suffix == ".safetensors" or data[8:9] == b"{":  # before the pickle test: N may start with \x80
        return "safetensors"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    expected = {".npz": "an .npz archive (zip, PK\\x03\\x04)"}.get(
        suffix, "a PyTorch checkpoint (zip or pickle)" if suffix in TORCH_SUFFIXES else
        "a .npz, .safetensors or PyTorch checkpoint file")
    raise FileFormatError(f"{name}: not {expected}: unrecognised leading bytes {data[:8]!r}")


def load_state_dict_file(path: str | os.PathLike, key: str | None = None, *,
                         max_bytes: int | None = None) -> "OrderedDict[str, np.ndarray]":
    """Read a state dict ``{name: ndarray}`` from a ``.npz``, ``.safetensors`` or PyTorch file.

    Parameters
    ----------
    path : a ``.npz`` (``np.savez``), ``.safetensors``, PyTorch checkpoint (``torch.save``, zip or
        legacy format; read without torch and without executing the pickle), or a minicompress
        whole-model file (its state arrays).
    key : for a checkpoint that nests the state dict (``{'epoch': 3, 'model': {...}}``), the key to
        take it from. By default a flat ``{str: tensor}`` mapping is returned as is, and otherwise
        the first of ``NESTED_KEYS`` that holds one.
    max_bytes : the most bytes the load may inflate and build (``limits.py``); default 256 MiB +
        64 x the file's size, which refuses decompression bombs.

    Returns
    -------
    OrderedDict of native-endian, C-contiguous arrays in file order (bfloat16 becomes float32).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    fmt = detect_format(data, path)
    budget = ByteBudget(path, len(data), max_bytes)
    if fmt == "safetensors":
        return OrderedDict(decode_safetensors(data, path, budget)[0])
    if fmt in ("npz", "model"):
        return read_npz(data, path, budget, skip=("architecture.json",))
    obj = load_torch_file(data, path, budget)
    return find_state_dict(obj, path, key)


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def find_state_dict(obj: Any, name: str, key: str | None = None) -> "OrderedDict[str, np.ndarray]":
    """The flat ``{str: ndarray}`` mapping inside an unpickled checkpoint (see ``load_state_dict_file``)."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = list(obj)[:20] if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f"{name}: no key {key!r} in the checkpoint (top-level keys: {found})")
        obj = obj[key]
        if not _is_tensor_dict(obj):
            raise FileFormatError(f"{name}: checkpoint[{key!r}] is not a mapping of names to tensors")
        return OrderedDict(obj)
    if _is_tensor_dict(obj):
        return OrderedDict(obj)
    if isinstance(obj, dict):
        for nested in NESTED_KEYS:
            if _is_tensor_dict(obj.get(nested)):
                return OrderedDict(obj[nested])
        raise FileFormatError(f"{name}: the checkpoint holds no flat mapping of names to tensors; top-level "
                              f"keys: {list(obj)[:20]} (pass key=... to choose one)")
    raise FileFormatError(f"{name}: the checkpoint holds a {type(obj).__name__}, not a state dict")


def save_state_dict_file(state_dict: Mapping[str, Any], path: str | os.PathLike,
                         metadata: Mapping[str, str] | None = None, compress: bool = False) -> None:
    """Write ``{name: array}`` to ``.npz`` or ``.safetensors`` (by suffix), atomically.

    ``metadata`` (strings) goes into the safetensors header; ``compress`` deflates an ``.npz``.
    Parameters are stored by their ``.data``. PyTorch files are read-only here: torch users read
    ``.safetensors`` with ``safetensors.torch.load_file`` and ``.npz`` with ``numpy.load``.
    """
    path = os.fspath(path)
    arrays = {}
    for k, v in state_dict.items():
        array = np.asarray(getattr(v, "data", v) if not isinstance(v, np.ndarray) else v)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"{path}: {k!r} has dtype {array.dtype}; only numeric and bool arrays can be saved")
        arrays[k] = array
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        write_safetensors(arrays, path, metadata)
    elif suffix == ".npz":
        if metadata:
            raise ValueError(f"{path}: metadata can only be stored in .safetensors files")
        with atomic_write(path) as f:
            write_npz(f, arrays, compress)
    else:
        raise ValueError(f"{path}: cannot write {suffix or 'files without a suffix'}; use .npz or .safetensors "
                         f"(PyTorch .pt/.pth files are read-only here)")
