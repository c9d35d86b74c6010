"""Atomic file writes: write a temporary file next to the target, then ``os.replace`` it.

A reader sees either the old file or the complete new one, never a half-written file, and when
writing fails (full disk, an exception while serialising) the temporary file is removed and the
target is left untouched.

The temporary file is ``.<name>.<pid>-<12 hex digits>.tmp`` beside the target. A process killed
while writing leaves it behind, so each write of a target first removes the *stale* temporaries of
that same target — the files matching its pattern exactly (also the ``.<name>.<12 hex>.tmp`` of
older versions, which carry no pid) that are

- not modified for ``STALE_SECONDS`` (a live writer keeps touching its file), and
- not owned by a running process of this machine: the pid in the name does not exist (POSIX only;
  elsewhere, and for names without a pid, the age alone decides).

A writer in another container or on another host sharing the directory is protected by the age
rule only: one that pauses for longer than ``STALE_SECONDS`` in the middle of a write can lose its
temporary file, and then its ``os.replace`` fails (the target is never left half-written).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from typing import BinaryIO, Iterator

STALE_SECONDS = 60.0


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file for binary writing; on success it replaces ``path`` atomically.

    The temporary file lives in the same directory (``os.replace`` is only atomic within one file
    system) and is created with mode ``0o666`` minus the umask, like a file opened with ``open``.
    Stale temporary files of earlier, killed writes of ``path`` are removed first (module docstring).
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    remove_stale_temporaries(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def remove_stale_temporaries(directory: str, name: str) -> list[str]:
    """Delete the stale temporary files of target ``name`` in ``directory``; returns their paths.

    Never raises for a file that vanishes meanwhile or cannot be removed (a concurrent cleaner).
    """
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:(\d+)-)?[0-9a-f]{{12}}\.tmp")
    removed = []
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and _is_stale(entry, match.group(1)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed


def _is_stale(entry: os.DirEntry, pid: str | None) -> bool:
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    return age > STALE_SECONDS and not (pid is not None and _is_running(int(pid)))


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine; True when that cannot be known (not POSIX)."""
    if os.name != "posix":
        return True  # Windows' os.kill would terminate the process
    if pid <= 0:
        return False  # never a writer's pid (kill(0, ...) would address our process group)
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only the existence check is made
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
