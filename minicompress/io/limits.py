"""How much memory loading one file may take: a byte budget, and zip members inflated within it.

A few bytes of a hostile file can ask for gigabytes: a deflated member (a zip "bomb" inflates about
1000 times), a tensor view that repeats one storage, a ``.npy`` header declaring a huge shape. Every
load therefore gets one ``ByteBudget``. What it counts, before anything is allocated:

- each zip member inflated (PyTorch storages and ``data.pkl``, ``.npz`` arrays), by the size its
  zip header declares — and while inflating, in 1 MiB chunks, so a header that lies is caught too;
- each tensor a PyTorch pickle builds from its storages (views can repeat a storage many times);
- each safetensors tensor decoded (bfloat16 becomes float32: twice its bytes in the file).

The default budget is ``256 MiB + 64 x the file's size``: a legitimate file inflates by a small
factor (an int8 or float model: ~1.1; 99 % zeros after pruning: ~60), a bomb by ~1000. Pass
``max_bytes=`` to the loaders to set the budget yourself (e.g. for a model that is almost all zeros).

Only stored and deflated zip members are read (all that ``torch.save`` and ``numpy.savez`` write):
bzip2 and LZMA inflate a whole read at once, beyond any chunking.
"""
from __future__ import annotations

import zipfile
from typing import BinaryIO

from .errors import FileFormatError

MAX_BYTES_FLOOR = 256 << 20
MAX_BYTES_PER_FILE_BYTE = 64
CHUNK_BYTES = 1 << 20
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def default_max_bytes(file_size: int) -> int:
    """The budget of a load when no ``max_bytes`` is given: 256 MiB + 64 x ``file_size``."""
    return MAX_BYTES_FLOOR + MAX_BYTES_PER_FILE_BYTE * file_size


class ByteBudget:
    """The bytes one load of file ``name`` may still produce; ``spend`` refuses to go past the limit.

    Parameters
    ----------
    name : the file, for error messages.
    file_size : its size in bytes (sets the default limit).
    max_bytes : the limit; ``None`` for ``default_max_bytes(file_size)``.
    """

    def __init__(self, name: str, file_size: int, max_bytes: int | None = None) -> None:
        if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(max_bytes, bool)
                                      or max_bytes < 0):
            raise ValueError(f"{name}: max_bytes must be a non-negative int or None, got {max_bytes!r}")
        self.name = name
        self.limit = default_max_bytes(file_size) if max_bytes is None else max_bytes
        self.rule = (f"the default, 256 MiB + 64 x the file's {file_size} bytes" if max_bytes is None
                     else "max_bytes")
        self.left = self.limit

    def spend(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` for ``what`` (e.g. ``"storage '3'"``), or raise ``FileFormatError``."""
        if nbytes > self.left:
            raise FileFormatError(f"{self.name}: {what} would take {nbytes} bytes, more than the {self.left} "
                                  f"bytes left of this load's budget of {self.limit} bytes ({self.rule}); "
                                  f"if you trust the file, pass a larger max_bytes=")
        self.left -= nbytes


def check_member(info: zipfile.ZipInfo, name: str) -> None:
    """Refuse a member compressed with anything but stored/deflated (see the module docstring)."""
    if info.compress_type not in _COMPRESSIONS:
        raise FileFormatError(f"{name}: member {info.filename!r} uses zip compression method "
                              f"{info.compress_type}; only stored and deflated members are read")


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int) -> bytearray:
    """The bytes of member ``info``, refused if its header declares more than ``limit`` bytes.

    Inflates in ``CHUNK_BYTES`` reads into a buffer of the declared size, so no more than that is
    ever held, whatever the compressed stream really contains; a short stream is refused.
    """
    check_member(info, name)
    if info.file_size > limit:
        raise FileFormatError(f"{name}: member {info.filename!r} declares {info.file_size} bytes, expected at "
                              f"most {limit}")
    buffer = bytearray(info.file_size)
    with archive.open(info) as member:
        inflate_into(member, memoryview(buffer), name, f"member {info.filename!r}")
    return buffer


def inflate_into(member: BinaryIO, view: memoryview, name: str, what: str) -> None:
    """Fill ``view`` from the open member, ``CHUNK_BYTES`` at a time; refuse a stream that ends early."""
    filled = 0
    while filled < len(view):
        count = member.readinto(view[filled:filled + CHUNK_BYTES])
        if not count:
            raise FileFormatError(f"{name}: {what} ends after {filled} of the {len(view)} bytes it declares")
        filled += count
