"""PyTorch checkpoint files (``torch.save``), read without torch: the two containers around the pickle.

Tensor data is not in the pickle: it refers to storages by a *persistent id*
``('storage', storage_type, key, location, numel)`` (plus a view tuple in the legacy format), which
``persistent_load`` resolves from the file. Two containers exist:

- zip (``torch.save`` default since 1.6): ``<dir>/data.pkl``, ``<dir>/byteorder`` and one record
  ``<dir>/data/<key>`` per storage holding its raw bytes;
- legacy (``_use_new_zipfile_serialization=False``): five pickles in a row — magic number,
  protocol version, system info, the object, the list of storage keys — then, for each key in
  that order, an int64 element count and the storage's bytes. The storages come *after* the object,
  so the object is unpickled twice: a dry run that only records each storage's dtype and finds
  where the data starts, then the real run.

The pickle itself only ever goes through ``torch_pickle.RestrictedUnpickler``, and every byte
inflated or built counts against the load's ``ByteBudget`` (``limits.py``).
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import Any

from .errors import FileFormatError
from .limits import ByteBudget, read_member
from .torch_pickle import RestrictedUnpickler, TorchDType, unpickle

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 1 << 28  # data.pkl holds structure only; tensor data lives in the storages


def load_torch_zip(data: bytes, name: str, budget: ByteBudget) -> Any:
    """Unpickle a zip-format checkpoint (``torch.save`` default) held in ``data``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except Exception as e:
        raise FileFormatError(f"{name}: not a valid zip archive ({type(e).__name__}: {e})") from None
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if any(n.endswith("/constants.pkl") for n in names):
        raise FileFormatError(f"{name}: a TorchScript archive (torch.jit.save) is not supported; "
                              f"save model.state_dict() with torch.save instead")
    if len(pickles) != 1:
        raise FileFormatError(f"{name}: not a PyTorch checkpoint (no data.pkl in the archive)")
    prefix = pickles[0][: -len("data.pkl")]

    def read(member: str, limit: int, what: str) -> bytearray:
        try:
            info = archive.getinfo(member)
            budget.spend(info.file_size, what)
            return read_member(archive, info, name, limit)
        except FileFormatError:
            raise
        except KeyError:
            raise FileFormatError(f"{name}: {member} is missing from the archive") from None
        except Exception as e:
            raise FileFormatError(f"{name}: cannot read {member} ({type(e).__name__}: {e})") from None

    byteorder = "<"
    if prefix + "byteorder" in names:
        order = bytes(read(prefix + "byteorder", 16, "the byteorder record"))
        if order not in (b"little", b"big"):
            raise FileFormatError(f"{name}: unknown byte order {order!r}")
        byteorder = "<" if order == b"little" else ">"

    def storage_bytes(key: str, dtype: TorchDType, numel: int) -> bytes:
        nbytes = numel * dtype.numpy("<").itemsize
        raw = read(f"{prefix}data/{key}", nbytes, f"storage {key!r}")
        if len(raw) != nbytes:
            raise FileFormatError(f"{name}: storage {key!r} has {len(raw)} bytes, its record says {nbytes}")
        return raw

    f = io.BytesIO(read(prefix + "data.pkl", MAX_PICKLE_BYTES, "data.pkl"))
    unpickler = RestrictedUnpickler(f, name, storage_bytes, byteorder, budget)
    return unpickle(unpickler, f, name, "data.pkl")


def load_torch_legacy(data: bytes, name: str, budget: ByteBudget) -> Any:
    """Unpickle a legacy (non-zip) checkpoint held in ``data``."""
    f = io.BytesIO(data)

    def header(what: str) -> Any:
        return unpickle(RestrictedUnpickler(f, name), f, name, what)

    if header("magic number") != LEGACY_MAGIC:
        raise FileFormatError(f"{name}: a pickle but not a PyTorch checkpoint (wrong magic number)")
    if header("protocol version") != LEGACY_PROTOCOL:
        raise FileFormatError(f"{name}: unsupported legacy checkpoint protocol")
    sys_info = header("system info")
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"

    start = f.tell()
    dry_run = RestrictedUnpickler(f, name)
    unpickle(dry_run, f, name, "checkpoint pickle")
    keys = header("storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) and k in dry_run.storage_dtypes for k in keys):
        raise FileFormatError(f"{name}: invalid storage key list")
    storages: dict[str, bytes] = {}
    for key in keys:
        count = f.read(8)
        if len(count) != 8:
            raise FileFormatError(f"{name}: truncated before storage {key!r}")
        (numel,) = struct.unpack(byteorder + "q", count)
        nbytes = numel * dry_run.storage_dtypes[key].numpy("<").itemsize
        raw = f.read(nbytes) if 0 <= nbytes <= len(data) else b""
        if len(raw) != nbytes or nbytes < 0:
            raise FileFormatError(f"{name}: storage {key!r} truncated ({len(raw)} of {nbytes} bytes)")
        storages[key] = raw

    def storage_bytes(key: str, dtype: TorchDType, numel: int) -> bytes:
        if key not in storages:
            raise FileFormatError(f"{name}: storage {key!r} is referenced but not stored")
        return storages[key]

    f.seek(start)
    unpickler = RestrictedUnpickler(f, name, storage_bytes, byteorder, budget)
    return unpickle(unpickler, f, name, "checkpoint pickle")


def load_torch_file(data: bytes, name: str, budget: ByteBudget) -> Any:
    """The object a checkpoint holds, tensors as ndarrays; zip or legacy format by content."""
    if data[:4] == b"PK\x03\x04":
        return load_torch_zip(data, name, budget)
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return load_torch_legacy(data, name, budget)
    raise FileFormatError(f"{name}: not a PyTorch checkpoint: expected a zip archive (PK\\x03\\x04) or a "
                          f"pickle (\\x80), found {data[:8]!r}")


def load_checkpoint(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """The whole object a checkpoint holds (epochs, optimizer state...), tensors as ndarrays.

    ``max_bytes`` bounds the memory the load may take (``limits.py``; default 256 MiB + 64 x the
    file's size).
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return load_torch_file(data, name, ByteBudget(name, len(data), max_bytes))
