"""Read and write ``.safetensors`` files without the ``safetensors`` package.

The format (https://github.com/huggingface/safetensors, "Format")::

    [8 bytes]  N, unsigned 64-bit little-endian: the length of the header
    [N bytes]  header: UTF-8 JSON object, padded with spaces to a multiple of 8 bytes
                 {"__metadata__": {"str": "str", ...},              (optional)
                  "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
    [rest]     the byte buffer: each tensor's little-endian, C-ordered bytes at
               buffer[begin:end], offsets relative to the start of the buffer

A valid file's tensors tile the buffer exactly: sorted by ``begin`` they start at 0, each starts
where the previous one ends, and the last one ends at the end of the file (no gaps, no overlap),
and ``end - begin == prod(shape) * itemsize``. The reader checks all of it and raises
``FileFormatError`` naming the file, the tensor and the problem. The tensors it decodes count
against the load's ``ByteBudget`` (``limits.py``) before any is decoded.

The writer produces the same bytes as the reference implementation: tensors sorted by descending
dtype (in the order of ``_DTYPES`` below, which follows alignment) and then by name, compact JSON
with ``__metadata__`` first. ``BF16`` is read into float32 (NumPy has no bfloat16); ``F8_*`` dtypes
are refused.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Mapping

import numpy as np

from .atomic import atomic_write
from .errors import FileFormatError
from .limits import ByteBudget

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit

# name -> NumPy dtype, in the reference implementation's enum order (increasing alignment)
_DTYPES: dict[str, str] = {
    "BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
    "BF16": "<u2", "I32": "<i4", "U32": "<u4", "F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8",
}
_RANK = {name: rank for rank, name in enumerate(
    ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
     "F64", "I64", "U64"])}
_NAME_OF: dict[str, str] = {np.dtype(v).str: k for k, v in _DTYPES.items() if k != "BF16"}


# ---------------------------------------------------------------------------------------- reading
def read_safetensors(path: str | os.PathLike, *,
                     max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` from a ``.safetensors`` file; tensors in file (offset) order.

    ``max_bytes`` bounds the bytes of the decoded tensors (default 256 MiB + 64 x the file's size).
    """
    with open(path, "rb") as f:
        data = f.read()
    return parse_safetensors(data, os.fspath(path), max_bytes=max_bytes)


def parse_safetensors(data: bytes, name: str = "<bytes>", *,
                      max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse the bytes of a safetensors file (see the module docstring for every check)."""
    return decode_safetensors(data, name, ByteBudget(name, len(data), max_bytes))


def decode_safetensors(data: bytes, name: str, budget: ByteBudget) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``parse_safetensors`` within the load's ``budget``."""
    def fail(problem: str) -> FileFormatError:
        return FileFormatError(f"{name}: {problem}")

    if len(data) < 8:
        raise fail(f"too short for a safetensors file ({len(data)} bytes; the header length alone takes 8)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise fail(f"header length {n} bytes is absurd (limit {MAX_HEADER_BYTES}); not a safetensors file?")
    if 8 + n > len(data):
        raise fail(f"header length {n} bytes goes beyond the end of the file ({len(data)} bytes): truncated?")
    header = _parse_header(data[8:8 + n], fail)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise fail("__metadata__ must map strings to strings")
    buffer = memoryview(data)[8 + n:]
    entries = sorted((_check_entry(key, info, fail) for key, info in header.items()), key=lambda e: e[3])
    _check_tiling(entries, len(buffer), fail)
    for key, dtype, shape, (begin, end) in entries:
        budget.spend((end - begin) * (2 if dtype == "BF16" else 1), f"tensor {key!r} {dtype} {list(shape)}")
    tensors = {key: _decode(buffer[begin:end], dtype, shape) for key, dtype, shape, (begin, end) in entries}
    return tensors, dict(metadata)


def _check_tiling(entries: list, size: int, fail) -> None:
    """The tensors, sorted by ``begin``, cover the ``size`` bytes of the buffer without gap or overlap."""
    start, previous = 0, None
    for key, _, _, (begin, end) in entries:
        if begin != start:
            where = f"tensor {previous!r} ends at {start}" if previous is not None else "the buffer starts at 0"
            kind = "overlaps the previous tensor" if begin < start else "leaves a gap"
            raise fail(f"tensor {key!r} data_offsets [{begin}, {end}] {kind} ({where})")
        if end > size:
            raise fail(f"tensor {key!r} data_offsets [{begin}, {end}] go beyond the end of the file "
                       f"(the data buffer has {size} bytes): truncated?")
        start, previous = end, key
    if start != size:
        raise fail(f"{size - start} bytes after the last tensor are not described by the header")


def _parse_header(raw: bytes, fail) -> dict:
    def no_duplicates(pairs: list) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise fail(f"header names {key!r} twice")
            out[key] = value
        return out

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"header is not UTF-8 ({e})") from None
    if not text.startswith("{"):
        raise fail(f"header does not start with '{{' (starts with {text[:16]!r}); not a safetensors file?")
    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as e:
        if isinstance(e, FileFormatError):
            raise
        raise fail(f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    return header


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63


def _check_entry(key: str, info: object, fail) -> tuple[str, str, tuple[int, ...], tuple[int, int]]:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise fail(f"tensor {key!r}: expected an object with dtype, shape and data_offsets, got {info!r:.80}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        supported = ", ".join(_DTYPES)
        raise fail(f"tensor {key!r}: unsupported dtype {dtype!r:.40} (supported: {supported})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise fail(f"tensor {key!r}: shape must be a list of non-negative integers, got {shape!r:.80}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise fail(f"tensor {key!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r:.80}")
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * np.dtype(_DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise fail(f"tensor {key!r}: {dtype} {shape} needs {nbytes} bytes but data_offsets "
                   f"{offsets} span {offsets[1] - offsets[0]}")
    return key, dtype, tuple(shape), (offsets[0], offsets[1])


def _decode(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Little-endian bytes -> a native, writeable, C-contiguous array of ``shape``."""
    if dtype == "BOOL":
        return np.frombuffer(raw, np.uint8).reshape(shape) != 0  # any nonzero byte is True
    array = np.frombuffer(raw, _DTYPES[dtype])
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=True).reshape(shape)


# ---------------------------------------------------------------------------------------- writing
def safetensors_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (and ``metadata``, strings only)."""
    arrays = []
    for key, value in tensors.items():
        if not isinstance(key, str) or key == "__metadata__":
            raise TypeError(f"safetensors: tensor names must be strings other than '__metadata__', got {key!r}")
        array = np.asarray(value)
        name = _NAME_OF.get(array.dtype.newbyteorder("<").str if array.dtype.itemsize > 1 else array.dtype.str)
        if name is None:
            raise TypeError(f"safetensors: tensor {key!r} has dtype {array.dtype}, which safetensors cannot "
                            f"store (supported: {', '.join(n for n in _DTYPES if n != 'BF16')})")
        arrays.append((key, name, array))
    arrays.sort(key=lambda item: (-_RANK[item[1]], item[0]))

    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors: metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for key, name, array in arrays:
        raw = np.ascontiguousarray(array, dtype=_DTYPES[name]).tobytes()
        header[key] = {"dtype": name, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad so the buffer starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike,
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically (see ``safetensors_bytes``)."""
    data = safetensors_bytes(tensors, metadata)
    with atomic_write(path) as f:
        f.write(data)
