"""The conformance suites of chunkmap's two store interfaces, as pytest test classes.

:class:`ChunkStoreTests` checks a checkpoint store (:class:`~chunkmap.checkpoint.ChunkStore`:
bytes under keys, create-if-absent, leases); :class:`ArrayStoreTests` an array store (numpy
arrays under keys, as :class:`chunkmap.redis.RedisArrayStore`). Each is generic over one hook,
``make_store()``, which returns a fresh, empty store; neither imports pytest at module level.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..checkpoint import lease as leases
from ..errors import CheckpointBusyError, CodecError, MissingKeyError

__all__ = ["ArrayStoreTests", "ChunkStoreTests"]

#: a process that takes a lease of a pickled store, says so, and waits to be killed
_HOLDER = """
import pickle, sys, time
from chunkmap.checkpoint import lease
store = pickle.loads(bytes.fromhex(sys.argv[1]))
held = store.lease(sys.argv[2], lease.holder_record())
print("ready", flush=True)
time.sleep(120)
"""


class ChunkStoreTests:
    """The guarantees of :class:`~chunkmap.checkpoint.ChunkStore`, as pytest tests.

    Subclasses define :meth:`make_store`; stores whose data lives in this process only set
    :attr:`shared_between_processes` to False (the tests that need a second process are then
    replaced by their in-process form, never skipped silently).
    """

    shared_between_processes = True

    def make_store(self) -> Any:
        raise NotImplementedError("make_store() returns a fresh, empty store")

    def test_get_put_replace(self):
        store = self.make_store()
        assert store.get("run/chunk-1") is None
        store.put("run/chunk-1", b"one")
        store.put("run/chunk-2", b"")
        assert store.get("run/chunk-1") == b"one" and store.get("run/chunk-2") == b""
        store.put("run/chunk-1", b"uno")
        assert store.get("run/chunk-1") == b"uno"

    def test_large_binary_values(self):
        store = self.make_store()
        data = os.urandom(5 << 20)
        store.put("run/chunk-000000001", data)
        assert store.get("run/chunk-000000001") == data

    def test_create_only_if_absent(self):
        store = self.make_store()
        assert store.create("run/manifest.json", b"first") is True
        assert store.create("run/manifest.json", b"second") is False
        assert store.get("run/manifest.json") == b"first"

    def test_create_has_one_winner_among_threads(self):
        store = self.make_store()
        wins: list[bool] = []
        start = threading.Barrier(8)

        def contend(number: int) -> None:
            start.wait()
            wins.append(store.create("run/manifest.json", b"writer %d" % number))

        threads = [threading.Thread(target=contend, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(wins) == [False] * 7 + [True]
        assert store.get("run/manifest.json").startswith(b"writer ")

    def test_delete(self):
        store = self.make_store()
        store.put("run/chunk-1", b"x")
        store.delete("run/chunk-1")
        store.delete("run/never-written")
        assert store.get("run/chunk-1") is None and list(store.keys("run/")) == []

    def test_keys_by_prefix(self):
        store = self.make_store()
        for key in ("a/chunk-2", "a/chunk-1", "a/manifest.json", "ab/chunk-1", "b/chunk-1"):
            store.put(key, b"x")
        assert list(store.keys("a/chunk-")) == ["a/chunk-1", "a/chunk-2"]
        assert sorted(store.keys("a/")) == ["a/chunk-1", "a/chunk-2", "a/manifest.json"]
        assert sorted(store.keys("")) == ["a/chunk-1", "a/chunk-2", "a/manifest.json", "ab/chunk-1", "b/chunk-1"]
        assert list(store.keys("c/")) == []

    def test_keys_with_glob_characters(self):
        store = self.make_store()
        store.put("run[1]/chunk-1", b"x")
        store.put("run*/chunk-1", b"y")
        assert list(store.keys("run[1]/")) == ["run[1]/chunk-1"]
        assert list(store.keys("run*/")) == ["run*/chunk-1"]

    def test_a_lease_has_one_holder(self):
        store = self.make_store()
        first = store.lease("run/lease", leases.holder_record())
        try:
            assert first.check() is True
            holder = store.holder("run/lease")
            assert holder is not None and holder["pid"] == os.getpid()
            try:
                store.lease("run/lease", leases.holder_record())
            except CheckpointBusyError as exc:
                assert exc.holder["pid"] == os.getpid() and f"process {os.getpid()}" in str(exc)
            else:
                raise AssertionError("a second lease of the same key was granted")
        finally:
            first.release()
        assert store.holder("run/lease") is None
        store.lease("run/lease", leases.holder_record()).release()  # free again

    def test_leases_of_other_runs_are_independent(self):
        store = self.make_store()
        one, two = store.lease("one/lease", leases.holder_record()), store.lease("two/lease", leases.holder_record())
        one.release()
        two.release()

    def test_a_lease_held_by_another_process_and_left_by_a_killed_one(self):
        store = self.make_store()
        if not self.shared_between_processes:
            held = store.lease("run/lease", {"host": "elsewhere", "pid": 1})
            held.release()
            return
        with subprocess.Popen([sys.executable, "-c", _HOLDER, pickle.dumps(store).hex(), "run/lease"],
                              stdout=subprocess.PIPE, text=True) as process:
            try:
                assert process.stdout.readline().strip() == "ready"
                try:
                    store.lease("run/lease", leases.holder_record())
                except CheckpointBusyError as exc:
                    assert exc.holder.get("pid") == process.pid
                else:
                    raise AssertionError("a lease held by another live process was granted")
                assert store.holder("run/lease")["pid"] == process.pid
            finally:
                process.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        taken = store.lease("run/lease", leases.holder_record())  # the killed holder's lease is taken over at once
        assert time.monotonic() < deadline
        assert store.holder("run/lease")["pid"] == os.getpid()
        taken.release()

    def test_pickles_as_its_constructor_arguments(self):
        store = self.make_store()
        store.put("run/chunk-1", b"kept")
        again = pickle.loads(pickle.dumps(store))
        if self.shared_between_processes:
            assert again.get("run/chunk-1") == b"kept"
        assert isinstance(again.location, str) and again.location == store.location


def _raises(kind: type[BaseException], match: str) -> Any:
    """``pytest.raises``, imported when a test runs (this module does not need pytest to import)."""
    import pytest

    return pytest.raises(kind, match=match)


class ArrayStoreTests:
    """The guarantees of an array store, as pytest tests.

    An array store keeps numpy arrays under str keys, dtype (byte order included) and shape
    preserved: ``put(key, array, ttl=None)``, ``get(key)``, ``store[key]`` (get, set, del),
    ``put_many(mapping or pairs, ttl=None)`` (all or nothing, everything validated before
    anything is written) and ``get_many(keys, missing="raise" | "default", default=None)``,
    ``exists(key)`` and ``in``, ``delete(key)`` (whether it existed), ``keys(prefix)`` and
    iteration, ``delete_prefix(prefix)`` (how many). A key without an array raises
    :class:`~chunkmap.errors.MissingKeyError` naming it, an object array
    :class:`~chunkmap.errors.CodecError`. The store is shared: it pickles (as its constructor
    arguments) and its copies in other processes and threads see the same arrays.

    Subclasses define :meth:`make_store`, returning a fresh, empty store each time it is called
    in a test (the stores of one test see the same arrays).
    """

    def make_store(self) -> Any:
        raise NotImplementedError("make_store() returns a fresh, empty array store")

    def test_put_get_round_trip(self):
        store = self.make_store()
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

    def test_missing_key(self):
        store = self.make_store()
        with _raises(MissingKeyError, "no array under key 'nope'") as raised:
            store.get("nope")
        assert isinstance(raised.value, KeyError)
        with _raises(MissingKeyError, "nope"):
            del store["nope"]

    def test_many(self):
        store = self.make_store()
        arrays = {f"m/{i}": np.full((80, 80), i, np.uint16) for i in range(64)}
        assert store.put_many(arrays) == 64
        for a, b in zip(arrays.values(), store.get_many(list(arrays))):
            np.testing.assert_array_equal(a, b)
        assert store.put_many([("m/pair", np.zeros(2))]) == 1 and store.exists("m/pair")
        assert store.put_many([]) == 0 and store.get_many([]) == []
        with _raises(MissingKeyError, "'x1', 'x2'"):
            store.get_many(["m/0", "x1", "x2"])
        assert store.get_many(["m/1", "x"], missing="default", default=None)[1] is None

    def test_exists_delete_iterate(self):
        store = self.make_store()
        store.put_many({f"it/{i}": np.zeros(2) for i in range(5)})
        store.put("other", np.zeros(1))
        assert store.exists("it/0") and "it/4" in store and not store.exists("it/9")
        assert sorted(store.keys("it/")) == [f"it/{i}" for i in range(5)]
        assert "other" in set(store)
        assert store.delete("it/0") and not store.delete("it/0")
        assert store.delete_prefix("it/") == 4
        assert list(store.keys("it/")) == []
        assert store.exists("other")

    def test_expiry(self):
        store = self.make_store()
        store.put("short", np.zeros(2), ttl=0.05)
        store.put_many({"short2": np.zeros(2)}, ttl=0.05)
        store.put("long", np.zeros(2))
        time.sleep(0.3)
        assert not store.exists("short") and not store.exists("short2") and store.exists("long")
        with _raises(ValueError, "positive"):
            store.put("x", np.zeros(1), ttl=0)

    def test_object_array_refused_before_sending(self):
        store = self.make_store()
        with _raises(CodecError, "objects"):
            store.put_many({"ok": np.zeros(2), "bad": np.array([None])})
        assert not store.exists("ok")  # nothing of the batch was written

    def test_a_pickled_store_sees_the_same_arrays(self):
        store = self.make_store()
        store.put("p", np.arange(3))
        again = pickle.loads(pickle.dumps(store))
        np.testing.assert_array_equal(again.get("p"), np.arange(3))
        again.put("q", np.arange(4))
        np.testing.assert_array_equal(store.get("q"), np.arange(4))

    def test_used_from_spawned_processes(self):
        store = self.make_store()
        arrays = [np.full((80, 80), i, np.uint16) for i in range(8)]
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.starmap(store.put, [(f"sp/{i}", a) for i, a in enumerate(arrays)])
            got = pool.map(store.get, [f"sp/{i}" for i in range(8)])
        for a, b in zip(arrays, got):
            np.testing.assert_array_equal(a, b)

    def test_threads_share_a_store(self):
        store = self.make_store()

        def work(i: int) -> int:
            store.put(f"t/{i}", np.full(1000, i))
            return int(store.get(f"t/{i}")[0])

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(work, range(40))) == list(range(40))
