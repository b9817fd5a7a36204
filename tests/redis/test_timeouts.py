"""Timeouts against a real redis-server stopped with SIGSTOP: bounded by default, honoured once."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest
import redis

from chunkmap.errors import StoreConnectionError, StoreTimeoutError
from chunkmap.redis import DEFAULT_TIMEOUT, RedisArrayStore, ReplayBuffer


def connections_received(admin: redis.Redis) -> int:
    """How many connections the server has accepted, asked after it has run an event loop pass."""
    admin.ping()  # a pass after SIGCONT: connections queued while it was stopped are accepted by now
    return int(admin.info("stats")["total_connections_received"])


def receive_timeout(store: RedisArrayStore) -> float:
    """The kernel read timeout (SO_RCVTIMEO) of the calling thread's connection, in seconds."""
    sock = store._client._local.link.sock
    sec, usec = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("@ll")))
    return sec + usec / 1e6


def test_the_default_timeout_is_bounded(redis_url):
    with RedisArrayStore(redis_url) as store:
        store.ping()
        assert store._client.timeout == store._client.connect_timeout == DEFAULT_TIMEOUT == 10.0
        assert receive_timeout(store) == DEFAULT_TIMEOUT  # on the socket itself
    with RedisArrayStore(redis_url, socket_timeout=2.5) as store:
        store.ping()
        assert receive_timeout(store) == 2.5
        assert store.connection_kwargs == {"socket_timeout": 2.5}
    assert RedisArrayStore(redis_url).connection_kwargs == {}  # the default is not pickled as a choice


@pytest.mark.parametrize("connected", [True, False], ids=["open-connection", "fresh-store"])
@pytest.mark.parametrize("call", ["ping", "get_many", "put"])
def test_a_stopped_server_times_out_once(own_server, connected, call):
    server = own_server()
    admin = redis.Redis.from_url(server.url)
    store = RedisArrayStore(server.url, socket_timeout=1)  # the case: socket_timeout only
    if connected:
        store.put("k", np.ones(2))
    before = connections_received(admin)
    server.pause()
    try:
        t0 = time.perf_counter()
        with pytest.raises(StoreTimeoutError, match=r"no answer in time .*socket_timeout=1 s") as e:
            if call == "ping":
                store.ping()
            elif call == "get_many":
                store.get_many(["k"])
            else:
                store.put("k", np.zeros((80, 80)))
        elapsed = time.perf_counter() - t0
    finally:
        server.resume()
    assert isinstance(e.value, StoreConnectionError) and isinstance(e.value, TimeoutError)
    assert elapsed >= 0.9  # the timeout was waited for
    # honoured once: no second connection was opened to wait the timeout again
    assert connections_received(admin) - before == (0 if connected else 1)
    store.put("k", np.arange(3))  # the server is back: a fresh connection works
    np.testing.assert_array_equal(store.get("k"), np.arange(3))
    admin.close()


def test_a_replay_buffer_times_out_once(own_server):
    server = own_server()
    admin = redis.Redis.from_url(server.url)
    buf = ReplayBuffer(server.url, run="t", socket_timeout=0.5)
    buf.append(x=1)
    before = connections_received(admin)
    server.pause()
    try:
        with pytest.raises(StoreTimeoutError):
            buf.read("0-0")
    finally:
        server.resume()
    assert connections_received(admin) - before == 0
    buf.delete()
    admin.close()


@pytest.mark.slow
def test_a_stopped_server_times_out_by_default(own_server):
    server = own_server()
    admin = redis.Redis.from_url(server.url)
    store = RedisArrayStore(server.url)
    store.ping()
    before = connections_received(admin)
    server.pause()
    try:
        t0 = time.perf_counter()
        with pytest.raises(StoreTimeoutError, match=f"socket_timeout={DEFAULT_TIMEOUT} s"):
            store.ping()
        elapsed = time.perf_counter() - t0
    finally:
        server.resume()
    assert elapsed >= DEFAULT_TIMEOUT - 0.1
    assert connections_received(admin) - before == 0
    assert store.ping()
    admin.close()
