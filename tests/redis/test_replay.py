"""ReplayBuffer on Redis streams against a real redis-server."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
import redis

from chunkmap.errors import CodecError, StoreError
from chunkmap.redis import ReplayBuffer
from chunkmap.redis.demo import simulate


@pytest.fixture
def buf(redis_url, namespace):
    b = ReplayBuffer(redis_url, run="r", namespace=namespace, maxlen=1000)
    yield b
    b.delete()


def step(i):
    return {"state": np.full((80, 80), i, np.uint16), "action": np.int64(i % 4), "reward": 0.5 * i}


def test_append_and_latest(buf):
    ids = [buf.append(step(i)) for i in range(5)]
    ids += buf.extend(step(i) for i in range(5, 10))
    assert len(ids) == 10 and ids == sorted(ids, key=lambda s: tuple(map(int, s.split("-"))))
    assert len(buf) == 10
    d = buf.latest(4)
    assert d["state"].shape == (4, 80, 80) and d["state"].dtype == np.uint16
    np.testing.assert_array_equal(d["action"], [6 % 4, 7 % 4, 8 % 4, 9 % 4])
    np.testing.assert_array_equal(d["reward"], [3.0, 3.5, 4.0, 4.5])
    assert d["_id"].tolist() == ids[-4:]
    assert buf.latest(100)["state"].shape[0] == 10
    assert buf.extend([]) == []


def test_ids_are_the_redis_strings(buf):
    ids = [buf.append(step(i)) for i in range(3)]
    d = buf.latest(3)
    assert d["_id"].dtype == object and d["_id"].shape == (3,)
    assert all(type(i) is str for i in d["_id"]) and list(d["_id"]) == ids
    assert list(d["_id"][d["reward"] > 0.6]) == ids[2:]  # indexed like the fields
    assert [i for i, _ in buf.read(d["_id"][0])] == ids[1:]  # an element passes back as an id
    assert list(buf.reader("0-0").poll()["_id"]) == ids


def test_stream_key_is_public(buf, redis_url, namespace):
    assert buf.key == namespace + "r"
    buf.append(step(0))
    buf.append(step(1))
    with redis.Redis.from_url(redis_url) as r:
        assert r.xlen(buf.key) == len(buf) == 2
    again = pickle.loads(pickle.dumps(buf))
    assert again.key == buf.key


def test_data_is_verified_by_default(buf, redis_url):
    buf.append(state=np.arange(1000.0))
    buf_off = ReplayBuffer(redis_url, run="off", namespace=buf.namespace, checksum=False)
    with redis.Redis.from_url(redis_url) as r:
        [(_, fields)] = r.xrange(buf.key)
        raw = bytearray(fields[b"state"])
        raw[-100] ^= 0xFF  # a flipped data byte, appended as the newest step
        r.xadd(buf.key, {"state": bytes(raw)})
        with pytest.raises(CodecError, match="field 'state'.*data's xxh3"):
            buf.latest(1)
        try:
            buf_off.append(state=np.arange(1000.0))
            [(_, fields)] = r.xrange(buf_off.key)
            assert len(fields[b"state"]) == len(raw) - 4  # no crc32 trailer when asked for none
        finally:
            buf_off.delete()


def test_keyword_and_bare_array_steps(buf):
    buf.append(state=np.zeros(3), reward=1.0)
    buf.append(np.arange(3))
    (_, s1), (_, s2) = buf.range()
    assert set(s1) == {"state", "reward"} and s2["array"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="at least one field"):
        buf.append()
    with pytest.raises(TypeError, match="not both"):
        buf.append({"a": 1}, b=2)


def test_reader_sees_only_new_steps(buf):
    buf.extend(step(i) for i in range(3))
    r = buf.reader()  # from now on
    assert r.poll() == {}
    buf.extend(step(i) for i in range(3, 6))
    np.testing.assert_array_equal(r.poll()["action"], [3 % 4, 4 % 4, 5 % 4])
    assert r.poll(block=0.05) == {}
    buf.append(step(6))
    assert r.poll(count=10)["reward"].tolist() == [3.0]
    r0 = buf.reader("0-0")
    assert len(r0.poll(count=4)["_id"]) == 4 and len(r0.poll()["_id"]) == 3
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.last_id == r.last_id and r2.poll() == {}


def test_bounded_length(redis_url, namespace):
    exact = ReplayBuffer(redis_url, run="exact", namespace=namespace, maxlen=10, exact=True)
    exact.extend({"x": np.int64(i)} for i in range(50))
    assert len(exact) == 10 and exact.latest(20)["x"].tolist() == list(range(40, 50))
    approx = ReplayBuffer(redis_url, run="approx", namespace=namespace, maxlen=100)
    for _ in range(5):
        approx.extend({"x": np.int64(i)} for i in range(200))
    assert 100 <= len(approx) < 1000  # MAXLEN ~ trims whole nodes
    assert exact.delete() and approx.delete()


def test_delete_run_and_runs(redis_url, namespace):
    a = ReplayBuffer(redis_url, run="a", namespace=namespace)
    b = ReplayBuffer(redis_url, run="b", namespace=namespace)
    a.append(x=1)
    b.append(x=2)
    assert a.runs() == ["a", "b"]
    assert a.delete() is True and a.delete() is False
    assert len(a) == 0 and a.latest(5) == {} and b.runs() == ["b"]
    b.delete()


def test_stack_mismatch_and_corruption(buf, namespace):
    buf.append(state=np.zeros(3))
    buf.append(state=np.zeros(4))
    with pytest.raises(StoreError, match="cannot stack field 'state'"):
        buf.latest(2)
    buf._client.call("XADD", buf.key, "*", "state", b"junk")
    with pytest.raises(CodecError, match="field 'state'"):
        buf.latest(1)


def test_many_spawned_producers(buf):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        assert pool.starmap(simulate, [(buf, 40, seed, (80, 80), 8) for seed in range(3)]) == [40] * 3
    d = buf.latest(1000)
    assert d["state"].shape == (120, 80, 80)
    assert sorted(np.bincount(d["worker"]).tolist()) == [40, 40, 40]
    assert repr(pickle.loads(pickle.dumps(buf))) == repr(buf)
