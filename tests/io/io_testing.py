"""Helpers shared by the tests/io files: torch -> NumPy, zip surgery, and a code-execution tripwire."""
import contextlib
import io
import os
import sys
import zipfile

import numpy as np

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
