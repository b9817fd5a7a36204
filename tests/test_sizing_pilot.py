"""The pilot streams: on a simulated cluster of 1000 workers (benchmarks.simulate_pilot) and on a real one.

The simulation drives :class:`chunkmap.sizing.Pilot` and :func:`~chunkmap.sizing.auto_chunk_size`
on a simulated clock (the scheduler hands out a task per ms, every message takes 0.5 ms), so these
properties are checked against the rule, never against wall time.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from distributed import get_task_stream

import chunkmap
from benchmarks.simulate_pilot import simulate
from chunkmap import sizing

DISPATCH, HOP = 1e-3, 5e-4
CASES = [(workers, elements, per_call) for workers in (8, 1000) for elements in (10**4, 10**6, 10**8)
         for per_call in (1e-4, 1e-3, 1e-2)]


def sleepy(x):
    time.sleep(0.0005)
    return 3.0 * x


@pytest.mark.parametrize("workers, elements, per_call", CASES)
def test_the_pilot_is_no_barrier_and_the_chunks_keep_every_worker_busy(workers, elements, per_call):
    run = simulate(elements, workers, per_call, dispatch=DISPATCH, hop=HOP)
    work = elements * per_call
    assert run["work"] == pytest.approx(work)  # every element ran once
    floor = sizing.dispatch_floor(work, workers, DISPATCH)
    # every worker gets its first chunk as fast as the scheduler can hand them out
    assert run["workers_used"] == workers
    assert run["all_started_at"] <= workers * DISPATCH + 3 * HOP + 1e-9
    # a few generations at most, each one chunk per worker
    assert len(run["pilot_sizes"]) <= 4 and run["pilot_chunks"] <= 4 * workers
    if work / workers >= 20 * floor:  # the scheduler is not the limit: no worker waits between its chunks
        assert run["idle_between_tasks"] <= 0.02, run
        assert run["chunks"] >= 2 * workers  # at least two chunks each: they can end together
    if run["pilot_elements"] < elements:  # the rest was laid out: its tail is bounded by its chunks
        assert run["tail"] <= run["chunk_size"] * per_call / 4 + 2 * workers * DISPATCH + 0.01, run
    if work / workers >= 1000 * floor:
        assert run["pilot_elements"] <= 0.05 * elements
        assert run["end_over_ideal"] <= 1.05, run


@pytest.mark.parametrize("per_call", [1e-4, 1e-3])
def test_streaming_never_waits_longer_for_the_pilot_than_rounds(per_call):
    """With a shorter scheduler round trip than the calls, rounds leave workers idle; the stream does not."""
    stream = simulate(10**7, 1000, per_call, dispatch=DISPATCH, hop=HOP)
    rounds = simulate(10**7, 1000, per_call, dispatch=DISPATCH, hop=HOP, rounds=True)
    assert stream["work"] == pytest.approx(rounds["work"]) == pytest.approx(10**7 * per_call)
    assert stream["released_at"] < rounds["released_at"]
    assert stream["idle_between_tasks"] < rounds["idle_between_tasks"]


def test_the_chunk_size_keeps_the_scheduler_under_half_busy():
    # 10^8 calls of 1 ms on 1000 workers: chunks of at least 2 s (the scheduler needs 1 s to hand out 1000)
    size = sizing.auto_chunk_size(1e-3, 5e-4, 10**8, 1000)
    assert size * 1e-3 >= 1000 * DISPATCH / sizing.DISPATCH_SHARE
    # a small run cannot keep them all busy: fewer, longer chunks than 2 per worker
    small = sizing.auto_chunk_size(1e-3, 5e-4, 10**4, 1000)
    assert small * 1e-3 == pytest.approx(sizing.dispatch_floor(10.0, 1000), rel=0.02)
    # a latency of 10 ms per task (a loaded scheduler) makes chunks of 0.5 s, where 8 workers allow it
    assert sizing.auto_chunk_size(1e-3, 5e-4, 16_000, 8, latency=0.01) * 1e-3 == pytest.approx(0.5, rel=0.01)


def test_the_threaded_pilot_runs_each_generation_as_a_round_and_calls_each_element_once():
    calls: list[float] = []
    lock = threading.Lock()

    def record(x):
        with lock:
            calls.append(x)
        return x + 1.0

    a = np.random.default_rng(4).random(300_000)
    result = chunkmap.run(record, a, scheduler="threads", progress=False)
    assert sorted(calls) == sorted(a.tolist())
    np.testing.assert_array_equal(result.values, a + 1.0)


@pytest.mark.slow
def test_on_a_cluster_the_pilots_last_chunks_are_not_submitted_again(local_cluster, monkeypatch):
    from chunkmap.outputs import Outputs

    delivered: list[int] = []
    add = Outputs.add
    monkeypatch.setattr(Outputs, "add", lambda self, output: (delivered.append(output.index), add(self, output))[1])
    a = np.arange(3000.0)
    mask = a % 7 == 3  # the head's chunks end at unmasked counts: the rest's layout must match them
    with get_task_stream(client=local_cluster) as stream:
        result = chunkmap.run(sleepy, a, mask=mask, client=local_cluster, progress=False)
    np.testing.assert_array_equal(result.flat_index, np.flatnonzero(~mask))
    np.testing.assert_array_equal(result.values, 3.0 * a[~mask])
    names = [entry["key"][0] if isinstance(entry["key"], tuple) else entry["key"] for entry in stream.data]
    tasks = [name for name in names if str(name).startswith("chunkmap-sleepy-")]
    # each chunk delivered once and none lost, by as many tasks as chunks: none ran twice
    assert len(tasks) == len(delivered) == len(set(delivered)) == max(delivered) + 1


def sleepy_or_boom(x):
    time.sleep(0.0005)
    if x == 2900.0:
        raise ValueError(f"boom at {x}")
    return 3.0 * x


@pytest.mark.slow
def test_on_a_cluster_an_element_error_after_the_pilot_leaves_no_task_behind(local_cluster):
    with pytest.raises(chunkmap.ElementError, match=r"ValueError.*boom at 2900"):
        chunkmap.run(sleepy_or_boom, np.arange(3000.0), client=local_cluster, progress=False)
    deadline = time.monotonic() + 10
    while local_cluster.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert local_cluster.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_the_simulation_prints_its_table(capsys):
    from benchmarks import simulate_pilot

    rows = simulate_pilot.main(["--quick"])
    assert [row["elements"] for row in rows] == [10**4, 10**6] and all(row["workers"] == 100 for row in rows)
    assert "| 1e+06 |" in capsys.readouterr().out
