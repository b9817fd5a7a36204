"""Faults: the server dies during a batch write; no partially written array is ever readable."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from chunkmap.errors import StoreConnectionError
from chunkmap.redis import RedisArrayStore

N, SIDE = 48, 512  # 48 arrays of 512x512 float32 = 48 MiB: far more than the socket buffers


@pytest.mark.parametrize("ttl", [None, 60.0], ids=["mset", "multi-exec"])
def test_server_killed_during_batch_write(own_server, ttl):
    server = own_server(persist=True)  # append-only file, fsync always: acknowledged = durable
    store = RedisArrayStore(server.url, namespace="fault:", socket_timeout=10)
    committed = {f"old/{i}": np.full((SIDE, SIDE), i, np.float32) for i in range(4)}
    store.put_many(committed, ttl=ttl)
    batch = {f"new/{i}": np.full((SIDE, SIDE), 100 + i, np.float32) for i in range(N)}

    def crash():
        time.sleep(0.02)  # the client is sending by now
        server.pause()  # the server stops reading: the client blocks mid-batch
        time.sleep(0.3)
        server.kill()

    t = threading.Thread(target=crash)
    t.start()
    try:
        with pytest.raises(StoreConnectionError, match=f"cannot talk to Redis at {server.url}"):
            store.put_many(batch, ttl=ttl)
    finally:
        t.join()
    server.start()  # the same port and directory: it reloads the append-only file
    fresh = RedisArrayStore(server.url, namespace="fault:")
    got = fresh.get_many(list(batch), missing="default")
    for (k, a), b in zip(batch.items(), got):
        assert b is None or np.array_equal(a, b), k  # never a partial array
    assert all(b is None for b in got)  # MSET / MULTI-EXEC: the batch is all or nothing
    for k, a in committed.items():
        np.testing.assert_array_equal(fresh.get(k), a)  # the earlier batch survived whole


def test_server_stopped_then_back(own_server):
    server = own_server()
    store = RedisArrayStore(server.url, socket_connect_timeout=2)
    store.put("k", np.ones(2))
    server.stop()
    with pytest.raises(StoreConnectionError, match="is redis-server running"):
        store.get_many(["k"])
    server.start()
    store.put("k", np.ones(2))  # reconnects by itself
    np.testing.assert_array_equal(store.get("k"), np.ones(2))
