"""A thin, fast command path to Redis, shared by the array store and the replay buffer.

Why not ``redis.Redis`` and its pipelines: measured on the project's machines (see
``benchmarks/README.md``), redis-py's packers copy every array twice or send every large
argument with its own ``sendall``, and its pipeline adds ~10-40 us of Python per command. Here
commands are written as RESP straight from the arrays' memory (:mod:`chunkmap.redis._resp`)
and sent and read by one :class:`~chunkmap.redis._link.Link` per thread, on the socket of a
connection redis-py opened (URL parsing, TLS, AUTH, SELECT and RESP handshakes are its job; what
is taken from redis-py, and why, is in :mod:`chunkmap.redis._adapter`).

Each thread of each process keeps its own link, so a client is safe to share between threads
and is rebuilt after ``fork``/``spawn``; it pickles as its constructor arguments.

Timeouts: unless told otherwise a client waits at most :data:`DEFAULT_TIMEOUT` seconds for a
connection and for each read or write (redis-py's own defaults changed between versions, from
"forever" to 5 s). A timeout is raised at once as :class:`~chunkmap.errors.StoreTimeoutError`:
it is not retried, since a fresh connection to a server that does not answer only waits the
timeout a second time. A dropped connection is retried once on a fresh one.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StoreConnectionError, StoreError, StoreTimeoutError
from ._link import MAX_SPIN, Link, check_spin, current_generation
from ._adapter import (
    AuthenticationError,
    InvalidResponse,
    RedisConnectionError,
    RedisTimeoutError,
    ResponseError,
    connection_pool,
)
from ._resp import Packer, command_name

__all__ = ["Client", "DEFAULT_TIMEOUT", "redact", "escape_glob", "MAX_SPIN"]

DEFAULT_TIMEOUT = 10.0
"""Seconds a client waits to connect, and for each read or write, unless ``socket_timeout`` /
``socket_connect_timeout`` say otherwise (``None`` there waits forever)."""

_IO_ERRORS = (RedisConnectionError, RedisTimeoutError, InvalidResponse, OSError)
_TIMEOUTS = (RedisTimeoutError, TimeoutError)  # TimeoutError: Python's timeout (TLS sockets)


def redact(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``.

    Examples
    --------
    >>> redact("redis://user:secret@host:6379/2")
    'redis://user:***@host:6379/2'
    >>> redact("redis://localhost")
    'redis://localhost'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Client:
    """Send commands to the Redis server at ``url`` and read their replies.

    Parameters
    ----------
    url : str
        ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
        ``unix:///path/to/socket?db=0``.
    spin : float, default 0
        After sending, poll the socket (non-blocking reads and ``sched_yield``) for up to this
        many seconds before sleeping in a blocking read; at most 0.01. See
        :class:`~chunkmap.redis.RedisArrayStore`.
    **connection_kwargs
        Passed to :meth:`redis.ConnectionPool.from_url` (``ssl_ca_certs``...);
        ``socket_timeout`` and ``socket_connect_timeout`` default to :data:`DEFAULT_TIMEOUT`.
    """

    def __init__(self, url: str, *, spin: float = 0.0, **connection_kwargs: Any) -> None:
        self.url = url
        self.spin = check_spin(spin)
        self.connection_kwargs = connection_kwargs
        options = {"socket_timeout": DEFAULT_TIMEOUT, "socket_connect_timeout": DEFAULT_TIMEOUT, **connection_kwargs}
        self.timeout: float | None = options["socket_timeout"]
        self.connect_timeout: float | None = options["socket_connect_timeout"]
        try:
            self._pool = connection_pool(url, **options)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"cannot use the Redis URL {redact(url)!r}: {exc}; expected "
                f"redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
            ) from None
        self._local = threading.local()

    def __reduce__(self):
        return (_rebuild_client, (self.url, self.spin, self.connection_kwargs))

    def _open(self) -> Link:
        link = Link(self._pool, self.spin)
        self._local.link = link
        return link

    def _drop(self) -> None:
        link = getattr(self._local, "link", None)
        if link is not None:
            self._local.link = None
            if link.generation == current_generation():  # never shut down a socket inherited over fork
                try:
                    link.conn.disconnect()
                except Exception:  # noqa: BLE001 - it is broken already
                    pass

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._drop()

    def _round_trip(self, buffers: Any, n: int, retry: bool, timeout: float | None) -> Any:
        """``n`` replies to ``buffers``; ``n == 0``: ``buffers`` is one command's arguments."""
        for attempt in (0, 1):
            try:
                link = getattr(self._local, "link", None)
                if link is None or link.generation != current_generation():
                    link = self._open()
                if n == 0:
                    return link.request(buffers)
                return link.round_trip(buffers, n, timeout)
            except _IO_ERRORS as exc:
                self._drop()
                if attempt or not retry or isinstance(exc, (AuthenticationError, *_TIMEOUTS)):
                    raise self.connection_error(exc) from exc
            except BaseException:
                self._drop()  # e.g. KeyboardInterrupt mid-read: the stream is out of step
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def execute(
        self, commands: Sequence[Sequence[Any]], *, retry: bool = True, timeout: float | None = None
    ) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies, in order.

        A reply that is a Redis error is returned as a ``redis.ResponseError`` instance (the
        caller decides); a dropped connection raises :class:`StoreConnectionError` after one
        retry on a fresh connection when ``retry`` (every command chunkmap sends with
        ``retry=True`` is idempotent), a timeout raises :class:`StoreTimeoutError` at once.
        ``timeout`` overrides the socket timeout while reading (for blocking commands).
        """
        p = Packer()
        for c in commands:
            p.command(c)
        return self._round_trip(p.buffers(), len(commands), retry, timeout)

    def request(self, args: Sequence[Any], *, retry: bool = True) -> Any:
        """Send one command and return its reply (a Redis error reply as an exception instance).

        The single-request path: the command's pieces (array data in place) in one ``sendmsg``,
        the reply read with ``recv_into`` into the connection's reused buffer.
        """
        return self._round_trip(args, 0, retry, None)

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply; a Redis error reply raises :class:`StoreError`."""
        reply = self._round_trip(args, 0, True, None)
        if isinstance(reply, ResponseError):
            raise self.response_error(args, reply)
        return reply

    def connection_error(self, exc: BaseException) -> StoreConnectionError:
        if isinstance(exc, _TIMEOUTS):
            return StoreTimeoutError(
                f"cannot talk to Redis at {redact(self.url)}: no answer in time ({str(exc).rstrip('.')}; "
                f"socket_timeout={self.timeout} s, socket_connect_timeout={self.connect_timeout} s); "
                f"is redis-server stopped or overloaded (try `redis-cli -u {redact(self.url)} ping`)? "
                f"A larger socket_timeout= waits longer"
            )
        return StoreConnectionError(
            f"cannot talk to Redis at {redact(self.url)}: {str(exc).rstrip('.')}; is redis-server running and "
            f"reachable there (try `redis-cli -u {redact(self.url)} ping`)?"
        )

    def response_error(self, args: Sequence[Any], reply: BaseException) -> StoreError:
        return StoreError(f"Redis at {redact(self.url)} refused {command_name(args)}: {reply}")

    def scan(self, match: bytes, count: int = 1000) -> Iterable[bytes]:
        """Yield every key matching the glob ``match``, incrementally (SCAN, never KEYS)."""
        cursor = b"0"
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", match, "COUNT", count)
            yield from keys
            if cursor in (b"0", 0, "0"):
                return

    def __repr__(self) -> str:
        return f"Client({redact(self.url)!r})"


def _rebuild_client(url: str, spin: float, connection_kwargs: dict[str, Any]) -> Client:
    return Client(url, spin=spin, **connection_kwargs)


def escape_glob(s: bytes) -> bytes:
    r"""Escape the glob characters of ``s`` for SCAN MATCH.

    Examples
    --------
    >>> escape_glob(b"run[1]*?")
    b'run\\[1\\]\\*\\?'
    """
    out = bytearray()
    for c in s:
        if c in b"*?[]\\":
            out.append(0x5C)
        out.append(c)
    return bytes(out)

