"""The single-request path and the busy-poll option, against a real redis-server."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest
import redis
from packaging.requirements import Requirement

from chunkmap import codec
from chunkmap.errors import StoreError, StoreTimeoutError
from chunkmap.redis._resp import pack_parts
from chunkmap.redis import RedisArrayStore
from chunkmap.redis import _adapter

PYPROJECT = os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml")

ARRAYS = {
    "80x80 u2": np.arange(6400, dtype=np.uint16).reshape(80, 80),
    "200x200 u2": np.arange(40000, dtype=np.uint16).reshape(200, 200),
    "empty": np.zeros((0, 3), np.float32),
    "scalar": np.array(7, np.int64),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided": np.arange(100, dtype=">i4")[::3],
    "datetime": np.arange(5).astype("<M8[ms]"),
    # 32 MiB: more than the socket buffers, so the single sendmsg sends part and the rest follows
    "32 MiB f8": np.random.default_rng(0).random((2048, 2048)),
    "32 MiB datetime": np.arange(1 << 22).astype("<M8[ms]").reshape(2048, 2048),
}


@pytest.fixture(params=[0.0, 200e-6], ids=["blocking", "spin"])
def store(request, redis_url, namespace):
    s = RedisArrayStore(redis_url, namespace=namespace, spin=request.param)
    yield s
    s.delete_prefix("")
    s.close()


@pytest.mark.parametrize("name", list(ARRAYS))
def test_put_get_round_trip(store, name):
    a = ARRAYS[name]
    store.put(name, a)
    b = store.get(name)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    # the batch path and the single path agree, on the same connection
    store.put_many({name + "/m": a})
    np.testing.assert_array_equal(store.get(name + "/m"), a)
    np.testing.assert_array_equal(store.get_many([name])[0], a)


def test_many_single_requests_stay_in_step(store):
    a = ARRAYS["80x80 u2"]
    for i in range(300):
        store.put(f"s/{i % 7}", a + i)
        assert int(store.get(f"s/{i % 7}")[0, 0]) == i
    store.put("big", ARRAYS["32 MiB f8"])
    assert store.exists("big") and not store.exists("nope")
    np.testing.assert_array_equal(store.get("s/0"), a + 294)


def test_error_replies_stay_clear(store, namespace):
    store._client.call("LPUSH", namespace + "list", b"x")
    with pytest.raises(StoreError, match="refused GET: WRONGTYPE"):
        store.get("list")
    with pytest.raises(StoreError, match="refused SET: invalid expire time"):
        store._client.call("SET", namespace + "k", b"v", "PX", -5)
    store.put("after", np.ones(2))  # the connection is still in step after error replies
    np.testing.assert_array_equal(store.get("after"), np.ones(2))


def test_spin_is_validated_and_pickled(redis_url):
    assert RedisArrayStore(redis_url).spin == 0.0
    s = RedisArrayStore(redis_url, spin=1e-4)
    assert s.spin == 1e-4
    assert pickle.loads(pickle.dumps(s)).spin == 1e-4
    for bad in (-1e-6, 0.5):
        with pytest.raises(ValueError, match="spin must be between 0"):
            RedisArrayStore(redis_url, spin=bad)
    with pytest.raises(TypeError, match="spin is a number of seconds"):
        RedisArrayStore(redis_url, spin="fast")


def test_spin_is_bounded_when_no_reply_comes(own_server):
    """A reply that does not come within ``spin`` leaves the client blocked, not spinning."""
    server = own_server()
    s = RedisArrayStore(server.url, spin=0.01, socket_timeout=30)
    s.put("k", np.ones(2))
    # a reply delayed 0.5 s by a paused server: the client must sleep after 10 ms of spinning
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        threading.Timer(0.5, os.kill, (server.proc.pid, signal.SIGCONT)).start()
        t0, c0 = time.perf_counter(), time.process_time()
        np.testing.assert_array_equal(s.get("k"), np.ones(2))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert wall >= 0.4
    assert cpu < 0.25, f"spun for {cpu:.3f} s of CPU while waiting {wall:.3f} s"


@pytest.mark.parametrize("spin", [0.0, 200e-6], ids=["blocking", "spin"])
def test_timeout_is_a_clear_error(own_server, spin):
    server = own_server()
    s = RedisArrayStore(server.url, socket_timeout=0.3, socket_connect_timeout=0.3, spin=spin)
    s.put("k", np.ones(2))
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.perf_counter()
        with pytest.raises(StoreTimeoutError, match=f"cannot talk to Redis at {server.url}: no answer in time"):
            s.get("k")
        assert time.perf_counter() - t0 < 5  # one try, bounded by the timeout (tests/redis/test_timeouts.py)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    np.testing.assert_array_equal(s.get("k"), np.ones(2))  # a fresh connection works again


@pytest.mark.parametrize("name", ["80x80 u2", "fortran", "strided", "datetime"])
def test_checksummed_values_are_sent_without_a_copy(name):
    a = ARRAYS[name]
    parts, total = pack_parts(("SET", b"k", codec.encode_parts(a, checksum=True)))
    joined, _ = pack_parts(("SET", b"k", codec.encode(a, checksum=True)))
    assert b"".join(p if type(p) is bytes else p.reshape(-1).view("u1") for p in parts) == joined[0]
    assert total == len(joined[0])
    if a.flags.c_contiguous or a.flags.f_contiguous:
        assert any(type(p) is not bytes and np.shares_memory(p, a) for p in parts)  # the data, in place


def test_connection_killed_by_the_server_is_retried(own_server):
    server = own_server()
    s = RedisArrayStore(server.url)
    s.put("k", np.arange(3))
    with socket.create_connection(("127.0.0.1", server.port)) as admin:
        admin.sendall(b"CLIENT KILL TYPE normal\r\n")
        assert admin.recv(64).startswith(b":")
    np.testing.assert_array_equal(s.get("k"), np.arange(3))  # reconnected once, transparently


def test_kernel_timeouts_replace_python_timeouts(redis_url):
    s = RedisArrayStore(redis_url, socket_timeout=2.5)
    assert s.ping()
    link = s._client._local.link
    if not sys.platform.startswith("linux"):
        pytest.skip("kernel socket timeouts are used on Linux only")
    assert link.sock.gettimeout() is None  # blocking: no poll() before each send and recv
    tv = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
    assert np.frombuffer(tv, np.int64).tolist() == [2, 500000]
    # a blocking command's own timeout is set for its read and restored after
    s._client.execute((("BLPOP", "nothing", 0.1),), timeout=7)
    assert link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == tv


def _child_round_trip(store: RedisArrayStore) -> None:
    store.put("fork/child", np.full(4, os.getpid()))
    os._exit(0 if int(store.get("fork/child")[0]) == os.getpid() else 1)


def test_forked_children_open_their_own_connection(store):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    store.put("fork/parent", np.ones(3))  # the parent has a connection before forking
    link = store._client._local.link
    # the child inherits this very store object (and its thread's connection): not pickled
    child = multiprocessing.get_context("fork").Process(target=_child_round_trip, args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert store._client._local.link is link  # the parent's connection was neither replaced ...
    np.testing.assert_array_equal(store.get("fork/parent"), np.ones(3))  # ... nor disturbed
    assert int(store.get("fork/child")[0]) == child.pid


@pytest.mark.parametrize("spin", [0.0, 200e-6], ids=["blocking", "spin"])
def test_unix_socket(own_server, tmp_path, spin):
    path = tmp_path / "redis.sock"
    server = own_server(args=["--unixsocket", str(path), "--unixsocketperm", "700"])
    s = RedisArrayStore(f"unix://{path}?db=2", namespace="ux:", spin=spin)
    for name in ("80x80 u2", "32 MiB f8"):
        s.put(name, ARRAYS[name])
        np.testing.assert_array_equal(s.get(name), ARRAYS[name])
    assert not RedisArrayStore(server.url, namespace="ux:").exists("80x80 u2")  # db 2, not 0
    assert s.delete_prefix() == 2


def _redis_extra() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")
    with open(PYPROJECT, "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["redis"]
    return [Requirement(r) for r in extra]


def test_redis_py_contract(redis_url):
    """The one private piece of redis-py chunkmap uses, ``Connection._sock``, still means what
    chunkmap relies on: the handshaken connection's socket, closed by ``disconnect()``.

    If this fails after a redis-py upgrade, chunkmap.redis._adapter.connect must change (and
    TESTED and the pin in pyproject.toml with it).
    """
    (pin,) = [r for r in _redis_extra() if r.name == "redis"]
    assert str(pin.specifier) == str(Requirement(_adapter.TESTED).specifier), "TESTED and pyproject.toml disagree"
    assert pin.specifier.contains(redis.__version__), (
        f"redis-py {redis.__version__} is outside the tested {pin}: run this test's checks, then widen the pin"
    )
    pool = _adapter.connection_pool(redis_url + "/3")
    conn, sock = _adapter.connect(pool)
    assert sock is conn._sock and type(sock) is socket.socket
    sock.sendall(b"CLIENT INFO\r\n")  # handshake done by redis-py: the socket is on db 3
    assert b" db=3 " in sock.recv(4096)
    conn.disconnect()
    assert sock.fileno() == -1 and conn._sock is None


def test_error_replies_parse_as_redis_py_does(redis_url):
    reader = _adapter.reply_reader(_adapter.connection_pool(redis_url))
    reader.feed(b"-LOADING Redis is loading the dataset in memory\r\n-NOAUTH Authentication required.\r\n")
    reader.feed(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n+OK\r\n")
    loading, noauth, wrongtype, ok = (reader.gets() for _ in range(4))
    assert isinstance(loading, redis.exceptions.BusyLoadingError) and isinstance(loading, redis.ConnectionError)
    assert isinstance(noauth, redis.AuthenticationError) and isinstance(noauth, redis.ConnectionError)
    assert type(wrongtype) is redis.ResponseError and str(wrongtype).startswith("WRONGTYPE Operation")
    assert ok == b"OK" and reader.gets() is _adapter.MORE
