"""SharedArray across processes: fork and spawn, workers started before the segment existed."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal

import numpy as np
import pytest
import shm_workers as w
from conftest import segments_of

from chunkmap.shm import SharedArray

pytestmark = pytest.mark.usefixtures("no_leak")


@pytest.fixture(scope="module", params=["fork", "spawn"])
def workers(request):
    """A pool of 2 worker processes started before any segment of the tests exists."""
    ctx = multiprocessing.get_context(request.param)
    with ctx.Pool(2) as pool:
        pool.apply(w.pid)  # the workers are up
        yield pool
        pool.close()
        pool.join()


def test_workers_started_before_the_segment_attach_and_write(workers):
    with SharedArray.from_array(np.zeros(1000)) as sa:
        pids = {pid for pid, _ in workers.map(w.add_one, [sa] * 6, chunksize=1)}
        assert pids and os.getpid() not in pids
        assert (sa.array == 6).all()


def test_one_mapping_per_worker_for_many_references(workers):
    with SharedArray.create((100, 100), "f4") as sa:
        # 1000 tasks, each unpickling its own copy of the same reference
        mmaps = {}
        for pid, mappings, mm in workers.map(w.mappings_after_attach, [sa] * 1000, chunksize=1):
            assert mappings == 1, f"worker {pid} mapped the segment {mappings} times"
            mmaps.setdefault(pid, set()).add(mm)
        assert all(len(ids) == 1 for ids in mmaps.values()), mmaps  # mapped once, not per task
        refs = [sa.rows(i % 100, i % 100 + 1) for i in range(1000)]  # distinct objects, one segment
        for pid, mappings, bases in workers.map(w.hold_many, [refs[k : k + 250] for k in range(0, 1000, 250)]):
            assert mappings == 1, f"worker {pid} mapped the segment {mappings} times"
            assert bases == 100


def test_reference_sent_through_a_queue_to_running_process():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        pool.apply(w.pid)
        with SharedArray.from_array(np.arange(10.0)) as sa:
            assert pool.apply(w.attach_and_report, (sa.name, sa.shape, sa.dtype)) == 45.0
        pool.close()
        pool.join()


def test_sigkill_of_attached_child_mid_use_leaves_nothing():
    ctx = multiprocessing.get_context("spawn")
    with SharedArray.create(1000, "i8") as sa:
        ready = ctx.Event()
        child = ctx.Process(target=w.use_forever, args=(sa, ready))
        child.start()
        assert ready.wait(60)
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        assert sa.array[0] > 0  # the child wrote; the memory is still ours and valid
        sa.array[:] = 3
        assert pickle.loads(pickle.dumps(sa)).array.sum() == 3000
        assert segments_of([child.pid]) == []
        name = sa.name
    assert name not in os.listdir("/dev/shm")


def test_long_lived_worker_drops_mappings_of_unlinked_segments():
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        old = SharedArray.create(1000)
        assert pool.apply(w.mappings_after_attach, (old.rows(0, 1),))[1] == 1
        assert pool.apply(w.maps_of, (old.name,)) == 1  # cached between tasks
        old.unlink()
        with SharedArray.create(1000) as new:
            assert pool.apply(w.maps_after_attaching, (new, old.name)) == (1, 0)
            assert pool.apply(w.forget_and_count, (new.name,)) == (1, 0)
        pool.close()
        pool.join()
