"""A run's output directory, written as one transaction: all of the new run or all of the old one.

``with output_directory(DIR) as work:`` locks DIR against a concurrent run (``fcntl.flock`` on
``.NAME.lock`` beside it), yields an empty temporary directory ``.NAME.tmp-XXXX`` beside DIR to
write into, and on success swaps it in for DIR in one step (Linux ``renameat2(RENAME_EXCHANGE)``;
elsewhere two renames, with a gap a kill can hit: then DIR is missing and the old run waits as
``.NAME.old-XXXX``). On an error or a kill the temporary directory is dropped (a killed one at the
next run's start) and DIR still holds the previous run, untouched.

The new DIR holds the new run's files and nothing else of a previous run (the files its
``report.json`` lists are dropped, stale stage files included). Anything else in DIR is the user's:
it is kept, hard-linked into the new directory before the swap, so a kill never loses it; a user's
file with a name the run will write is refused before any work starts, as is the current directory.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["output_directory", "run_files"]

REPORT = "report.json"


def run_files(report: dict) -> set[str]:
    """The files a run's report says it wrote (older reports: their stage files and fixed names)."""
    if "files" in report:
        return set(report["files"]) | {REPORT}
    files = {row["file"] for row in report.get("stages", []) if "file" in row}
    return files | {REPORT, "report.md", "accuracy_vs_size.png"}


def _foreign_entries(out: Path) -> list[Path]:
    """What in ``out`` is not part of the minicompress run it holds (everything, if it holds none)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a directory")
    try:
        report = json.loads((out / REPORT).read_text())
        ours = run_files(report) if isinstance(report, dict) and isinstance(report.get("stages"), list) else set()
    except (OSError, ValueError):
        ours = set()
    return sorted(p for p in out.iterdir() if p.name not in ours)


def _check_replaceable(out: Path, planned: set[str]) -> None:
    cwd = Path.cwd().resolve()
    if out.exists() and (cwd == out.resolve() or out.resolve() in cwd.parents):
        raise ValueError(f"--out {out} is (or contains) the current directory; choose a directory below it")
    clashes = sorted(p.name for p in _foreign_entries(out) if p.name in planned)
    if clashes:
        raise FileExistsError(f"--out {out} holds files of yours that this run would overwrite ({clashes}); "
                              f"move them or choose another directory, nothing was changed")


def _link_into(entry: Path, work: Path) -> None:
    """Hard-link a user's file (or directory tree) into the new run directory: no copy, nothing lost."""
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, work / entry.name, symlinks=True, copy_function=os.link)
        else:
            os.link(entry, work / entry.name, follow_symlinks=False)
    except OSError as exc:
        raise OSError(f"--out {entry.parent}: cannot keep your {entry.name!r} in the new run directory "
                      f"({exc}); move it out and run again, nothing was changed") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(out.parent / f".{out.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"--out {out}: another minicompress run is writing this directory; "
                                  f"wait for it or choose another --out") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_directory(out_dir: str | os.PathLike, planned: set[str] = frozenset()) -> Iterator[Path]:
    """Lock ``out_dir``, yield a fresh temporary directory beside it, swap it in on success (module doc).

    ``planned``: the names the run will write (checked against the user's files before it starts).
    """
    if str(out_dir).strip() == "":
        raise ValueError("--out must name a directory, got ''")
    out = Path(out_dir).absolute()
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out_dir}: the parent directory {out.parent} does not exist")
    with _locked(out):
        for stale in out.parent.glob(f".{out.name}.tmp-*"):      # left by killed runs (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        _check_replaceable(out, set(planned))
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)                           # as a plain mkdir would make it
        try:
            yield work
            for entry in _foreign_entries(out):
                if not (work / entry.name).exists():
                    _link_into(entry, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if not out.exists():
            os.rename(work, out)
        elif _exchange(work, out):
            shutil.rmtree(work)                                  # now the old run
        else:  # pragma: no cover - non-Linux fallback
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "run")
            os.rename(work, out)
            shutil.rmtree(old)
