"""The restricted unpickler: PyTorch pickles rebuilt with NumPy, and nothing else ever run.

A checkpoint is a pickle. Unpickling can call any importable function the file names (the classic
exploit is a ``__reduce__`` that returns ``(os.system, ("...",))``), so the pickle here goes through
``RestrictedUnpickler``: its ``find_class`` — the only way a pickle can name a callable — answers
with a short allow-list of stand-ins written in NumPy, and refuses everything else *before*
importing or calling it::

    torch._utils._rebuild_tensor{,_v2,_v3}    -> build an ndarray from (storage, offset, size, stride)
    torch._utils._rebuild_parameter{,_with_state} -> return the tensor (no Parameter class here)
    torch.FloatStorage, torch.HalfStorage, ... -> a storage type (its dtype)
    torch.float32, torch.int64, ...           -> a dtype (used by _rebuild_tensor_v3)
    torch.storage.UntypedStorage             -> raw bytes (used by _rebuild_tensor_v3)
    collections.OrderedDict                   -> collections.OrderedDict
    torch.Size                                -> tuple (of a list or tuple only)
    builtins.set, frozenset                   -> set, frozenset (of a list, tuple or set only)
    builtins.complex, slice, range, bytearray, _codecs.encode (latin1 only),
    torch.device                              -> what protocol 2 needs for plain values

The stand-ins cannot be changed by the pickle: ``TorchDType`` and ``StandIn`` are immutable and
refuse BUILD (``__setstate__``), and the rest are builtin types, so one hostile file cannot break
the next load. ``set``, ``frozenset`` and ``torch.Size`` take only containers that are already
built (the pickle's own lists and tuples): ``set(range(10**10))`` would grow without bound.

Tensor data is not in the pickle: it refers to storages by a *persistent id*
``('storage', storage_type, key, location, numel)`` (plus a view tuple in the legacy format), which
``persistent_load`` resolves through the ``storage_bytes`` callback the file reader gives it
(``torch_checkpoint.py``).

Every index is checked before ``as_strided`` touches memory, and the bytes all tensors may produce
count against the load's ``ByteBudget`` (views can repeat one storage many times). Before unpickling,
``check_opcodes`` parses the opcodes without running them, and refuses pickles of more than
``MAX_OPCODES`` opcodes (a state dict needs ~35 per tensor) so that the scan takes about a second.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np

from .errors import FileFormatError, UnsafePickleError
from .limits import ByteBudget

MAX_OPCODES = 1 << 22  # ~1 s of scanning; a checkpoint of 100,000 tensors takes 3.5 million

_STORAGE_TYPES = {  # torch.<Name>Storage -> NumPy dtype ("bf16": raw uint16 read as bfloat16)
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}
_TORCH_DTYPES = {
    "float64": "f8", "double": "f8", "float32": "f4", "float": "f4", "float16": "f2", "half": "f2",
    "bfloat16": "bf16", "int64": "i8", "long": "i8", "int32": "i4", "int": "i4", "int16": "i2",
    "short": "i2", "int8": "i1", "uint8": "u1", "bool": "b1", "complex64": "c8", "complex128": "c16",
    "uint16": "u2", "uint32": "u4", "uint64": "u8",
}
_HINTS = {
    "torch.nn.modules": " (the file pickles a whole nn.Module; save model.state_dict() instead)",
    "torch._utils._rebuild_qtensor": " (quantized tensors are not supported; save the float model or "
                                     "dequantize before torch.save)",
    "numpy": " (NumPy objects inside a checkpoint are refused; keep only tensors, numbers and strings)",
    "torch.float8": " (float8 tensors cannot be read: NumPy has no float8 type)",
}


def _refuse_build(qualified: str) -> UnsafePickleError:
    return UnsafePickleError(f"refusing to modify {qualified} (a BUILD opcode on an allow-listed name): "
                             f"only tensors and plain containers are allowed")


class TorchDType(NamedTuple):
    """A torch dtype or storage type, by its NumPy equivalent; ``code`` 'bf16' or a NumPy dtype code.

    Immutable: a pickle cannot change what ``torch.float32`` means (``__setstate__`` refuses BUILD).
    """

    name: str
    code: str

    def numpy(self, byteorder: str) -> np.dtype:
        return np.dtype(byteorder + ("u2" if self.code == "bf16" else self.code))

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __setstate__(self, state: Any) -> None:
        raise _refuse_build(repr(self))


class StandIn(NamedTuple):
    """An allow-listed callable of the pickle: ``qualified`` is the name the pickle uses.

    Immutable like ``TorchDType``: a pickle can call it, never modify it.
    """

    qualified: str
    function: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __setstate__(self, state: Any) -> None:
        raise _refuse_build(self.qualified)


_UNTYPED = TorchDType("UntypedStorage", "u1")


class _Storage:
    """The raw bytes of one storage (``None`` during the legacy dry run) and its dtype."""

    __slots__ = ("key", "dtype", "data")

    def __init__(self, key: str, dtype: TorchDType, data: bytes | None) -> None:
        self.key, self.dtype, self.data = key, dtype, data


def _count(value: Any, what: str, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise FileFormatError(f"{name}: invalid {what} {value!r:.60} in a tensor record")
    return value


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that only reconstructs tensors (as ndarrays) and plain containers.

    ``storage_bytes(key, dtype, numel)`` returns the raw bytes of a storage, or ``None`` for a dry
    run (then tensors unpickle as ``None``). ``budget`` counts the bytes all tensors produce (a dry
    run builds none and needs no budget).
    """

    def __init__(self, file: io.BytesIO, name: str,
                 storage_bytes: Callable[[str, TorchDType, int], bytes | None] | None = None,
                 byteorder: str = "<", budget: ByteBudget | None = None) -> None:
        super().__init__(file)
        self._name, self._storage_bytes, self._byteorder = name, storage_bytes, byteorder
        self._budget = budget or ByteBudget(name, 0, 0)
        self._raw: dict[str, bytes | None] = {}  # key -> the storage's bytes, read once
        self.storage_dtypes: dict[str, TorchDType] = {}  # key -> dtype of every storage seen
        self._allowed = _allowed_names(self)

    # -------------------------------------------------------------------- the two entry points
    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in self._allowed:
            return self._allowed[qualified]
        hint = next((h for prefix, h in _HINTS.items() if qualified.startswith(prefix)), "")
        raise UnsafePickleError(f"refusing to load {qualified!r:.120} from {self._name}: only tensors and "
                                f"plain containers are allowed{hint}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
            raise FileFormatError(f"{self._name}: unsupported persistent id {pid!r:.80} (expected a storage)")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, TorchDType) or not isinstance(key, str):
            raise FileFormatError(f"{self._name}: invalid storage record {pid!r:.80}")
        numel = _count(numel, "storage size", self._name)
        if key not in self._raw:
            self.storage_dtypes[key] = storage_type
            self._raw[key] = None if self._storage_bytes is None else self._storage_bytes(key, storage_type, numel)
        storage = _Storage(key, storage_type, self._raw[key])  # one key may be viewed with several dtypes
        if len(pid) == 6 and pid[5] is not None:  # legacy view: (view_key, offset, size) in elements
            view = pid[5]
            if not (isinstance(view, tuple) and len(view) == 3):
                raise FileFormatError(f"{self._name}: invalid storage view {view!r:.80}")
            itemsize = storage_type.numpy("<").itemsize
            begin = _count(view[1], "view offset", self._name) * itemsize
            end = begin + _count(view[2], "view size", self._name) * itemsize
            data = None if storage.data is None else storage.data[begin:end]
            if data is not None and len(data) != end - begin:
                raise FileFormatError(f"{self._name}: storage view {view!r:.80} goes beyond storage {key!r}")
            return _Storage(f"{key}[{begin}:{end}]", storage_type, data)
        return storage

    # -------------------------------------------------------------------- stand-ins for torch._utils
    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                        dtype: TorchDType | None = None) -> np.ndarray | None:
        """The array torch would view as ``storage[offset + sum(i_k * stride_k)]``, copied."""
        if not isinstance(storage, _Storage) or not isinstance(size, tuple) or not isinstance(stride, tuple):
            raise FileFormatError(f"{self._name}: invalid tensor record (storage={storage!r:.40}, "
                                  f"size={size!r:.40}, stride={stride!r:.40})")
        offset = _count(storage_offset, "storage offset", self._name)
        size = tuple(_count(n, "size", self._name) for n in size)
        stride = tuple(_count(s, "stride", self._name) for s in stride)
        if len(size) != len(stride):
            raise FileFormatError(f"{self._name}: tensor size {size} and stride {stride} differ in length")
        dtype = dtype or storage.dtype
        if storage.data is None:  # legacy dry run
            return None
        flat_dtype = dtype.numpy(self._byteorder)
        if len(storage.data) % flat_dtype.itemsize:
            raise FileFormatError(f"{self._name}: storage {storage.key!r} ({len(storage.data)} bytes) does not "
                                  f"hold whole {dtype} elements")
        flat = np.frombuffer(storage.data, flat_dtype)
        numel = int(np.prod(size, dtype=object))
        if numel == 0:
            array = np.empty(size, flat_dtype)
        else:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= flat.size:
                raise FileFormatError(f"{self._name}: tensor of size {size}, stride {stride}, offset {offset} "
                                      f"reads element {last} of storage {storage.key!r}, which has {flat.size}")
            self._budget.spend(numel * flat_dtype.itemsize, f"tensor of size {size} from storage {storage.key!r}")
            strides = tuple(s * flat_dtype.itemsize for s in stride)
            array = np.lib.stride_tricks.as_strided(flat[offset:], size, strides, writeable=False).copy()
        if dtype.code == "bf16":  # bfloat16 is the top half of a float32
            bits = array.astype(np.uint32)
            bits <<= 16  # in place: keeps 0-d arrays arrays
            return bits.view(np.float32)
        return array.astype(flat_dtype.newbyteorder("="), copy=False)

    def _rebuild_tensor_v2(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                           requires_grad: Any = False, backward_hooks: Any = None,
                           metadata: Any = None) -> np.ndarray | None:
        if metadata:
            raise FileFormatError(f"{self._name}: tensor metadata {metadata!r:.60} is not supported")
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor_v3(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                           requires_grad: Any, backward_hooks: Any, dtype: Any,
                           metadata: Any = None) -> np.ndarray | None:
        if metadata or not isinstance(dtype, TorchDType):
            raise FileFormatError(f"{self._name}: unsupported tensor record (dtype={dtype!r:.40})")
        return self._rebuild_tensor(storage, storage_offset, size, stride, dtype)



def _allowed_names(unpickler: RestrictedUnpickler) -> dict[str, Any]:
    """What ``find_class`` answers for each allowed name (see the module docstring)."""
    allowed: dict[str, Any] = {"collections.OrderedDict": collections.OrderedDict}
    functions: dict[str, Callable[..., Any]] = {
        "torch.Size": _size,
        "torch._utils._rebuild_tensor": unpickler._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": unpickler._rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": unpickler._rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "_codecs.encode": _latin1_encode,
        "torch.device": _device,
    }
    for module in ("builtins", "__builtin__"):  # protocol 2 pickles name these via REDUCE
        allowed.update({f"{module}.{t.__name__}": t for t in (complex, slice, range)})
        allowed[f"{module}.xrange"] = range
        functions.update({f"{module}.set": _set, f"{module}.frozenset": _frozenset,
                          f"{module}.bytearray": _bytearray})
    allowed.update({qualified: StandIn(qualified, f) for qualified, f in functions.items()})
    allowed["torch.storage.UntypedStorage"] = allowed["torch.UntypedStorage"] = _UNTYPED
    allowed.update({f"torch.{k}": TorchDType(k, v) for k, v in _STORAGE_TYPES.items()})
    allowed.update({f"torch.{k}": TorchDType(k, v) for k, v in _TORCH_DTYPES.items()})
    return allowed


def _built(items: Any, what: str) -> Any:
    """``items`` if it is a container the pickle already built; never a range or another lazy iterable."""
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise FileFormatError(f"unsupported {what}({type(items).__name__}) in a pickle: only a list or tuple of "
                              f"items is allowed (a range could grow without bound)")
    return items


def _set(items: Any = ()) -> set:
    return set(_built(items, "set"))


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_built(items, "frozenset"))


def _size(items: Any = ()) -> tuple:
    """``torch.Size`` is a tuple of its sizes."""
    return tuple(_built(items, "torch.Size"))


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> Any:
    """A Parameter is its tensor here; ``requires_grad``, hooks and Python state are dropped."""
    return data


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """How protocol-2 pickles spell ``bytes``: ``_codecs.encode(str, 'latin1')``; nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise FileFormatError(f"unsupported _codecs.encode({type(text).__name__}, {encoding!r:.20}) in a pickle")
    return text.encode("latin1")


def _bytearray(*args: Any) -> bytearray:
    """``bytearray(str, 'latin-1')`` as protocol 2 writes it; never ``bytearray(n)`` (n zero bytes)."""
    if not args:
        return bytearray()
    if isinstance(args[0], (bytes, bytearray)) and len(args) == 1:
        return bytearray(args[0])
    return bytearray(_latin1_encode(*args))


def _device(kind: Any, index: Any = None) -> str:
    """A ``torch.device`` becomes its string, e.g. ``'cuda:0'``."""
    return str(kind) if index is None else f"{kind}:{index}"


# ---------------------------------------------------------------------------------------- running it
def check_opcodes(f: io.BytesIO, name: str, what: str) -> None:
    """Parse the pickle at ``f``'s position without running it (``pickletools``), then rewind.

    This refuses what the C unpickler would turn into huge allocations before noticing the file is
    short: a memo index far beyond the number of opcodes (a 12-byte pickle with ``LONG_BINPUT
    0x0fffffff`` makes it fill a 4 GB memo) or a length beyond the end of the data; and pickles of
    more than ``MAX_OPCODES`` opcodes (the scan runs in Python: ~1 s per 4 million).
    """
    start = f.tell()
    try:
        with warnings.catch_warnings():  # pickletools warns about odd escapes in STRING opcodes
            warnings.simplefilter("ignore")
            for count, (opcode, arg, _) in enumerate(pickletools.genops(f)):
                if count >= MAX_OPCODES:
                    raise FileFormatError(f"{name}: {what} has more than {MAX_OPCODES} opcodes; a checkpoint "
                                          f"of tensors needs about 35 per tensor")
                if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > count:
                    raise FileFormatError(f"{name}: corrupt {what}: memo index {arg} at opcode {count}")
    except FileFormatError:
        raise
    except Exception as e:
        raise FileFormatError(f"{name}: corrupt {what}: {type(e).__name__}: {e}"[:300]) from None
    f.seek(start)


def unpickle(unpickler: RestrictedUnpickler, f: io.BytesIO, name: str, what: str) -> Any:
    """Check then run ``unpickler.load()`` (reading ``f``); anything a corrupt pickle raises becomes
    ``FileFormatError``."""
    check_opcodes(f, name, what)
    try:
        return unpickler.load()
    except FileFormatError as e:
        if not str(e).startswith(name):  # raised by a stand-in that does not know the file
            raise type(e)(f"{name}: {e}") from None
        raise
    except Exception as e:  # a corrupt pickle can raise almost anything: report it uniformly
        raise FileFormatError(f"{name}: corrupt {what}: {type(e).__name__}: {e}"[:300]) from None
