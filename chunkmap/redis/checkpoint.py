"""Checkpoints in Redis: ``run(checkpoint="redis://host:6379/0")`` resumes from any machine.

A :class:`~chunkmap.checkpoint.ChunkStore` over redis-py: one Redis string per record under
``chunkmap:checkpoint:<run>/<record>``. ``SET`` is atomic, so a reader sees a whole record or
none; records are checksummed codec payloads (:mod:`chunkmap.checkpoint`), so a corrupted value
is recomputed, never read as data. The store pickles as its URL.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import OptionError, StoreConnectionError
from ._client import redact

__all__ = ["RedisChunkStore"]

NAMESPACE = "chunkmap:checkpoint:"


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

    Examples
    --------
    >>> store = RedisChunkStore("redis://:secret@localhost:6379/2")
    >>> store
    RedisChunkStore('redis://:***@localhost:6379/2')
    """

    def __init__(self, url: str, namespace: str = NAMESPACE) -> None:
        self.url = url
        self.namespace = namespace
        self._client = _redis().Redis.from_url(url)

    def __reduce__(self):
        return (RedisChunkStore, (self.url, self.namespace))

    def __repr__(self) -> str:
        return f"RedisChunkStore({redact(self.url)!r})"

    def _call(self, method: str, *args: Any) -> Any:
        redis = _redis()
        try:
            return getattr(self._client, method)(*args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreConnectionError(
                f"the checkpoint store at {redact(self.url)} cannot be reached ({exc}); expected a "
                f"running Redis server there. Finished chunks already stored are kept"
            ) from None

    def get(self, key: str) -> bytes | None:
        return self._call("get", self.namespace + key)

    def put(self, key: str, data: bytes) -> None:
        self._call("set", self.namespace + key, data)

    def keys(self, prefix: str) -> Iterator[str]:
        found = self._scan(_escape(self.namespace + prefix) + "*")
        start = len(self.namespace)
        yield from sorted(key.decode()[start:] for key in found)

    def _scan(self, pattern: str) -> Iterator[bytes]:
        cursor = 0
        while True:
            cursor, batch = self._call("scan", cursor, pattern, 1000)
            yield from batch
            if cursor == 0:
                return


def _escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
