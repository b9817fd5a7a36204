"""SlotPool: token semantics, bounded shutdown in every failure mode, many producers and consumers."""

from __future__ import annotations

import multiprocessing
import pickle
import time

import numpy as np
import pytest
import shm_workers as w

from chunkmap.errors import InputError, OptionError
from chunkmap.shm import PoolClosedError, PoolTimeoutError, SharedArray, SlotPool
from chunkmap.shm.demo import run_pipeline

pytestmark = pytest.mark.usefixtures("no_leak")

FORK = multiprocessing.get_context("fork")


def test_single_process_round_and_fifo_order():
    with SlotPool(3, (2, 2), "i4") as pool:
        assert len(pool) == 3 and pool.shape == (2, 2) and pool.dtype == np.int32
        for k in range(3):
            with pool.get_free(timeout=1) as slot:
                slot.array[:] = k
        with pytest.raises(PoolTimeoutError):
            pool.get_free(timeout=0.05)
        got = pool.get_filled(timeout=1)
        assert int(got.array[0, 0]) == 0
        pool.release(got)
        pool.finish()
        assert pool.finished
        assert [int(s.array[0, 0]) for s in pool.filled(timeout=1)] == [1, 2]
        assert pool.get_filled(timeout=1) is None  # the end stays visible
        assert pool.get_filled(timeout=1) is None
        assert not pool.closed and pool.reason == ""


def test_misuse_is_reported():
    with pytest.raises(OptionError):
        SlotPool(0, 3)
    with pytest.raises(OptionError):
        SlotPool(1, 3, producers=0)
    with SlotPool(2, 3) as pool:
        slot = pool.get_free(timeout=1)
        with pytest.raises(InputError, match="held by a producer"):
            pool.release(slot)
        pool.publish(slot)
        with pytest.raises(InputError, match="already handed on"):
            pool.publish(slot)
        taken = pool.get_filled(timeout=0)
        with pytest.raises(InputError, match="held by a consumer"):
            pool.publish(taken)
        with pytest.raises(PoolTimeoutError):
            pool.get_filled(timeout=0)
        with SlotPool(1, 3) as other, pytest.raises(InputError, match="does not belong"):
            other.release(taken)


def test_end_of_data_waits_for_every_producer():
    with SlotPool(2, 1, producers=2) as pool:
        pool.finish()
        with pytest.raises(PoolTimeoutError):
            pool.get_filled(timeout=0.05)
        pool.finish()
        assert pool.get_filled(timeout=1) is None


def test_close_and_abort_in_process():
    pool = SlotPool(1, 4)
    held = pool.get_free(timeout=1)
    pool.abort("because")
    pool.abort("ignored: the first reason is kept")
    assert pool.closed and pool.reason == "because"
    with pytest.raises(PoolClosedError, match="because"):
        pool.publish(held)
    with pytest.raises(PoolClosedError, match="because"):
        pool.get_filled(timeout=1)
    with pytest.raises(PoolClosedError):
        pool.get_free(timeout=1)
    pool.close()
    pool.close()
    assert pool.closed and pool.reason == "because"
    with pytest.raises(PoolClosedError):
        pool.get_free(timeout=1)
    with pytest.raises(PoolClosedError):
        pickle.dumps(pool)


def test_exception_in_slot_block_aborts_pool():
    with SlotPool(2, 3) as pool:
        with pytest.raises(ZeroDivisionError):
            with pool.get_free(timeout=1) as slot:
                slot.array[:] = 1 / 0
        assert pool.closed and "ZeroDivisionError" in pool.reason and "producer" in pool.reason
        with pool.producing():  # ends quietly: someone else closed the pool
            pool.get_free(timeout=1)


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("fail", [None, "loader", "processor", "close"])
def test_pipeline_ends_in_bounded_time(method, fail):
    t = time.monotonic()
    report = run_pipeline(items=40, shape=(20_000,), start_method=method, fail=fail, timeout=30)
    assert time.monotonic() - t < 20
    assert None not in report.exitcodes  # nobody had to be killed
    if fail is None:
        assert report.ok and report.reason == ""
    elif fail == "close":
        assert report.exitcodes == [0, 0] and report.reason == "closed"
        assert (report.seen <= 1).all()
    else:
        assert f"{'producer' if fail == 'loader' else 'consumer'}" in report.reason
        assert "DemoError" in report.reason
        assert report.exitcodes == ([1, 0] if fail == "loader" else [0, 1])
        assert (report.seen <= 1).all() and report.seen.sum() < 40


@pytest.mark.parametrize("blocked", ["consumers", "producers"])
def test_close_wakes_every_blocked_party(blocked):
    out = FORK.Queue()
    with SlotPool(2, 8) as pool:
        target = w.block_on_filled if blocked == "consumers" else w.block_on_free
        procs = [FORK.Process(target=target, args=(pool, 60.0, out)) for _ in range(4)]
        for p in procs:
            p.start()
        time.sleep(0.3)  # all of them blocked (no producer, or no free slot left)
        t = time.monotonic()
        pool.close()
        results = [out.get(timeout=10) for _ in procs]
        for p in procs:
            p.join(10)
        assert time.monotonic() - t < 5
    assert all(kind == "PoolClosedError" for kind, _ in results), results
    assert all(p.exitcode == 0 for p in procs)


def test_timeout_without_counterpart():
    out = FORK.Queue()
    with SlotPool(1, 1) as pool:
        p = FORK.Process(target=w.block_on_filled, args=(pool, 0.2, out))
        p.start()
        kind, waited = out.get(timeout=10)
        p.join(10)
    assert kind == "PoolTimeoutError" and 0.15 < waited < 5


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_many_producers_many_consumers_every_item_once(method):
    ctx = multiprocessing.get_context(method)
    items, producers, consumers = 200, 3, 3
    with SlotPool(4, 16, "i8", producers=producers) as pool, SharedArray.create((consumers, items), "i8") as seen:
        procs = [ctx.Process(target=w.produce_items, args=(pool, range(i, items, producers), 30.0)) for i in range(producers)]
        procs += [ctx.Process(target=w.consume_into, args=(pool, seen, i, 30.0)) for i in range(consumers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * len(procs)
        total = seen.array.sum(axis=0)
        assert (total == 1).all(), np.flatnonzero(total != 1)
        assert (seen.array.sum(axis=1) > 0).sum() >= 1
        assert not pool.closed


def test_pool_pickles_to_spawned_process_only_at_start():
    with SlotPool(1, 1) as pool:
        with pytest.raises(RuntimeError, match="inheritance"):
            pickle.dumps(pool)  # e.g. on a queue after the processes started

