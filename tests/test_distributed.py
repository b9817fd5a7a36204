"""chunkmap.run on dask.distributed: real `dask scheduler` and `dask worker` processes, and a LocalCluster."""

from __future__ import annotations

import time

import os

import numpy as np
import pytest
from distributed import Client

import chunkmap
from chunkmap.cli.demo import make_inputs as seed_inputs
from chunkmap.stub import slowlib

SENTINEL = -1e10


def test_real_workers_by_address_match_the_serial_loop(ew, cluster_address):
    a1, a2 = seed_inputs((50, 60), seed=11)
    mask = a1 <= SENTINEL
    result = chunkmap.run(slowlib.slow_computation, a2, a1, mask=mask, skip=slowlib.InternalError,
                          chunks=200, scheduler=cluster_address)
    ew.assert_matches_reference(result, slowlib.slow_computation, [a2, a1], mask=mask, skip=slowlib.InternalError)
    assert len(result.failures) > 0


def test_real_workers_run_python_functions_and_both_work(ew, cluster_address):
    a1, a2 = seed_inputs((30, 7, 5), seed=12)
    result = chunkmap.run(ew.add_or_boom, a1, a2, mask=lambda x, y: x <= SENTINEL, skip=ew.Boom,
                          chunks=50, scheduler=cluster_address)
    ew.assert_matches_reference(result, ew.add_or_boom, [a1, a2], mask=a1 <= SENTINEL, skip=ew.Boom)
    with Client(cluster_address, timeout="5s") as client:
        assert len(client.nthreads()) == 2
        processed = client.run(lambda: os.getpid())
        assert len(set(processed.values())) == 2


def test_real_workers_report_an_unlisted_exception(ew, cluster_address):
    with pytest.raises(chunkmap.ElementError, match=r"KeyError.*\(1, 1\).*\(3,\)"):
        chunkmap.run(ew.key_error_at_three, np.arange(6).reshape(3, 2), chunks=1, scheduler=cluster_address)


def test_local_cluster_client_matches_the_serial_loop(ew, local_cluster):
    a1, a2 = seed_inputs((40, 45), seed=13)
    mask = a1 <= SENTINEL
    result = chunkmap.run(ew.add_or_boom, a2, a1, mask=mask, skip=ew.Boom, client=local_cluster)
    ew.assert_matches_reference(result, ew.add_or_boom, [a2, a1], mask=mask, skip=ew.Boom)


def test_current_client_with_scheduler_distributed(ew, local_cluster):
    a = np.arange(100).reshape(10, 10)
    with local_cluster.as_current():
        result = chunkmap.run(ew.int_or_boom, a, a.T, skip=ew.Boom, chunks=9, scheduler="distributed")
    ew.assert_matches_reference(result, ew.int_or_boom, [a, a.T], skip=ew.Boom)
    result = chunkmap.run(ew.int_or_boom, a, skip=ew.Boom, scheduler=local_cluster)
    ew.assert_matches_reference(result, ew.int_or_boom, [a], skip=ew.Boom)


def test_scheduler_and_client_must_agree(local_cluster):
    with pytest.raises(chunkmap.errors.SchedulerError, match="scheduler='threads' contradicts client="):
        chunkmap.run(abs, np.arange(3), scheduler="threads", client=local_cluster)


def big_incoming_transfers(dask_worker) -> int:
    return sum(entry["total"] > 1_000_000 for entry in dask_worker.transfer_incoming_log)


def test_inputs_reach_each_worker_once_not_per_task(local_cluster):
    """200 tasks over 1.6 MB of inputs: each worker fetches the scattered inputs at most once."""
    before = local_cluster.run(big_incoming_transfers)
    a = np.random.default_rng(14).random(200_000)
    result = chunkmap.run(abs, a, chunks=1000, client=local_cluster)
    np.testing.assert_array_equal(result.values, a)
    after = local_cluster.run(big_incoming_transfers)
    assert all(after[w] - before[w] <= 1 for w in after)
    assert scheduler_forgets_every_task(local_cluster)


def scheduler_forgets_every_task(client, within: float = 10.0) -> bool:
    """Whether the scheduler holds no task within ``within`` seconds (the client's releases reach it
    asynchronously: right after a run, on a loaded machine, some may still be on their way)."""
    deadline = time.monotonic() + within
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_clusters_work_is_a_bag_whose_chunks_start_in_layout_order(ew, local_cluster):
    """On one worker thread the scheduler's order is the order chunks start (dask's own order of
    independent tasks is by key, putting chunk 9 before chunk 10 and chunk 0 last)."""
    import dask.bag as db

    from chunkmap.engine import chunk_task_bag
    from chunkmap.plan import Chunk

    tag = local_cluster.scatter("shipped")
    bag = chunk_task_bag([Chunk(i, i, i + 1, 1) for i in range(25)], ew.started_at, tag)
    assert isinstance(bag, db.Bag) and bag.npartitions == 25
    one = sorted(local_cluster.scheduler_info()["workers"])[:1]
    futures = local_cluster.compute(bag.to_delayed(optimize_graph=False), workers=one)
    results = [future.result() for future in futures]
    assert [index for (_, index), in results] == list(range(25))  # one partition per chunk, in order
    assert [index for (_, index), in sorted(results)] == list(range(25))
