"""``.npz`` archives (what ``numpy.savez`` writes): one ``<name>.npy`` member per array.

Reading parses each ``.npy`` header itself instead of calling ``numpy.load``, so that nothing is
allocated or inflated before it is checked:

- the dtype must be numbers or booleans (kinds ``b i u f c``): object arrays (pickles), strings,
  dates and structured arrays are refused, as the writer refuses them;
- the member must hold exactly header + ``prod(shape) * itemsize`` bytes, by its zip header;
- those bytes count against the load's ``ByteBudget`` (``limits.py``) before the array is
  allocated, and the data is inflated straight into it, ``CHUNK_BYTES`` at a time.
"""
from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, Mapping

import numpy as np

from .errors import FileFormatError
from .limits import ByteBudget, check_member, inflate_into

NUMERIC_KINDS = "biufc"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npz(data: bytes, name: str, budget: ByteBudget, skip: tuple[str, ...] = ()) -> "OrderedDict[str, np.ndarray]":
    """The ``.npy`` members of the zip archive ``data`` (but those named in ``skip``), in order.

    Returns native-endian, C-contiguous, writeable arrays; raises ``FileFormatError`` naming the
    file and the member for anything else.
    """
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.filename in skip or info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise FileFormatError(f"{name}: unexpected member {info.filename!r} (expected *.npy arrays)")
                out[info.filename[:-4]] = _read_member_array(archive, info, name, budget)
    except FileFormatError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, a bad CRC, a malformed .npy header...
        raise FileFormatError(f"{name}: corrupt .npz archive ({type(e).__name__}: {e})"[:300]) from None
    return out


def _read_member_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: ByteBudget) -> np.ndarray:
    check_member(info, name)
    key = info.filename[:-4]
    with archive.open(info) as member:
        shape, fortran_order, dtype = _read_header(member, name, key)
        count = int(np.prod(shape, dtype=object))
        nbytes = count * dtype.itemsize
        if member.tell() + nbytes != info.file_size:
            raise FileFormatError(f"{name}: array {key!r} declares shape {shape} of {dtype} ({nbytes} bytes) but its "
                                  f"member holds {info.file_size - member.tell()} bytes of data")
        budget.spend(nbytes, f"array {key!r} {shape} {dtype}")
        flat = np.empty(count, dtype)
        inflate_into(member, memoryview(flat.view(np.uint8)), name, f"array {key!r}")
    array = flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)
    return np.asarray(array, dtype=dtype.newbyteorder("="), order="C")


def _read_header(member: BinaryIO, name: str, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` stream; only arrays of numbers pass."""
    version = np.lib.format.read_magic(member)
    if version not in _HEADER_READERS:
        raise FileFormatError(f"{name}: array {key!r} is in .npy format {version}; only 1.0 and 2.0 hold plain "
                              f"numeric arrays")
    shape, fortran_order, dtype = _HEADER_READERS[version](member)
    if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        what = "Python objects (a pickle)" if dtype.hasobject else "not numbers"
        raise FileFormatError(f"{name}: array {key!r} has dtype {dtype}, {what}; only numeric and boolean arrays "
                              f"are read")
    return shape, fortran_order, dtype


def write_npz(f: Any, arrays: Mapping[str, np.ndarray], compress: bool = False,
              extra: Mapping[str, bytes] | None = None) -> None:
    """Write ``arrays`` as ``<name>.npy`` members of a zip (what ``np.savez`` writes), plus ``extra`` files."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=mode, allowZip64=True) as archive:
        for member, content in (extra or {}).items():
            archive.writestr(member, content)
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
