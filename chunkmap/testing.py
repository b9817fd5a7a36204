"""Conformance suites shipped with chunkmap, for its own stores and for yours.

A checkpoint store is anything with the :class:`~chunkmap.checkpoint.ChunkStore` methods. To
check one, subclass :class:`ChunkStoreTests` in a pytest module and say how to make a fresh,
empty store::

    from chunkmap.testing import ChunkStoreTests

    class TestMyStore(ChunkStoreTests):
        def make_store(self):
            return MyStore(...)

Every store chunkmap ships (directory, memory, Redis) passes the same suite. :func:`free_port`
is the one helper for a free loopback port (servers and schedulers started by tests).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from .checkpoint import lease as leases
from .errors import CheckpointBusyError

__all__ = ["ChunkStoreTests", "free_port"]

#: a process that takes a lease of a pickled store, says so, and waits to be killed
_HOLDER = """
import pickle, sys, time
from chunkmap.checkpoint import lease
store = pickle.loads(bytes.fromhex(sys.argv[1]))
held = store.lease(sys.argv[2], lease.holder_record())
print("ready", flush=True)
time.sleep(120)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
