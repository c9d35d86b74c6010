"""Atomic writes leave no debris: the temporary files of writes that were killed are removed by the
next write of the same target, and only those (io/atomic.py has the rule)."""
import os
import signal
import subprocess
import sys
import time

import pytest

import minicompress.io as mio
from io_testing import REPO
from minicompress.io.atomic import STALE_SECONDS

KILLED_WRITER = """
import os, signal, sys
import minicompress.io as mio
with mio.atomic_write(sys.argv[1]) as f:
    f.write(b"half a model")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(path):
    """Run a writer of ``path`` that is killed (SIGKILL) in the middle; returns its temporary file."""
    before = set(os.listdir(path.parent))
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO, timeout=60,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == -signal.SIGKILL
    (left,) = set(os.listdir(path.parent)) - before
    return path.parent / left


def age(path, seconds=STALE_SECONDS + 60):
    """Make ``path`` (created if missing) look last modified ``seconds`` ago."""
    path.touch(exist_ok=True)
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def write(path, content=b"new"):
    with mio.atomic_write(path) as f:
        f.write(content)


def test_the_next_write_removes_temporaries_of_killed_writes(tmp_path):
    target = tmp_path / "model.npz"
    write(target, b"old")
    stale = [age(killed_write(target)) for _ in range(3)]
    assert all(p.name.startswith(".model.npz.") and p.name.endswith(".tmp") for p in stale)
    assert target.read_bytes() == b"old"  # the killed writes never touched the target
    write(target)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"] and target.read_bytes() == b"new"


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    target = tmp_path / "a"
    gone = [age(killed_write(target)), age(tmp_path / ".a.0123456789ab.tmp")]  # the older format carries no pid
    keep = {
        "young, its writer dead": killed_write(target),
        "old, its writer alive": age(tmp_path / f".a.{os.getpid()}-0123456789ab.tmp"),
        "another target's": age(killed_write(tmp_path / "a.5")),
        "another target's, older format": age(tmp_path / ".a.5.0123456789ab.tmp"),
        "not a temporary name": age(tmp_path / ".a.99999999-0123456789ab.tmp.bak"),
        "not hex": age(tmp_path / ".a.99999999-0123456789zz.tmp"),
    }
    write(target)
    assert [p.exists() for p in gone] == [False, False]
    assert {what: p.exists() for what, p in keep.items()} == {what: True for what in keep}


def test_a_concurrent_live_writer_keeps_its_temporary(tmp_path):
    """A writer that has paused for longer than STALE_SECONDS is still running: its file stays."""
    target = tmp_path / "m.npz"
    with mio.atomic_write(target) as f:
        f.write(b"slow")
        f.flush()
        (mine,) = [p for p in tmp_path.iterdir() if p.name.startswith(".m.npz.")]
        age(mine)
        write(target, b"other writer")
        assert mine.exists()
    assert target.read_bytes() == b"slow"
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


@pytest.mark.parametrize("pid", ["0", "99999999999999999999999"])
def test_impossible_pids_count_as_dead(tmp_path, pid):
    stale = age(tmp_path / f".t.{pid}-0123456789ab.tmp")
    write(tmp_path / "t")
    assert not stale.exists()
