"""RedisArrayStore: numpy arrays in Redis, dtype and shape kept, many per round trip.

Each array is one Redis string holding a :mod:`chunkmap.codec` payload. Batches go in one
round trip as one ``MSET`` (or ``MULTI``/``SET PX``.../``EXEC`` with an expiry), so a batch is
applied whole or not at all: a connection dropped or a server killed mid-batch leaves none of
its arrays written (and the codec's length check means a torn value could never decode anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

import numpy as np

from .. import codec
from ..errors import CodecError, MissingKeyError, UnboundedDeleteError
from ._client import Client, escape_glob, redact

__all__ = ["RedisArrayStore"]

Key = Union[str, bytes]


class RedisArrayStore:
    """Store numpy arrays in Redis under string keys.

    Parameters
    ----------
    url : str, default "redis://127.0.0.1:6379/0"
        Where the server is: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for
        TLS, or ``unix:///path/redis.sock?db=0``.
    namespace : str, default ""
        Prefix of every key this store reads and writes (``"run42:"``); keys given to and
        yielded by the methods do not include it.
    ttl : float, optional
        Default expiry in seconds of the arrays put; None keeps them until deleted.
    checksum : bool, default True
        Store a checksum of each array's data after it (xxh3, :mod:`chunkmap.codec`) and
        check it on every read, so that a corrupted data byte raises
        :class:`~chunkmap.errors.CodecError` instead of coming back as a wrong value. It costs
        one pass over the data on each side at memory bandwidth (~35 us per MB) and 4 bytes
        per value; the data is still sent without a copy. Verified whatever this option says: the header (dtype, shape,
        layout) carries its own crc32 and a value's length must be exact, so a foreign,
        truncated, extended or header-corrupted value always raises ``CodecError``. Not
        verified with ``checksum=False``: the data bytes. A read checks what the value
        carries, so a value written with ``checksum=False`` is read without a data check by
        any store.
    spin : float, default 0 (off)
        After sending a request (or a batch), busy-poll the socket for the reply
        for up to this many seconds (at most 0.01) before sleeping in a blocking read. Where
        idle cores sleep deeply (virtual machines especially), waking the client's core for
        the reply, and running its code on a core that was just woken, can cost more than the
        request itself: on the project's 2-core VM ``spin=200e-6`` took a 12.8 kB ``put`` from
        ~165 to ~75-100 us (p50) when client and server were on different cores, and changed
        nothing when they shared one (see ``benchmarks/bench_redis.py``). The cost is CPU: the
        calling thread polls for up to ``spin`` on every request instead of sleeping; the loop
        calls ``sched_yield`` so that a server or another thread on the same core still runs.
        Worth it only for a client that sends requests back to back and has a core to
        spare. Used on Linux with TCP or Unix sockets, ignored with TLS.
    **connection_kwargs
        Passed on to :meth:`redis.ConnectionPool.from_url` (TLS options...). ``socket_timeout``
        (seconds to wait for each read or write) and ``socket_connect_timeout`` default to
        :data:`~chunkmap.redis.DEFAULT_TIMEOUT` (10 s); ``None`` waits forever. A server that
        does not answer in time raises :class:`~chunkmap.errors.StoreTimeoutError` after one
        timeout, not retried; a dropped connection is retried once on a fresh one.

    Notes
    -----
    The store pickles as its constructor arguments, never as a connection: hand it to worker
    processes (``spawn`` included) or dask workers and each opens its own connection. It is
    also safe to share between threads (one connection per thread).

    Examples
    --------
    >>> store = RedisArrayStore("redis://:secret@127.0.0.1:6390/1", namespace="demo:")
    >>> store
    RedisArrayStore('redis://:***@127.0.0.1:6390/1', namespace='demo:')
    >>> import numpy as np
    >>> store.put("state/0", np.zeros((80, 80), np.uint16))  # doctest: +SKIP
    >>> store.get("state/0").shape  # doctest: +SKIP
    (80, 80)
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "",
        ttl: float | None = None,
        checksum: bool = True,
        spin: float = 0.0,
        **connection_kwargs: Any,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.ttl = ttl
        self.checksum = checksum
        self.connection_kwargs = connection_kwargs
        self._ns = namespace.encode()
        self._client = Client(url, spin=spin, **connection_kwargs)
        self.spin = self._client.spin

    def __reduce__(self):
        kwargs = dict(
            self.connection_kwargs, namespace=self.namespace, ttl=self.ttl, checksum=self.checksum, spin=self.spin
        )
        return (_rebuild_store, (type(self), self.url, kwargs))

    def __repr__(self) -> str:
        extra = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"{type(self).__name__}({redact(self.url)!r}{extra})"

    def __enter__(self) -> RedisArrayStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close this thread's connection; the store reconnects if used again."""
        self._client.close()

    # -- keys and values ---------------------------------------------------------------------

    def _key(self, key: Key) -> bytes:
        if type(key) is str:
            return self._ns + key.encode()
        if isinstance(key, bytes):
            return self._ns + key
        raise TypeError(f"store keys are str or bytes, received {type(key).__name__}")

    def _value(self, a: Any) -> Any:
        return codec.encode_parts(a, checksum=self.checksum)

    def _ttl_ms(self, ttl: float | None) -> int | None:
        ttl = self.ttl if ttl is None else ttl
        if ttl is None:
            return None
        if ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, received {ttl!r}")
        return max(1, int(ttl * 1000))

    def _decode(self, key: Key, payload: Any) -> np.ndarray:
        try:
            return codec.decode(payload)
        except CodecError as exc:
            raise CodecError(f"the value under key {key!r} in {redact(self.url)}: {exc}") from None

    def _missing(self, keys: list[Key]) -> MissingKeyError:
        shown = ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        where = f" (namespace {self.namespace!r})" if self.namespace else ""
        return MissingKeyError(
            f"no array under key{'s' if len(keys) > 1 else ''} {shown} in {redact(self.url)}{where}; "
            f"was it deleted, expired, or never put?"
        )

    def _check(self, args: tuple[Any, ...], reply: Any) -> Any:
        if isinstance(reply, Exception):
            raise self._client.response_error(args, reply)
        return reply

    # -- one array ---------------------------------------------------------------------------

    def put(self, key: Key, array: Any, *, ttl: float | None = None) -> None:
        """Store ``array`` under ``key``, replacing any value there.

        Parameters
        ----------
        key : str or bytes
        array : array_like
            Any array without Python objects; dtype (byte order included) and shape are kept.
        ttl : float, optional
            Expiry in seconds (default: the store's ``ttl``).
        """
        ms = self._ttl_ms(ttl)
        args: tuple[Any, ...] = ("SET", self._key(key), self._value(array))
        if ms is not None:
            args += ("PX", ms)
        reply = self._client.request(args)
        if isinstance(reply, Exception):
            raise self._client.response_error(args, reply)

    def get(self, key: Key) -> np.ndarray:
        """Return the array under ``key`` (a read-only view on the received bytes).

        Raises
        ------
        MissingKeyError
            No value under ``key``.
        CodecError
            The value is not an array written by chunkmap, or is corrupted.
        """
        args = ("GET", self._key(key))
        payload = self._client.request(args)
        if payload is None:
            raise self._missing([key])
        if isinstance(payload, Exception):
            raise self._client.response_error(args, payload)
        return self._decode(key, payload)

    def delete(self, key: Key) -> bool:
        """Delete ``key``; return whether it existed."""
        return bool(self._client.call("UNLINK", self._key(key)))

    def exists(self, key: Key) -> bool:
        """Return whether a value is stored under ``key``."""
        return bool(self._client.call("EXISTS", self._key(key)))

    __contains__ = exists

    def __getitem__(self, key: Key) -> np.ndarray:
        return self.get(key)

    def __setitem__(self, key: Key, array: Any) -> None:
        self.put(key, array)

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise self._missing([key])

    # -- many arrays, one round trip -----------------------------------------------------------

    def put_many(self, items: Mapping[Key, Any] | Iterable[tuple[Key, Any]], *, ttl: float | None = None) -> int:
        """Store many arrays in one round trip, all or nothing.

        Parameters
        ----------
        items : mapping or iterable of (key, array)
        ttl : float, optional
            Expiry in seconds (default: the store's ``ttl``).

        Returns
        -------
        int
            The number of arrays stored.

        Notes
        -----
        Sent as one ``MSET`` (``MULTI``, ``SET ... PX``, ``EXEC`` with an expiry): Redis applies
        it whole or not at all, so a failure mid-batch leaves none of the batch readable.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        # Encode (and so validate) everything before a byte is sent.
        encoded = [(self._key(k), self._value(a)) for k, a in pairs]
        if not encoded:
            return 0
        ms = self._ttl_ms(ttl)
        if ms is None:
            args: list[Any] = ["MSET"]
            for k, v in encoded:
                args += (k, v)
            self._check(("MSET",), self._client.execute((args,))[0])
        else:
            cmds: list[tuple[Any, ...]] = [("MULTI",)]
            cmds += [("SET", k, v, "PX", ms) for k, v in encoded]
            cmds.append(("EXEC",))
            replies = self._client.execute(cmds)
            for reply in replies:
                self._check(("MULTI/EXEC",), reply)
            for reply in replies[-1] or ():
                self._check(("SET",), reply)
        return len(encoded)

    def get_many(self, keys: Iterable[Key], *, default: Any = None, missing: str = "raise") -> list[Any]:
        """Return the arrays under ``keys``, in order, fetched in one round trip (``MGET``).

        Parameters
        ----------
        keys : iterable of str or bytes
        missing : {"raise", "default"}
            For keys without a value: raise :class:`MissingKeyError` naming them (default), or
            put ``default`` in their place.
        default : object
            The placeholder for missing keys when ``missing="default"``.
        """
        if missing not in ("raise", "default"):
            raise ValueError(f"missing must be 'raise' or 'default', received {missing!r}")
        keys = list(keys)
        if not keys:
            return []
        args = ("MGET", *[self._key(k) for k in keys])
        payloads = self._check(args, self._client.execute((args,))[0])
        if missing == "raise":
            absent = [k for k, p in zip(keys, payloads) if p is None]
            if absent:
                raise self._missing(absent)
        return [default if p is None else self._decode(k, p) for k, p in zip(keys, payloads)]

    # -- keys ----------------------------------------------------------------------------------

    def keys(self, prefix: Key = "", *, batch: int = 1000) -> Iterator[str]:
        """Yield the keys (namespace removed) that start with ``prefix``, incrementally (SCAN).

        Keys are yielded as ``str`` (decoded as UTF-8, undecodable bytes escaped). The order is
        Redis's; a key written during the scan may or may not be yielded.
        """
        match = escape_glob(self._key(prefix)) + b"*"
        n = len(self._ns)
        for k in self._client.scan(match, batch):
            yield k[n:].decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def delete_prefix(self, prefix: Key = "", *, batch: int = 1000) -> int:
        """Delete every key starting with ``prefix`` (SCAN + UNLINK in batches, never KEYS).

        With the default ``prefix=""`` this deletes the whole namespace; on a store without a
        namespace that would be every key in the database, which is refused (use
        ``FLUSHDB`` deliberately for that).

        Returns
        -------
        int
            The number of keys deleted.

        Raises
        ------
        UnboundedDeleteError
            ``prefix`` is empty and the store has no namespace (also a ``ValueError``).
        """
        if not self._ns and not prefix:
            raise UnboundedDeleteError(
                f"delete_prefix({prefix!r}) on a store without a namespace would delete every key "
                f"in the database at {redact(self.url)}; give a prefix, or the store a namespace "
                f"(use FLUSHDB deliberately to empty the database)"
            )
        match = escape_glob(self._key(prefix)) + b"*"
        deleted = 0
        pending: list[bytes] = []
        for k in self._client.scan(match, batch):
            pending.append(k)
            if len(pending) >= batch:
                deleted += int(self._client.call("UNLINK", *pending))
                pending = []
        if pending:
            deleted += int(self._client.call("UNLINK", *pending))
        return deleted

    def ping(self) -> bool:
        """Return True when the server answers.

        Raises :class:`~chunkmap.errors.StoreConnectionError` when it cannot be reached, and
        its subclass :class:`~chunkmap.errors.StoreTimeoutError` when it does not answer within
        ``socket_timeout``.
        """
        return self._client.call("PING") in (b"PONG", "PONG", True)


def _rebuild_store(cls: type, url: str, kwargs: dict[str, Any]) -> RedisArrayStore:
    return cls(url, **kwargs)

