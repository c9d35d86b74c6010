"""Drop Numba's on-disk cache of our kernels when any kernel source file changed.

Numba (``cache=True``) re-validates a cached function only against the file that defines it. Our kernels call
and inline kernels of other files (``gemm.py`` inlines ``vnni.py``'s micro-kernel, ``depthwise.py`` and
``conv_implicit.py`` inline ``gemm.py``'s epilogue), so after an edit or an upgrade that changes only the callee's
file, Numba would load machine code compiled from the old callee -- stale results at best; during development
here it segfaulted. So at import, the size and mtime of every file holding kernels are compared with a stamp in
``minicompress/__pycache__``; on a difference all of the package's ``*.nbi`` / ``*.nbc`` files are deleted and
recompiled on first use -- beside the sources, or under ``NUMBA_CACHE_DIR`` when that is set (where Numba then
keeps them). The check costs a few ``stat`` calls; a read-only install is left alone (Numba then caches in the
user's cache folder or not at all).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
KERNEL_FILES = ("nn/kernels.py", "optim/kernels.py", "prune/kernels.py", "inference/kernels.py",
                "inference/conv_f32.py", "quant/kernels.py", "quant/gemm.py", "quant/vnni.py", "quant/avx2.py",
                "quant/depthwise.py", "quant/conv_implicit.py", "quant/register_store.py", "quant/qops.py",
                "quant/rounding.py")


def cache_dir(directory: Path) -> Path:
    """Where Numba caches the functions of the source files in ``directory``: its ``__pycache__``, or with
    ``NUMBA_CACHE_DIR`` set, a folder of that directory named by Numba's own rule (``UserProvidedCacheLocator``)."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if not root:
        return directory / "__pycache__"
    from numba.core.caching import UserProvidedCacheLocator
    return Path(root) / UserProvidedCacheLocator.get_suitable_cache_subpath(str(directory / "__init__.py"))


def stamp_path(root: Path = PACKAGE) -> Path:
    """The stamp of the fingerprint the cache was compiled from, in the package's own cache folder."""
    return cache_dir(root) / "numba-kernels.stamp"


def fingerprint(root: Path = PACKAGE) -> str:
    """A digest of the kernel files' sizes and modification times and of ``MINICOMPRESS_VNNI`` (the kernels
    compile ``vnni.USE_VNNI`` in as a constant). (A new Numba version needs nothing here: Numba's own index
    records its version and ignores entries of another.)"""
    h = hashlib.sha256()
    h.update(f"MINICOMPRESS_VNNI={os.environ.get('MINICOMPRESS_VNNI', '1')};".encode())   # compiled in as USE_VNNI
    for name in KERNEL_FILES:
        try:
            st = (root / name).stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{name}:missing;".encode())
    return h.hexdigest()


def purge_stale(root: Path = PACKAGE) -> bool:
    """Delete the Numba cache files of the kernel directories if the kernels changed since the stamp; True if it
    purged."""
    stamp, current = stamp_path(root), fingerprint(root)
    try:
        if stamp.read_text() == current:
            return False
    except OSError:
        pass
    try:
        for directory in {cache_dir((root / name).parent) for name in KERNEL_FILES}:
            for path in directory.glob("*.nb[ic]"):
                path.unlink(missing_ok=True)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(current)
        os.replace(tmp, stamp)
    except OSError:                     # read-only install: nothing we may delete
        return False
    return True
