"""Checkpoints in Redis: ``run(checkpoint="redis://host:6379/0")`` resumes from any machine.

A :class:`~chunkmap.checkpoint.ChunkStore` over redis-py: one Redis string per record under
``chunkmap:checkpoint:<run>/<record>``. ``SET`` is atomic, so a reader sees a whole record or
none, and ``SET NX`` creates a manifest only if it is absent; records are checksummed and prove
where they belong (:mod:`chunkmap.checkpoint.records`), so a corrupted or misfiled value is
recomputed, never read as data. The store pickles as its URL.

A run's lease is a key with a time to live (:data:`LEASE_TTL`), refreshed by a thread of the
running process and deleted at the end only by its holder (compare-and-delete in a Lua script).
A lease whose holder is a dead process of this host is taken over at once; one of another host
expires after the time to live. A lease that vanished during the run (a restart without
persistence, ``FLUSHDB``, an eviction) is noticed, taken again, and reported.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from ..checkpoint import lease as leases
from ..errors import CheckpointBusyError, CheckpointError, CheckpointUnreachableError, OptionError
from ._client import DEFAULT_TIMEOUT, redact

__all__ = ["RedisChunkStore", "RedisLease"]

NAMESPACE = "chunkmap:checkpoint:"
#: seconds a lease lives without a refresh (a holder on another host that died is waited for this long)
LEASE_TTL = 30.0
#: the holder's value is still the one given: refresh its time to live / delete it
_REFRESH = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise OptionError(
            "checkpoint='redis://...' needs redis-py; install the extra: pip install 'chunkmap[redis]'"
        ) from None
    return redis


class RedisChunkStore:
    """Checkpoint records in the Redis server at ``url`` (``redis://``, ``rediss://``, ``unix://``).

    A server that does not answer within :data:`~chunkmap.redis.DEFAULT_TIMEOUT` seconds (to
    connect, or to each read or write) is a :class:`~chunkmap.errors.CheckpointUnreachableError`.

    Examples
    --------
    >>> store = RedisChunkStore("redis://:secret@localhost:6379/2")
    >>> store
    RedisChunkStore('redis://:***@localhost:6379/2')
    """

    def __init__(self, url: str, namespace: str = NAMESPACE) -> None:
        self.url = url
        self.namespace = namespace
        self.location = redact(url)
        self._client = _redis().Redis.from_url(
            url, socket_timeout=DEFAULT_TIMEOUT, socket_connect_timeout=DEFAULT_TIMEOUT
        )

    def __reduce__(self):
        return (RedisChunkStore, (self.url, self.namespace))

    def __repr__(self) -> str:
        return f"RedisChunkStore({redact(self.url)!r})"

    def _call(self, method: str, *args: Any) -> Any:
        redis = _redis()
        try:
            return getattr(self._client, method)(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CheckpointUnreachableError(
                f"the checkpoint store at {self.location} cannot be reached ({exc}); expected a "
                f"running Redis server there. Finished chunks already stored are kept"
            ) from None
        except redis.ResponseError as exc:  # e.g. OOM under maxmemory with noeviction: a full store
            reason = str(exc).rstrip(".")
            raise CheckpointError(
                f"the Redis server of the checkpoint store at {self.location} refused {method.upper()}: "
                f"{reason}; give it memory (maxmemory) or use another checkpoint location. Finished chunks "
                f"already stored are kept"
            ) from None

    def get(self, key: str) -> bytes | None:
        return self._call("get", self.namespace + key)

    def put(self, key: str, data: bytes) -> None:
        self._call("set", self.namespace + key, data)

    def create(self, key: str, data: bytes) -> bool:
        return bool(self._call("set", self.namespace + key, data, None, None, True))  # NX

    def delete(self, key: str) -> None:
        self._call("delete", self.namespace + key)

    def lease(self, key: str, holder: dict[str, Any]) -> RedisLease:
        return RedisLease(self, key, holder)

    def holder(self, key: str) -> dict[str, Any] | None:
        data = self.get(key)
        holder = leases.decode_holder(data) if data is not None else None
        return None if holder is None or leases.is_dead(holder) else holder

    def keys(self, prefix: str) -> Iterator[str]:
        found = self._scan(_escape(self.namespace + prefix) + "*")
        start = len(self.namespace)
        yield from sorted(key.decode()[start:] for key in found)

    def close(self) -> None:
        """Close the connections to the server now, not when the collector finds them (a later call
        opens new ones)."""
        self._client.close()

    def _scan(self, pattern: str) -> Iterator[bytes]:
        cursor = 0
        while True:
            cursor, batch = self._call("scan", cursor, pattern, 1000)
            yield from batch
            if cursor == 0:
                return


class RedisLease:
    """A :class:`~chunkmap.checkpoint.Lease` as a Redis key with a time to live, kept alive by a thread."""

    def __init__(self, store: RedisChunkStore, key: str, holder: dict[str, Any], ttl: float = LEASE_TTL) -> None:
        self.store, self.key, self.ttl = store, key, ttl
        self.value = leases.encode_holder(holder)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._take()
        self._thread = threading.Thread(target=self._keep_alive, name=f"chunkmap-lease-{key}", daemon=True)
        self._thread.start()

    def _take(self) -> None:
        name, milliseconds = self.store.namespace + self.key, int(self.ttl * 1000)
        for _ in range(2):
            if self.store._call("set", name, self.value, None, milliseconds, True):
                return
            current = self.store._call("get", name)
            other = leases.decode_holder(current)
            if current is None or leases.is_dead(other):  # expired meanwhile, or left by a killed process
                self.store._call("eval", _RELEASE, 1, name, current or b"")
                continue
            raise CheckpointBusyError(leases.busy_message(self.store.location, self.key.rpartition("/")[0], other),
                                      other)
        raise CheckpointBusyError(f"the lease {self.key} of {self.store.location} keeps changing hands; "
                                  f"another process is starting the same run")

    def _keep_alive(self) -> None:
        name = self.store.namespace + self.key
        while not self._stop.wait(self.ttl / 6):
            try:
                if not self.store._call("eval", _REFRESH, 1, name, self.value, int(self.ttl * 1000)):
                    self.lost.set()
            except CheckpointError:
                continue  # the run's own writes report an unreachable server

    def check(self) -> bool:
        if not self.lost.is_set() and self.store._call("get", self.store.namespace + self.key) == self.value:
            return True
        self._take()
        self.lost.clear()
        return False

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.store._call("eval", _RELEASE, 1, self.store.namespace + self.key, self.value)
        except CheckpointError:
            pass  # the lease expires by itself


def _escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
