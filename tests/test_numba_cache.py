"""A changed kernel file drops the package's Numba cache (``minicompress/_numba_cache.py``)."""
import os
import re
from pathlib import Path

from minicompress import _numba_cache as NC


def test_a_changed_kernel_file_drops_every_cache_file(tmp_path):
    for name in NC.KERNEL_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# kernels\n")
    cached = tmp_path / "quant" / "__pycache__" / "gemm.qgemm-1.py311.nbi"
    cached.parent.mkdir()
    stamp = tmp_path / "__pycache__" / "numba-kernels.stamp"
    assert NC.purge_stale(tmp_path)                        # no stamp yet: purge, write the stamp
    assert stamp.exists()
    cached.write_text("index")
    assert not NC.purge_stale(tmp_path) and cached.exists()            # nothing changed: kept
    vnni = tmp_path / "quant" / "vnni.py"                  # only a callee's file changes
    vnni.write_text("# kernels, edited\n")
    os.utime(vnni, ns=(1, 1))
    assert NC.purge_stale(tmp_path) and not cached.exists()
    assert not NC.purge_stale(tmp_path)


def test_under_numba_cache_dir_the_purge_reaches_numbas_own_folders(tmp_path, monkeypatch):
    """With NUMBA_CACHE_DIR set Numba caches there, not beside the sources: the purge and the stamp follow it,
    to the folder Numba itself computes for a jitted function of a kernel file."""
    import numba
    from numba.core.caching import UserProvidedCacheLocator
    package, elsewhere = tmp_path / "pkg", tmp_path / "cache"
    for name in NC.KERNEL_FILES:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("# kernels\n")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(elsewhere))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(elsewhere))
    gemm = package / "quant" / "gemm.py"
    numbas = Path(UserProvidedCacheLocator.from_function(test_a_changed_kernel_file_drops_every_cache_file,
                                                         str(gemm)).get_cache_path())
    assert NC.cache_dir(gemm.parent) == numbas
    numbas.mkdir(parents=True, exist_ok=True)
    cached, beside = numbas / "gemm.qgemm-1.py311.nbi", package / "quant" / "__pycache__" / "gemm.x-1.py311.nbi"
    beside.parent.mkdir()
    assert NC.purge_stale(package) and NC.stamp_path(package).is_relative_to(elsewhere)
    cached.write_text("index"), beside.write_text("another setting's")
    os.utime(gemm, ns=(1, 1))
    assert NC.purge_stale(package) and not cached.exists() and beside.exists()


def test_the_installed_package_is_stamped():
    assert NC.stamp_path().read_text() == NC.fingerprint()


def test_every_file_that_compiles_kernels_is_fingerprinted():
    """A file defining jitted functions or emitting LLVM IR for them (``register_store.py``'s epilogues inlined
    into ``vnni.py``'s micro-kernel) must be in KERNEL_FILES, or an edit to it would leave stale machine code."""
    compiles = re.compile(r"@(njit|intrinsic|vectorize|overload|generated_jit)\b|\bcgutils\.")
    found = {str(path.relative_to(NC.PACKAGE)) for path in NC.PACKAGE.rglob("*.py")
             if compiles.search(path.read_text())}
    assert found and found <= set(NC.KERNEL_FILES), sorted(found - set(NC.KERNEL_FILES))


def test_the_vnni_switch_changes_the_fingerprint(monkeypatch):
    """``vnni.USE_VNNI`` is compiled into cached kernels: switching MINICOMPRESS_VNNI must purge them."""
    monkeypatch.setenv("MINICOMPRESS_VNNI", "1")
    on = NC.fingerprint()
    monkeypatch.setenv("MINICOMPRESS_VNNI", "0")
    assert NC.fingerprint() != on
