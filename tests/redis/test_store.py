"""RedisArrayStore against a real redis-server: the array store suite (chunkmap.testing), then its own behaviour."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from chunkmap.errors import CodecError, StoreConnectionError, StoreError, UnboundedDeleteError
from chunkmap.redis import RedisArrayStore
from chunkmap.testing import ArrayStoreTests, free_port


class TestRedisArrayStore(ArrayStoreTests):
    """The array store suite, then what is Redis's own: URLs, namespaces, databases, raw values."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_url, namespace):
        self.url, self.namespace, self.made = redis_url, namespace, []
        yield
        for store in self.made:
            store.close()
        with RedisArrayStore(redis_url, namespace=namespace) as cleaner:
            cleaner.delete_prefix("")

    def make_store(self):
        self.made.append(RedisArrayStore(self.url, namespace=self.namespace))
        return self.made[-1]

    @pytest.fixture
    def store(self):
        return self.make_store()

    def test_delete_prefix_in_batches_escapes_globs(self, store):
        store.put_many({f"run[1]/{i}": np.zeros(1) for i in range(35)})
        store.put("run1/x", np.zeros(1))  # would match the unescaped glob run[1]*
        assert store.delete_prefix("run[1]/", batch=10) == 35
        assert store.exists("run1/x")

    def test_delete_everything_needs_a_namespace(self, redis_url):
        with pytest.raises(UnboundedDeleteError, match="every key in the database at redis://") as e:
            RedisArrayStore(redis_url).delete_prefix("")
        assert isinstance(e.value, ValueError) and isinstance(e.value, StoreError)  # caught as before

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
        with pytest.raises(CodecError, match="data's xxh3"):
            s.get("c")
        s.delete_prefix()

    @pytest.mark.parametrize("how", ["put", "put_many", "put_many ttl"])
    def test_data_is_verified_by_default(self, store, namespace, how):
        a = np.arange(6400, dtype=np.uint16).reshape(80, 80)
        if how == "put":
            store.put("v", a)
        else:
            store.put_many({"v": a, "w": a}, ttl=60 if "ttl" in how else None)
        raw = bytearray(store._client.call("GET", namespace + "v"))
        raw[-100] ^= 0xFF  # the flipped data byte
        store._client.call("SET", namespace + "v", bytes(raw))
        with pytest.raises(CodecError, match="data's xxh3"):
            store.get("v")
        with pytest.raises(CodecError, match="under key 'v'.*data's xxh3"):
            store.get_many(["v"])

    def test_without_checksum_only_the_data_goes_unverified(self, redis_url, namespace):
        s = RedisArrayStore(redis_url, namespace=namespace, checksum=False)
        a = np.arange(100.0)
        s.put("c", a)
        assert len(s._client.call("GET", namespace + "c")) == 32 + a.nbytes  # no trailer
        s._client.call("SETRANGE", namespace + "c", 100, b"\xff")
        assert not np.array_equal(s.get("c"), a)  # as documented: a wrong value, no error
        s._client.call("SETRANGE", namespace + "c", 10, b"\x51")  # the header stays verified
        with pytest.raises(CodecError, match="header's crc32"):
            s.get("c")
        checked = RedisArrayStore(redis_url, namespace=namespace)
        checked.put("d", a)
        np.testing.assert_array_equal(s.get("d"), a)  # either store reads either kind of value
        s.put("e", a)
        np.testing.assert_array_equal(checked.get("e"), a)

    def test_wrong_type_is_store_error(self, store, namespace):
        store._client.call("LPUSH", namespace + "list", b"x")
        with pytest.raises(StoreError, match="WRONGTYPE"):
            store.get("list")

    def test_pickles_as_arguments(self, store, redis_url, namespace):
        store.get_many([])  # connected
        again = pickle.loads(pickle.dumps(store))
        assert (again.url, again.namespace) == (redis_url, namespace)
        assert b"socket" not in pickle.dumps(store)

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
