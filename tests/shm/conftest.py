"""Fixtures of the shared-memory tests: worker functions importable by spawned children."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # shm_workers, for spawned children too

from chunkmap.shm import segment  # noqa: E402


def segments_of(pids, directory: str = segment.DEV_SHM) -> list[str]:
    """chunkmap segments in ``directory`` created by any of ``pids`` (other jobs share /dev/shm)."""
    heads = tuple(f"{segment.PREFIX}_{segment._NS}_{pid}_" for pid in pids)
    try:
        return sorted(e for e in os.listdir(directory) if e.startswith(heads))
    except FileNotFoundError:
        return []


@pytest.fixture
def no_leak():
    """Fail if the test leaves a segment created by this process in /dev/shm."""
    before = segments_of([os.getpid()])
    yield
    import gc

    gc.collect()
    assert segments_of([os.getpid()]) == before
