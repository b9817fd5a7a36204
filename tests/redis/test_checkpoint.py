"""run(checkpoint="redis://..."): a real redis-server holds the finished chunks."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import chunkmap
from chunkmap.cli.demo import make_inputs
from chunkmap.errors import CheckpointBusyError, CheckpointError, CheckpointUnreachableError, CheckpointWarning
from chunkmap.redis import DEFAULT_TIMEOUT
from chunkmap.redis.checkpoint import RedisChunkStore
from chunkmap.stub import slowlib
from chunkmap.testing import ChunkStoreTests


def fresh_store(url: str) -> RedisChunkStore:
    """A store of this test's own in the shared server."""
    return RedisChunkStore(url, namespace=f"test:{uuid.uuid4().hex[:8]}:")


def interrupt_after(limit):
    def hook(done, total, failed):
        if done >= limit:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_an_interrupted_run_resumes_from_redis(ew, redis_url, scheduler):
    a1, a2 = make_inputs((50, 60))
    options = dict(mask=a1 <= -1e10, skip=slowlib.InternalError, chunks=100, scheduler=scheduler,
                   checkpoint=fresh_store(redis_url))
    with pytest.raises(KeyboardInterrupt):
        chunkmap.run(slowlib.slow_computation, a2, a1, progress=interrupt_after(1000), **options)
    result = chunkmap.run(slowlib.slow_computation, a2, a1, **options)
    assert result.stats.resumed >= 900
    ew.assert_matches_reference(result, slowlib.slow_computation, [a2, a1], mask=a1 <= -1e10, skip=slowlib.InternalError)


def test_a_cluster_run_resumes_from_redis(ew, redis_url, cluster_address):
    a = np.random.default_rng(1).random((30, 30))
    store = fresh_store(redis_url)
    first = chunkmap.run(ew.scaled, a, a.T, chunks=90, checkpoint=store, scheduler=cluster_address)
    again = chunkmap.run(ew.scaled, a, a.T, chunks=90, checkpoint=store, scheduler="threads")
    assert again.stats.resumed == 900
    np.testing.assert_array_equal(again.values, first.values)


class TestRedisChunkStore(ChunkStoreTests):
    @pytest.fixture(autouse=True)
    def _server(self, redis_url):
        self.url = redis_url

    def make_store(self):
        return fresh_store(self.url)


def test_an_unreachable_store_is_a_clear_error(ew):
    with pytest.raises(CheckpointUnreachableError, match=r"the checkpoint store at redis://127.0.0.1:1 cannot be reached"):
        chunkmap.run(ew.scaled, np.zeros(3), np.zeros(3), checkpoint="redis://127.0.0.1:1", scheduler="sync")


@pytest.mark.slow
def test_a_stopped_store_is_waited_for_a_bounded_time(own_server):
    server = own_server()
    store = RedisChunkStore(server.url)
    options = store._client.get_connection_kwargs()
    assert options["socket_timeout"] == options["socket_connect_timeout"] == DEFAULT_TIMEOUT
    store.put("k", b"v")
    server.pause()
    try:
        with pytest.raises(CheckpointUnreachableError, match="cannot be reached .*Timeout"):
            store.get("k")
    finally:
        server.resume()
    assert store.get("k") == b"v"
    store.delete("k")


def flush_once_after(limit, url):
    """A progress hook that empties the whole Redis database once, half way (FLUSHDB)."""
    import redis

    flushed = []

    def hook(done, total, failed):
        if done >= limit and not flushed:
            flushed.append(done)
            with redis.Redis.from_url(url) as client:
                client.flushdb()

    return hook


def test_a_store_that_loses_everything_mid_run_is_noticed_and_the_rerun_is_exact(ew, own_server):
    server = own_server()
    a1, a2 = np.random.default_rng(3).random((2, 40, 50))
    options = dict(skip=ew.Boom, chunks=100, scheduler="threads", checkpoint=server.url)
    with pytest.warns(CheckpointWarning, match="lost the lease or manifest of run .* they were written again"):
        first = chunkmap.run(ew.add_or_boom, a1, a2, progress=flush_once_after(1000, server.url), **options)
    ew.assert_matches_reference(first, ew.add_or_boom, [a1, a2], skip=ew.Boom)
    with pytest.warns(CheckpointWarning, match=r"recorded 20 finished chunks but holds \d+: the store lost data"):
        again = chunkmap.run(ew.add_or_boom, a1, a2, **options)
    assert 0 < again.stats.resumed < 2000  # what was written after the flush is reused, the rest computed
    ew.assert_matches_reference(again, ew.add_or_boom, [a1, a2], skip=ew.Boom)


def test_evicted_records_and_a_restart_without_persistence(ew, own_server):
    import redis

    server = own_server()
    a1, a2 = np.random.default_rng(4).random((2, 30, 40))
    options = dict(skip=ew.Boom, chunks=100, scheduler="threads", checkpoint=server.url)
    chunkmap.run(ew.add_or_boom, a1, a2, **options)
    with redis.Redis.from_url(server.url) as client:
        evicted = sorted(client.scan_iter(match=b"chunkmap:checkpoint:*/chunk-*"))[::3]
        client.delete(*evicted)
    with pytest.warns(CheckpointWarning, match=rf"recorded 12 finished chunks but holds {12 - len(evicted)}: the store lost data"):
        partial = chunkmap.run(ew.add_or_boom, a1, a2, **options)
    assert partial.stats.resumed == 1200 - 100 * len(evicted)
    server.kill()  # a restart without persistence: everything is gone
    server.start()
    fresh = chunkmap.run(ew.add_or_boom, a1, a2, **options)
    assert fresh.stats.resumed == 0
    for result in (partial, fresh):
        ew.assert_matches_reference(result, ew.add_or_boom, [a1, a2], skip=ew.Boom)


def test_the_same_call_twice_at_once_on_redis(ew, redis_url):
    import threading

    store = chunkmap.Checkpoint(fresh_store(redis_url), name="slow")  # its closure holds events: named
    a = np.random.default_rng(5).random((20, 20))
    started, release = threading.Event(), threading.Event()

    def slow(x):
        started.set()
        release.wait(30)
        return x * 2

    outcome = {}
    first = threading.Thread(target=lambda: outcome.setdefault("result", chunkmap.run(
        slow, a, chunks=50, checkpoint=store, scheduler="sync")))
    first.start()
    try:
        assert started.wait(30)
        with pytest.raises(CheckpointBusyError, match=rf"process {os.getpid()} on host"):
            chunkmap.run(slow, a, chunks=50, checkpoint=store, scheduler="sync")
    finally:
        release.set()
        first.join()
    np.testing.assert_array_equal(outcome["result"].values, a.reshape(-1) * 2)
    assert chunkmap.run(slow, a, chunks=50, checkpoint=store, scheduler="sync").stats.resumed == 400


def test_a_full_redis_stops_the_run_with_a_checkpoint_error(ew, own_server):
    server = own_server(args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])
    a = np.random.default_rng(6).random(400_000)
    with pytest.raises(CheckpointError, match=r"refused SET: command not allowed when used memory .*give it memory \(maxmemory\) or use another"):
        chunkmap.run(ew.scaled, a, a, chunks=50_000, checkpoint=server.url, scheduler="threads")
    assert isinstance(CheckpointUnreachableError("x"), ConnectionError)


def connections_to(server) -> list:
    """This process's open TCP connections to ``server``."""
    import psutil

    return [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == server.port]


@pytest.mark.parametrize("raises", [False, True], ids=["finished", "raised"])
def test_a_run_closes_the_connections_of_the_store_it_opened(ew, own_server, raises):
    """The store a run opens from a URL closes its sockets when the run ends, not when the garbage
    collector finds them (a socket it found open failed a later test with a ResourceWarning)."""
    import gc

    server = own_server()
    a1, a2 = np.random.default_rng(7).random((2, 30, 40))
    gc.disable()  # what the collector would close, the run must have closed itself
    try:
        if raises:
            with pytest.raises(chunkmap.ElementError):
                chunkmap.run(ew.add_or_boom, a1, a2, chunks=100, checkpoint=server.url, scheduler="threads")
        else:
            chunkmap.run(ew.add_or_boom, a1, a2, skip=ew.Boom, chunks=100, checkpoint=server.url,
                         scheduler="threads")
        assert connections_to(server) == []
    finally:
        gc.enable()


def test_a_store_passed_in_stays_open_for_the_next_run(ew, own_server):
    server = own_server()
    a1, a2 = np.random.default_rng(8).random((2, 20, 20))
    spec = chunkmap.Checkpoint(RedisChunkStore(server.url))
    first = chunkmap.run(ew.add_or_boom, a1, a2, skip=ew.Boom, chunks=100, checkpoint=spec, scheduler="sync")
    assert connections_to(server)  # the caller's store, the caller's connections
    again = chunkmap.run(ew.add_or_boom, a1, a2, skip=ew.Boom, chunks=100, checkpoint=spec, scheduler="sync")
    assert again.stats.resumed == len(first) + first.failed_count
    spec.store.close()
    assert connections_to(server) == []
