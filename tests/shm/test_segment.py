"""The /dev/shm fallback, the forced directory, and the sweep of dead processes' segments."""

from __future__ import annotations

import errno
import multiprocessing
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import shm_workers as w

from chunkmap.shm import SharedArray, SharedMemoryError, SharedMemoryFallbackWarning
from chunkmap.shm import segment

pytestmark = pytest.mark.usefixtures("no_leak")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """Fallback warnings and sweeps not yet done in this process; temp files in tmp_path."""
    monkeypatch.setattr(segment, "_WARNED", set())
    monkeypatch.setattr(segment, "_SWEPT", set())
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.delenv(segment.ENV_DIR, raising=False)
    return tmp_path


def test_missing_dev_shm_falls_back_to_a_file_and_warns_once(fresh, monkeypatch):
    monkeypatch.setattr(segment, "DEV_SHM", str(fresh / "no-such-dir"))
    with pytest.warns(SharedMemoryFallbackWarning, match="memory-mapped files"):
        sa = SharedArray.from_array(np.arange(5.0))
    assert sa.name.startswith(str(fresh)) and os.path.exists(sa.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = SharedArray.create(3)  # said once per process
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(w.add_one, (sa,))[1] == 15.0
        pool.close()
        pool.join()
    assert sa.array.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    name = sa.name
    sa.unlink()
    second.unlink()
    assert not os.path.exists(name)


def test_too_small_dev_shm_falls_back(fresh, monkeypatch):
    monkeypatch.setattr(segment, "_free_bytes", lambda path: 1000 if path == segment.DEV_SHM else 10**12)
    with SharedArray.create(10, "u1") as small:
        assert not os.path.isabs(small.name)
    with pytest.warns(SharedMemoryFallbackWarning, match="less than 2000 bytes"):
        with SharedArray.create(2000, "u1") as big:
            assert big.name.startswith(str(fresh))


def test_full_dev_shm_at_reservation_falls_back_and_unlinks(fresh, monkeypatch):
    real = os.posix_fallocate
    before = set(os.listdir(segment.DEV_SHM))

    def full(fd, offset, size):
        if os.fstat(fd).st_dev == os.stat(segment.DEV_SHM).st_dev:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, size)

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.warns(SharedMemoryFallbackWarning):
        with SharedArray.create(100) as sa:
            assert sa.name.startswith(str(fresh))
    assert not {e for e in set(os.listdir(segment.DEV_SHM)) - before if e.startswith(segment.PREFIX)}


def test_env_dir_forces_files_without_warning(fresh, monkeypatch):
    monkeypatch.setenv(segment.ENV_DIR, str(fresh))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with SharedArray.create((2, 2)) as sa:
            assert os.path.dirname(sa.name) == str(fresh)
    assert os.listdir(fresh) == []


def test_unwritable_fallback_dir_says_how_to_fix(fresh, monkeypatch):
    monkeypatch.setenv(segment.ENV_DIR, str(fresh / "missing"))
    with pytest.raises(SharedMemoryError, match="CHUNKMAP_SHM_DIR"):
        SharedArray.create(3)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_segments_of_dead_processes_only(fresh):
    dead, alive = _dead_pid(), os.getppid()
    for pid in (dead, alive):
        (fresh / f"{segment.PREFIX}_{segment._NS}_{pid}_abc").write_bytes(b"x")
    (fresh / f"{segment.PREFIX}_other-namespace_{dead}_abc").write_bytes(b"x")
    assert segment._sweep(str(fresh)) == [f"{segment.PREFIX}_{segment._NS}_{dead}_abc"]
    assert len(os.listdir(fresh)) == 2
    for f in fresh.iterdir():
        f.unlink()


def test_sweep_leaves_a_dead_creators_segment_to_its_live_tracker(fresh):
    dead, alive = _dead_pid(), os.getppid()
    head = f"{segment.PREFIX}_{segment._NS}"
    (fresh / f"{head}_{dead}_{alive}_abc").write_bytes(b"x")  # the tracker will unlink it, and say so
    (fresh / f"{head}_{dead}_{dead}_abc").write_bytes(b"x")  # nobody left: swept
    assert segment._sweep(str(fresh)) == [f"{head}_{dead}_{dead}_abc"]
    assert os.listdir(fresh) == [f"{head}_{dead}_{alive}_abc"]
    for f in fresh.iterdir():
        f.unlink()


def test_posix_segment_names_its_creator_and_tracker():
    from multiprocessing import resource_tracker

    with SharedArray.create(1) as sa:
        if not os.path.isabs(sa.name):
            creator, tracker = segment._pids_in_name(sa.name[len(f"{segment.PREFIX}_{segment._NS}_"):])
            assert (creator, tracker) == (os.getpid(), resource_tracker._resource_tracker._pid)
