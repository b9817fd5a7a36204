"""RedisArrayStore against a real redis-server."""

from __future__ import annotations

import multiprocessing
import pickle
import time

import numpy as np
import pytest

from chunkmap.errors import CodecError, MissingKeyError, StoreConnectionError, StoreError
from chunkmap.redis import RedisArrayStore
from chunkmap.testing import free_port


class StoreTests:
    """The conformance suite of an array store: subclasses provide the ``store`` fixture."""

    def test_put_get_round_trip(self, store):
        for dtype in ("<u2", ">f8", "|b1", "<c8", "<M8[ms]", "<U4"):
            a = np.arange(24).astype(dtype).reshape(2, 3, 4)
            store.put(f"a/{dtype}", a)
            b = store.get(f"a/{dtype}")
            assert b.dtype.str == a.dtype.str and b.shape == a.shape
            np.testing.assert_array_equal(a, b)
        store.put("scalar", np.float32(2.5))
        assert store.get("scalar").shape == () and store.get("scalar") == 2.5
        store["item"] = np.ones(3)
        np.testing.assert_array_equal(store["item"], np.ones(3))

    def test_missing_key(self, store):
        with pytest.raises(MissingKeyError, match="no array under key 'nope'") as e:
            store.get("nope")
        assert isinstance(e.value, KeyError)
        with pytest.raises(MissingKeyError):
            del store["nope"]

    def test_many(self, store):
        arrays = {f"m/{i}": np.full((80, 80), i, np.uint16) for i in range(64)}
        assert store.put_many(arrays) == 64
        got = store.get_many(list(arrays))
        for (k, a), b in zip(arrays.items(), got):
            np.testing.assert_array_equal(a, b)
        assert store.put_many([]) == 0 and store.get_many([]) == []
        with pytest.raises(MissingKeyError, match="'x1', 'x2'"):
            store.get_many(["m/0", "x1", "x2"])
        assert store.get_many(["m/1", "x"], missing="default", default=None)[1] is None

    def test_exists_delete_iterate(self, store):
        store.put_many({f"it/{i}": np.zeros(2) for i in range(5)})
        store.put("other", np.zeros(1))
        assert store.exists("it/0") and "it/4" in store and not store.exists("it/9")
        assert sorted(store.keys("it/")) == [f"it/{i}" for i in range(5)]
        assert "other" in set(store)
        assert store.delete("it/0") and not store.delete("it/0")
        assert store.delete_prefix("it/") == 4
        assert list(store.keys("it/")) == []
        assert store.exists("other")

    def test_expiry(self, store):
        store.put("short", np.zeros(2), ttl=0.05)
        store.put_many({"short2": np.zeros(2)}, ttl=0.05)
        store.put("long", np.zeros(2))
        time.sleep(0.3)
        assert not store.exists("short") and not store.exists("short2") and store.exists("long")
        with pytest.raises(ValueError, match="positive"):
            store.put("x", np.zeros(1), ttl=0)

    def test_object_array_refused_before_sending(self, store):
        with pytest.raises(CodecError, match="objects"):
            store.put_many({"ok": np.zeros(2), "bad": np.array([None])})
        assert not store.exists("ok")  # nothing of the batch was sent


class TestRedisArrayStore(StoreTests):
    @pytest.fixture
    def store(self, redis_url, namespace):
        s = RedisArrayStore(redis_url, namespace=namespace)
        yield s
        s.delete_prefix("")
        s.close()

    def test_delete_prefix_in_batches_escapes_globs(self, store):
        store.put_many({f"run[1]/{i}": np.zeros(1) for i in range(35)})
        store.put("run1/x", np.zeros(1))  # would match the unescaped glob run[1]*
        assert store.delete_prefix("run[1]/", batch=10) == 35
        assert store.exists("run1/x")

    def test_delete_everything_needs_a_namespace(self, redis_url):
        with pytest.raises(ValueError, match="every key"):
            RedisArrayStore(redis_url).delete_prefix("")

    def test_namespaces_are_separate(self, store, redis_url, namespace):
        other = RedisArrayStore(redis_url, namespace=namespace + "other:")
        other.put("k", np.ones(1))
        assert not store.exists("k")
        assert other.delete_prefix() == 1

    def test_db_from_url(self, redis_url, namespace):
        db3 = RedisArrayStore(redis_url.rsplit("/", 1)[0] + "/3", namespace=namespace)
        db3.put("k", np.ones(1))
        assert not RedisArrayStore(redis_url, namespace=namespace).exists("k")
        assert db3.delete_prefix() == 1

    def test_foreign_and_corrupted_values(self, store, redis_url, namespace):
        raw = store._client
        raw.call("SET", namespace + "seed", b"\x00\x00\x00\x50" * 2 + b"\x00" * 12800)
        with pytest.raises(CodecError, match="under key 'seed'.*not a chunkmap array payload"):
            store.get("seed")
        store.put("hdr", np.zeros((80, 80), np.uint16))
        raw.call("SETRANGE", namespace + "hdr", 10, b"\x51")  # shape (80, 80) -> (81, 80)
        with pytest.raises(CodecError, match="corrupted"):
            store.get("hdr")
        store.put("whole", np.zeros((80, 80), np.uint16))
        payload = raw.call("GET", namespace + "whole")
        raw.call("SET", namespace + "torn", payload[:-100])
        with pytest.raises(CodecError, match="truncated"):
            store.get("torn")
        with pytest.raises(CodecError, match="under key 'torn'"):
            store.get_many(["whole", "torn"])

    def test_checksum_detects_corrupted_data(self, redis_url, namespace):
        s = RedisArrayStore(redis_url, namespace=namespace, checksum=True)
        s.put("c", np.arange(100.0))
        np.testing.assert_array_equal(s.get("c"), np.arange(100.0))
        s._client.call("SETRANGE", namespace + "c", 100, b"\xff")
        with pytest.raises(CodecError, match="data's crc32"):
            s.get("c")
        s.delete_prefix()

    def test_wrong_type_is_store_error(self, store, namespace):
        store._client.call("LPUSH", namespace + "list", b"x")
        with pytest.raises(StoreError, match="WRONGTYPE"):
            store.get("list")

    def test_pickles_as_arguments(self, store, redis_url, namespace):
        store.put("p", np.arange(3))
        s2 = pickle.loads(pickle.dumps(store))
        assert (s2.url, s2.namespace) == (redis_url, namespace)
        np.testing.assert_array_equal(s2.get("p"), np.arange(3))
        assert b"socket" not in pickle.dumps(store)

    def test_used_from_spawned_processes(self, store):
        arrays = [np.full((80, 80), i, np.uint16) for i in range(8)]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            pool.starmap(store.put, [(f"sp/{i}", a) for i, a in enumerate(arrays)])
            got = pool.map(store.get, [f"sp/{i}" for i in range(8)])
        for a, b in zip(arrays, got):
            np.testing.assert_array_equal(a, b)

    def test_threads_share_a_store(self, store):
        from concurrent.futures import ThreadPoolExecutor

        def work(i):
            store.put(f"t/{i}", np.full(1000, i))
            return int(store.get(f"t/{i}")[0])

        with ThreadPoolExecutor(4) as ex:
            assert list(ex.map(work, range(40))) == list(range(40))

    def test_server_down(self):
        s = RedisArrayStore(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=2)
        with pytest.raises(StoreConnectionError, match="cannot talk to Redis at redis://127.0.0.1") as e:
            s.put("k", np.zeros(1))
        assert isinstance(e.value, ConnectionError)
        with pytest.raises(StoreConnectionError):
            s.get("k")

    def test_repr_and_bad_url(self):
        s = RedisArrayStore("rediss://u:pw@example.invalid:6380/2")
        assert "pw" not in repr(s) and "***" in repr(s)
        with pytest.raises(StoreError, match="cannot use the Redis URL 'http://x'"):
            RedisArrayStore("http://x")


def test_password_url(own_server):
    server = own_server(args=["--requirepass", "s3cret"])
    url = f"redis://:s3cret@127.0.0.1:{server.port}/1"
    s = RedisArrayStore(url, namespace="pw:")
    s.put("k", np.arange(4))
    np.testing.assert_array_equal(s.get("k"), np.arange(4))
    bad = RedisArrayStore(f"redis://:wrong@127.0.0.1:{server.port}/1")
    with pytest.raises(StoreConnectionError) as e:
        bad.get("k")
    assert "wrong" not in str(e.value)
