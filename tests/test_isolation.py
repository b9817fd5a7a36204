"""Crashes and hangs in func cost one element each, on local processes and on real dask workers."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client

import chunkmap
from chunkmap.stub import set_cost
from chunkmap.errors import OptionError
from chunkmap.errors import WorkerStartError
from chunkmap.kernel import Execution
from chunkmap.local.isolation import evaluate_isolated
from chunkmap.stub import slowlib
from chunkmap.local.pool import WorkerPool

CRASH_AT = [(0, 3), (7, 7), (19, 29)]
HANG_AT = [(11, 2)]


def poisoned_inputs(crash_at=(), hang_at=(), shape=(20, 30), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = rng.random(shape)
    for coords in crash_at:
        a[coords] = slowlib.CRASH_VALUE
    for coords in hang_at:
        a[coords] = slowlib.HANG_VALUE
    return a, b


def assert_isolated(result, a, b, crash_at=(), hang_at=()):
    """Exactly the poisoned elements failed with their kind; everything else equals the serial loop."""
    poisoned = {tuple(c): "crash" for c in crash_at} | {tuple(c): "timeout" for c in hang_at}
    expected_values, expected_coords, expected_failures = [], [], []
    for index in np.ndindex(a.shape):
        if index in poisoned:
            expected_failures.append((index, poisoned[index]))
            continue
        try:
            value = slowlib.slow_computation(a[index].item(), b[index].item())
        except slowlib.InternalError:
            expected_failures.append((index, "exception"))
        else:
            expected_coords.append(index)
            expected_values.append(value)
    assert list(zip(*result.coords)) == expected_coords
    assert result.values.tolist() == expected_values
    assert [(f.coords, f.kind) for f in result.failures] == expected_failures
    for failure in result.failures:
        if failure.kind == "crash":
            assert failure.type == "SIGSEGV" and "Segmentation fault" in failure.message
        if failure.kind == "timeout":
            assert failure.type == "Timeout" and "did not return within" in failure.message


def test_crashes_on_local_processes_cost_one_element_each():
    a, b = poisoned_inputs(CRASH_AT)
    result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, chunks=100)
    assert_isolated(result, a, b, crash_at=CRASH_AT)
    assert result.stats.failed == len(result.failures)


def test_hang_with_timeout_on_local_processes():
    a, b = poisoned_inputs(CRASH_AT[:1], HANG_AT)
    result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, timeout=1.0, chunks=200)
    assert_isolated(result, a, b, crash_at=CRASH_AT[:1], hang_at=HANG_AT)


def test_crash_and_hang_on_real_dask_workers(cluster_address):
    a, b = poisoned_inputs(CRASH_AT, HANG_AT, seed=1)
    result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, timeout=1.0,
                          chunks=150, scheduler=cluster_address)
    assert_isolated(result, a, b, crash_at=CRASH_AT, hang_at=HANG_AT)
    with Client(cluster_address, timeout="5s") as client:
        assert len(client.nthreads()) == 2  # the dask workers themselves survived


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_timeout_needs_isolation(scheduler):
    with pytest.raises(OptionError, match=f"timeout= needs calls isolated in worker processes, which scheduler='{scheduler}'"):
        chunkmap.run(abs, np.arange(3), timeout=1, scheduler=scheduler)


@pytest.mark.parametrize("timeout", [0, -1, "1s", True])
def test_timeout_must_be_positive_seconds(timeout):
    with pytest.raises(OptionError, match="timeout must be a positive number of seconds"):
        chunkmap.run(abs, np.arange(3), timeout=timeout)


def test_one_poisoned_element_in_a_chunk_of_10000_needs_two_restarts():
    a = np.linspace(0.0, 1.0, 10_000)
    a[6_543] = slowlib.CRASH_VALUE
    b = np.full_like(a, 0.25)
    runs = []
    with WorkerPool(1) as pool:
        execution = Execution(slowlib.slow_computation, (slowlib.InternalError,), progress=runs.append)
        evaluation = evaluate_isolated([a, b], execution, pool)
        assert pool.restarts == 2  # the chunk's worker, then the culprit's confirmation run
    crashes = [f for f in evaluation.failures if f[1] == "SIGSEGV"]
    assert crashes == [(6_543, "SIGSEGV", crashes[0][2])]
    assert sum(runs) == 10_000  # every element counted once


def test_a_worker_that_cannot_start_gives_a_clear_error(ew):
    with pytest.raises(WorkerStartError, match="exited with code 3 twice before evaluating any element"):
        chunkmap.run(ew.ExitsInWorker(), np.arange(4), scheduler="processes")


def test_cancel_stops_busy_workers_at_once():
    a = np.full(50, 0.5)
    a[0] = slowlib.HANG_VALUE
    cancelled = threading.Event()
    threading.Timer(0.5, cancelled.set).start()
    started = time.monotonic()
    with WorkerPool(1) as pool:
        with pytest.raises(chunkmap.local.pool.Cancelled):
            evaluate_isolated([a, a], Execution(slowlib.slow_computation, cancelled=cancelled), pool)
    assert time.monotonic() - started < 10


def test_killing_a_dask_worker_mid_run_still_completes(ew, cluster_address):
    """SIGKILL one real `dask worker` process during a run: its nanny restarts it, work is redone."""
    with Client(cluster_address, timeout="5s") as client:
        client.run(set_cost, 2_000_000)  # 2 ms per call: 2,000 calls take ~2 s on 2 workers
        pid = next(iter(client.run(os.getpid).values()))
        killed_at = []

        def kill():
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

        try:
            a, b = poisoned_inputs(seed=3, shape=(40, 50))
            killer = threading.Timer(1.0, kill)
            killer.start()
            result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, chunks=50,
                                  client=client)
            finished_at = time.monotonic()
            killer.join()
        finally:
            client.wait_for_workers(2, timeout=60)
            for _ in range(40):  # the restarted worker may still be registering
                try:
                    client.run(set_cost, 0)
                    break
                except OSError:
                    time.sleep(0.5)
    assert killed_at and killed_at[0] < finished_at, "the worker must die while the run is going on"
    assert_isolated(result, a, b)


def test_an_exception_in_the_progress_hook_leaves_the_pool_usable(monkeypatch):
    a = np.linspace(0, 1, 300)
    monkeypatch.setenv("SLOWLIB_COST_NS", "1000000")  # the worker is still busy when the hook raises

    def interrupt(elements):
        raise KeyboardInterrupt

    with WorkerPool(1) as pool:
        with pytest.raises(KeyboardInterrupt):
            execution = Execution(slowlib.slow_computation, (slowlib.InternalError,), progress=interrupt)
            evaluate_isolated([a, a], execution, pool)
        evaluation = evaluate_isolated([a, a / 2], Execution(slowlib.slow_computation, (slowlib.InternalError,)), pool)
    expected = []
    for x in a.tolist():
        try:
            expected.append(slowlib.slow_computation(x, x / 2))
        except slowlib.InternalError:
            pass
    assert evaluation.values.tolist() == expected


def test_requests_carry_names_and_offsets_not_the_data(monkeypatch):
    """A chunk of 2 x 1M float64 (16 MB) reaches its worker through shared memory: the request is tiny."""
    sizes = []
    original = chunkmap.local.pool.WorkerProcess.evaluate

    def recording(self, payload, *args, **kwargs):
        sizes.append(len(payload))
        return original(self, payload, *args, **kwargs)

    monkeypatch.setattr(chunkmap.local.pool.WorkerProcess, "evaluate", recording)
    a = np.random.default_rng(0).random(1_000_000)
    b = np.random.default_rng(1).random(1_000_000)
    with WorkerPool(1) as pool:
        evaluation = evaluate_isolated([a, b], Execution(slowlib.slow_computation, (slowlib.InternalError,)), pool)
    assert len(evaluation.status) == 1_000_000
    assert sizes and max(sizes) < 4_000


def test_workers_outlive_the_thread_that_needed_them():
    """A pool made from a short-lived thread keeps its workers after that thread ends."""
    pools = []

    def make_pool_then_end():
        pools.append(WorkerPool(1))
        time.sleep(1.5)  # the worker has started (and armed its parent-death signal) before we end

    thread = threading.Thread(target=make_pool_then_end)
    thread.start()
    thread.join()
    time.sleep(0.5)
    with pools[0] as pool:
        assert pool.alive()
        a = np.linspace(0, 1, 100)
        evaluate_isolated([a, a], Execution(slowlib.slow_computation, (slowlib.InternalError,)), pool)
        assert pool.restarts == 0


def test_a_closed_pool_starts_no_worker():
    """A thread still finishing when its pool is closed (and replaced) must not start new workers."""
    pool = WorkerPool(1)
    worker = pool.acquire()
    pool.close()
    replacement = pool.replace(worker)
    assert replacement is worker and replacement.process.poll() is not None
    assert pool.restarts == 0
    with pytest.raises(chunkmap.local.pool.Cancelled, match="the worker pool was closed"):
        pool.acquire()
