"""run(checkpoint="redis://..."): a real redis-server holds the finished chunks."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import chunkmap
from chunkmap.errors import StoreConnectionError
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
    rng = np.random.default_rng(0)
    a1, a2 = rng.random((50, 60)), rng.random((50, 60))
    a1[rng.random(a1.shape) < 0.1] = -1e11
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
    with pytest.raises(StoreConnectionError, match=r"the checkpoint store at redis://127.0.0.1:1 cannot be reached"):
        chunkmap.run(ew.scaled, np.zeros(3), np.zeros(3), checkpoint="redis://127.0.0.1:1", scheduler="sync")
