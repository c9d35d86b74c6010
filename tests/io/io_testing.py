"""Helpers shared by the tests/io files: torch -> NumPy, zip surgery, a code-execution tripwire, and
a memory-limited child process for the files that would eat the machine if a check regressed."""
import contextlib
import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np

import minicompress
from minicompress.io.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(minicompress.__file__)))

# Audit events (PEP 578) that loading a file must never raise: running programs or code (other than
# importing a module file from disk), loading native libraries, or opening anything for writing.
_FORBIDDEN = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
              "os.startfile", "exec", "ctypes.dlopen", "socket.connect", "os.remove", "os.rename")
_state = {"armed": False, "events": []}


def _hook(event, args):
    if not _state["armed"]:
        return
    writing = event == "open" and (
        (isinstance(args[1], str) and any(c in args[1] for c in "wax+"))
        or (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
    if event == "exec" and os.path.isfile(getattr(args[0], "co_filename", "")):
        return  # a module imported from disk (e.g. an encoding zipfile needs), not code from the file
    if event.startswith(_FORBIDDEN) or writing:
        _state["events"].append((event, repr(args)[:200]))


sys.addaudithook(_hook)


@contextlib.contextmanager
def no_code_execution():
    """Fail if the body runs a program, executes code, loads a library or opens a file for writing."""
    _state["armed"], _state["events"] = True, []
    try:
        yield
    finally:
        _state["armed"] = False
        events = _state["events"]
        assert not events, f"loading a file had side effects: {events}"


def torch_to_numpy(t):
    """What the loader must return for tensor ``t``: its values as NumPy (bfloat16 -> float32)."""
    import torch
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).contiguous().numpy()


def replace_member(data: bytes, suffix: str, content: bytes) -> bytes:
    """A copy of zip ``data`` whose member ending in ``suffix`` holds ``content`` (with a valid CRC)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, content if info.filename.endswith(suffix) else src.read(info))
    return out.getvalue()


def pickle_member(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))


def assert_same(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected), (list(loaded), list(expected))
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, (key, loaded[key].dtype, value.dtype)
        assert loaded[key].shape == value.shape, (key, loaded[key].shape, value.shape)
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def set_declared_size(data: bytes, member: str, size: int) -> bytes:
    """A copy of zip ``data`` whose headers (local and central) say ``member`` inflates to ``size`` bytes."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info, start = archive.getinfo(member), archive.start_dir
    struct.pack_into("<I", out, info.header_offset + 22, size)
    entry = start
    while out[entry:entry + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", out, entry + 28)
        if out[entry + 46:entry + 46 + name_len].decode() == member:
            struct.pack_into("<I", out, entry + 24, size)
        entry += 46 + name_len + extra_len + comment_len
    return bytes(out)


def zeros_member(archive: zipfile.ZipFile, member: str, nbytes: int, header: bytes = b"") -> None:
    """Write ``header`` then ``nbytes`` zero bytes as ``member``, deflated 1 MiB at a time (a "bomb")."""
    chunk = bytes(1 << 20)
    with archive.open(member, "w") as f:
        f.write(header)
        for start in range(0, nbytes, len(chunk)):
            f.write(chunk[:min(len(chunk), nbytes - start)])


def run_limited(code: str, *args: str, memory: int = 3 << 29, timeout: float = 120) -> tuple[str, float]:
    """Run ``code`` in a child Python limited to ``memory`` bytes of address space (RLIMIT_AS).

    The child imports minicompress from this work tree. Returns ``(stdout, seconds)``; fails the
    test if the child fails (a MemoryError there means a limit regressed).
    """
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "PYTHONPATH": REPO}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                            timeout=timeout, preexec_fn=limit, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, f"the child failed ({seconds:.1f} s):\n{result.stderr[-3000:]}"
    return result.stdout, seconds


LOAD_IN_CHILD = """
import sys
import minicompress.io as mio
loader, max_bytes, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
for path in paths:
    try:
        result = getattr(mio, loader)(path, **({} if max_bytes == "default" else {"max_bytes": int(max_bytes)}))
    except mio.FileFormatError as e:
        print("refused:", e)
    else:
        print("loaded:", {k: getattr(v, "nbytes", v) for k, v in result.items()} if isinstance(result, dict)
              else type(result).__name__)
"""


def load_in_child(paths, loader: str = "load_state_dict_file", max_bytes="default",
                  memory: int = 3 << 29) -> tuple[list[str], float]:
    """``minicompress.io.<loader>(path, max_bytes=...)`` for each path in a memory-limited child
    (``run_limited``): one line per file, ``refused: <message>`` or ``loaded: <summary>``."""
    out, seconds = run_limited(LOAD_IN_CHILD, loader, str(max_bytes), *map(str, paths), memory=memory)
    return out.splitlines(), seconds


# ------------------------------------------------ hand-made checkpoints: the opcodes torch.save writes
def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text):
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(n):
    return b"J" + struct.pack("<i", n)


def op_long(n):
    """LONG1: any int, e.g. 10**10 (BININT stops at 2**31)."""
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def op_tuple(*items):
    return b"(" + b"".join(items) + b"t"


def tensor_record(size, stride, offset=0, numel=4, storage="FloatStorage", key="0", legacy=False):
    """The pickle opcodes torch.save emits for one tensor (``_rebuild_tensor_v2``)."""
    pid = [op_str("storage"), op_global("torch", storage), op_str(key), op_str("cpu"), op_int(numel)]
    pid += [b"N"] if legacy else []
    return (op_global("torch._utils", "_rebuild_tensor_v2")
            + op_tuple(op_tuple(*pid) + b"Q", op_int(offset), op_tuple(*map(op_int, size)),
                       op_tuple(*map(op_int, stride)), b"\x89", op_global("collections", "OrderedDict") + b")R")
            + b"R")


def state_dict_pickle(**records):
    body = b"".join(op_str(k) + v for k, v in records.items())
    return b"\x80\x02}(" + body + b"u."


def zip_checkpoint(data_pkl, storages=None):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)
    return out.getvalue()


def legacy_checkpoint(main_pickle, storages=None):
    storages = storages or {}
    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}))
    tail = pickle.dumps(list(storages), protocol=2)
    blobs = b"".join(struct.pack("<q", len(raw) // 4) + raw for raw in storages.values())
    return head + main_pickle + tail + blobs
