"""A thin, fast command path over redis-py connections, shared by the store and the replay buffer.

Why not ``redis.Redis`` and its pipelines: measured on the project's machines (see
``benchmarks/README.md``), redis-py with hiredis packs every argument with
``hiredis.pack_command``, which first turns memoryviews into ``bytes`` (one copy) and then copies
them again into the command; its pipeline adds ~10-40 us of Python per command; and its
pure-Python packer sends every argument over 6000 bytes with its own ``sendall`` (one system call
each, expensive on virtual machines). Here a command (or a batch of commands) is written as RESP
straight from the arrays' memory into one buffer per ~1 MiB (the only copy on the client side,
and bounded, so large batches do not page-fault a huge fresh allocation), sent with one
``sendall`` per buffer, and replies are parsed by redis-py's own (hiredis) parser.

Connections come from redis-py (URL parsing, TLS, AUTH, SELECT and RESP handshakes are its job);
each thread of each process keeps its own connection, so the client is safe to share between
threads and is rebuilt after ``fork``/``spawn``.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StoreConnectionError, StoreError

try:
    import redis
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import ResponseError as _ResponseError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "chunkmap.redis needs the redis client: pip install 'chunkmap[redis]' (redis>=5, hiredis>=2)"
    ) from exc

__all__ = ["Client", "redact"]

_FLUSH = 1 << 20  # bytes per sendall
_CRLF = b"\r\n"


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


def _arg(a: Any) -> bytes:
    if type(a) is bytes:
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return repr(a).encode()
    if isinstance(a, (bytearray, memoryview)):
        return bytes(a)
    raise TypeError(f"cannot send {type(a).__name__} to Redis; expected bytes, str, int or float")


class Packer:
    """Accumulate commands as RESP into buffers of about ``_FLUSH`` bytes."""

    __slots__ = ("parts", "size", "out")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.size = 0
        self.out: list[bytes] = []

    def command(self, args: Sequence[Any]) -> None:
        """Add one command; a ``(header, data)`` argument is sent as one bulk string."""
        parts = self.parts
        parts.append(b"*%d\r\n" % len(args))
        size = self.size
        for a in args:
            if type(a) is tuple:  # (header, data) from chunkmap.codec.encode_parts
                header, data = a
                n = len(header) + data.nbytes
                parts.append(b"$%d\r\n" % n)
                parts.append(header)
                parts.append(data)
                parts.append(_CRLF)
                size += n + 16
            else:
                b = _arg(a)
                parts.append(b"$%d\r\n" % len(b))
                parts.append(b)
                parts.append(_CRLF)
                size += len(b) + 16
        self.size = size
        if size >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.out.append(b"".join(self.parts))
            self.parts = []
            self.size = 0

    def buffers(self) -> list[bytes]:
        self.flush()
        return self.out


class Client:
    """Send commands to the Redis server at ``url`` and read their replies.

    Parameters
    ----------
    url : str
        ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
        ``unix:///path/to/socket?db=0``.
    **connection_kwargs
        Passed to :meth:`redis.ConnectionPool.from_url` (``socket_timeout``, ``ssl_ca_certs``...).
    """

    def __init__(self, url: str, **connection_kwargs: Any) -> None:
        self.url = url
        self.connection_kwargs = connection_kwargs
        try:
            self._pool = redis.ConnectionPool.from_url(url, **connection_kwargs)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"cannot use the Redis URL {redact(url)!r}: {exc}; expected "
                f"redis://[[user]:password@]host[:port][/db], rediss://... or unix:///path"
            ) from None
        self._local = threading.local()

    def __reduce__(self):
        return (_rebuild_client, (self.url, self.connection_kwargs))

    def _connection(self):
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            pool = self._pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001 - it is broken already
                pass
            self._local.conn = None

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._drop()

    def execute(
        self, commands: Sequence[Sequence[Any]], *, retry: bool = True, timeout: float | None = None
    ) -> list[Any]:
        """Send ``commands`` in one round trip and return their replies, in order.

        A reply that is a Redis error is returned as a ``redis.ResponseError`` instance (the
        caller decides); a connection failure raises :class:`StoreConnectionError` after one
        retry on a fresh connection when ``retry`` (every command chunkmap sends with
        ``retry=True`` is idempotent). ``timeout`` overrides the socket timeout while reading
        (for blocking commands).
        """
        read_kwargs = {} if timeout is None else {"timeout": timeout}
        p = Packer()
        for c in commands:
            p.command(c)
        buffers = p.buffers()
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.send_packed_command(buffers, check_health=False)
                replies = []
                for _ in commands:
                    try:
                        replies.append(conn.read_response(**read_kwargs))
                    except _ResponseError as err:
                        replies.append(err)
                return replies
            except (_RedisConnectionError, _RedisTimeoutError, OSError) as exc:
                self._drop()
                if attempt or not retry or isinstance(exc, redis.exceptions.AuthenticationError):
                    raise self.connection_error(exc) from exc
            except BaseException:
                self._drop()  # e.g. KeyboardInterrupt mid-read: the stream is out of step
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply; a Redis error reply raises :class:`StoreError`."""
        (reply,) = self.execute((args,))
        if isinstance(reply, _ResponseError):
            raise self.response_error(args, reply)
        return reply

    def connection_error(self, exc: BaseException) -> StoreConnectionError:
        return StoreConnectionError(
            f"cannot talk to Redis at {redact(self.url)}: {str(exc).rstrip('.')}; is redis-server running and "
            f"reachable there (try `redis-cli -u {redact(self.url)} ping`)?"
        )

    def response_error(self, args: Sequence[Any], reply: BaseException) -> StoreError:
        name = _arg(args[0]).decode(errors="replace") if args else "?"
        return StoreError(f"Redis at {redact(self.url)} refused {name}: {reply}")

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


def _rebuild_client(url: str, connection_kwargs: dict[str, Any]) -> Client:
    return Client(url, **connection_kwargs)


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

