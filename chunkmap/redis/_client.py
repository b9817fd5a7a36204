"""A thin, fast command path over redis-py connections, shared by the store and the replay buffer.

Why not ``redis.Redis`` and its pipelines: measured on the project's machines (see
``benchmarks/README.md``), redis-py with hiredis packs every argument with
``hiredis.pack_command``, which first turns memoryviews into ``bytes`` (one copy) and then copies
them again into the command; its pipeline adds ~10-40 us of Python per command; and its
pure-Python packer sends every argument over 6000 bytes with its own ``sendall`` (one system call
each, expensive on virtual machines). Here a command (or a batch of commands) is written as RESP
straight from the arrays' memory into one buffer per ~1 MiB (the only copy on the client side,
and bounded, so large batches do not page-fault a huge fresh allocation), sent with one
``sendall`` per buffer, and replies are read with ``recv_into`` into the connection's reused
buffer and parsed by a ``hiredis.Reader`` of our own.

redis-py only connects (URL parsing, TLS, AUTH, SELECT and RESP handshakes are its job); after
that the socket is ours. On Linux a plain TCP or Unix socket is made blocking with the
``socket_timeout`` as kernel timeouts, so a single request costs two system calls (``sendto``,
``recvfrom``) instead of the five of redis-py's ``send_packed_command``/``read_response``
(a ``poll`` before each, a ``getpid``), and ~10 us less Python. An optional bounded busy-poll
(``spin``) waits for the reply without letting the core go idle.

Each thread of each process keeps its own connection, so the client is safe to share between
threads and is rebuilt after ``fork``/``spawn``.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StoreConnectionError, StoreError

try:
    import hiredis
    import redis
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import InvalidResponse as _InvalidResponse
    from redis.exceptions import ResponseError as _ResponseError
    from redis.exceptions import TimeoutError as _RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "chunkmap.redis needs the redis client: pip install 'chunkmap[redis]' (redis>=5, hiredis>=2)"
    ) from exc

__all__ = ["Client", "redact", "MAX_SPIN"]

_FLUSH = 1 << 20  # bytes per sendall
MAX_SPIN = 0.01  # seconds: the longest busy-poll a client may ask for
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
        """Add one command (encoded by :func:`pack_parts`); a ``(header, data)`` argument is sent
        as one bulk string."""
        pieces, size = pack_parts(args)
        self.parts.extend(pieces)
        self.size += size
        if self.size >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.out.append(b"".join(self.parts))
            self.parts = []
            self.size = 0

    def buffers(self) -> list[bytes]:
        self.flush()
        return self.out


def pack_parts(args: Sequence[Any]) -> tuple[list[Any], int]:
    """Return one command as RESP in a few buffers (small pieces joined, array data as is) and
    its length in bytes.

    ``b"".join`` of the buffers is the command; a ``sendmsg`` of them sends the arrays straight
    from their memory (no copy on the client side).
    """
    pieces = [b"*%d\r\n" % len(args)]
    out: list[Any] = []
    total = 0
    for a in args:
        if type(a) is tuple:  # (header, data) from chunkmap.codec.encode_parts
            header, data = a
            n = data.nbytes
            pieces.append(b"$%d\r\n%b" % (len(header) + n, header))
            small = b"".join(pieces)
            out.append(small)
            out.append(data)
            total += len(small) + n
            pieces = [_CRLF]
        else:
            b = a if type(a) is bytes else _arg(a)
            pieces.append(b"$%d\r\n%b\r\n" % (len(b), b))
    small = b"".join(pieces)
    out.append(small)
    return out, total + len(small)


def _send_rest(sock: socket.socket, parts: list[Any], sent: int) -> None:
    """Send what a partial ``sendmsg`` of ``parts`` left, without copying the arrays."""
    for p in parts:
        if type(p) is not bytes:  # a C-contiguous array: its bytes (datetimes have no memoryview)
            p = p.reshape(-1).view("u1")
        n = len(p)
        if sent >= n:
            sent -= n
            continue
        sock.sendall(memoryview(p)[sent:])
        sent = 0


def check_spin(spin: Any) -> float:
    """Validate a busy-poll duration in seconds (0 = off, at most ``MAX_SPIN``)."""
    try:
        value = float(spin)
    except (TypeError, ValueError):
        raise TypeError(f"spin is a number of seconds, received {spin!r}") from None
    if not 0.0 <= value <= MAX_SPIN:
        raise ValueError(
            f"spin must be between 0 (off) and {MAX_SPIN} seconds, received {spin!r} "
            f"(a few hundred microseconds, e.g. 200e-6, is what pays)"
        )
    return value


# A process forked from one that had connections must not use (or shut down) their sockets.
_generation = 0


def _after_fork() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

_IO_ERRORS = (_RedisConnectionError, _RedisTimeoutError, _InvalidResponse, OSError)
_MORE = object()  # hiredis: no complete reply buffered yet
_RECV_SIZE = 256 * 1024
_LINUX = sys.platform.startswith("linux")
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_TIMEVAL = struct.Struct("@ll")


def _reader(parse_error: Any) -> Any:
    try:
        return hiredis.Reader(protocolError=_InvalidResponse, replyError=parse_error, notEnoughData=_MORE)
    except TypeError:  # pragma: no cover - hiredis < 2.1 answers False, also a RESP3 reply
        raise ImportError("chunkmap.redis needs hiredis>=2.1: pip install -U hiredis") from None


class _Link:
    """One thread's connection: redis-py connects it (TLS, AUTH, SELECT, HELLO), we do the I/O.

    On Linux, a plain TCP or Unix socket is put in blocking mode with the connection's
    ``socket_timeout`` as kernel timeouts (``SO_SNDTIMEO``/``SO_RCVTIMEO``), so a request is
    one ``send`` and (usually) one ``recv_into`` -- Python's own timeout would add a ``poll``
    before each. TLS sockets and other systems keep Python's timeout.
    """

    __slots__ = ("conn", "sock", "reader", "buf", "generation", "kernel_timeout", "timeout", "spin")

    def __init__(self, conn: Any, spin: float) -> None:
        conn.connect()
        sock = conn._sock
        self.conn = conn
        self.sock = sock
        self.generation = _generation
        self.reader = _reader(getattr(getattr(conn, "_parser", None), "parse_error", _ResponseError))
        self.buf = bytearray(_RECV_SIZE)
        self.timeout = sock.gettimeout()
        plain = bool(_LINUX and _DONTWAIT and type(sock) is socket.socket)
        self.kernel_timeout = plain
        self.spin = spin if plain and hasattr(os, "sched_yield") else 0.0
        if plain:
            sock.settimeout(None)
            if self.timeout:
                self._kernel_timeouts(self.timeout, send=True)

    def __del__(self) -> None:
        # redis-py's connection sits in a reference cycle (its maintenance-notification
        # handlers), so it closes its socket only when the garbage collector gets to it, in
        # an arbitrary order with the socket's own finalizer (a ResourceWarning). Close it now.
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _kernel_timeouts(self, seconds: float | None, send: bool = False) -> None:
        sec, usec = divmod(int(round((seconds or 0) * 1e6)), 1_000_000)
        tv = _TIMEVAL.pack(sec, usec)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        if send:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)

    def _set_read_timeout(self, seconds: float | None) -> None:
        if self.kernel_timeout:
            self._kernel_timeouts(seconds)
        else:
            self.sock.settimeout(seconds)

    def request(self, args: Sequence[Any]) -> Any:
        """Send one command and return its reply: one ``sendmsg``, usually one ``recv_into``."""
        parts, total = pack_parts(args)
        sock = self.sock
        try:
            if self.kernel_timeout:
                sent = sock.sendmsg(parts)
                if sent < total:  # the socket buffer was full: send the rest
                    _send_rest(sock, parts, sent)
            else:
                sock.sendall(b"".join(parts))
        except BlockingIOError:  # SO_SNDTIMEO expired
            raise _RedisTimeoutError(self._timeout_message("writing to")) from None
        if self.spin:
            return self.read(1)[0]
        try:  # the usual case, inline: the whole reply in one recv_into
            got = sock.recv_into(self.buf)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise _RedisTimeoutError(self._timeout_message("reading from")) from None
        if not got:
            raise _RedisConnectionError("connection closed by the server")
        reader = self.reader
        reader.feed(self.buf, 0, got)
        reply = reader.gets()
        if reply is _MORE:
            return self.read(1)[0]
        if isinstance(reply, _RedisConnectionError):
            raise reply
        return reply

    def round_trip(self, buffers: Sequence[bytes], n: int, timeout: float | None) -> list[Any]:
        sock = self.sock
        try:
            for b in buffers:
                sock.sendall(b)
        except BlockingIOError:  # SO_SNDTIMEO expired
            raise _RedisTimeoutError(self._timeout_message("writing to")) from None
        if timeout is None:
            return self.read(n)
        self._set_read_timeout(timeout)
        try:
            return self.read(n)
        finally:
            self._set_read_timeout(self.timeout)

    def read(self, n: int) -> list[Any]:
        """Read ``n`` replies."""
        reader, sock, buf = self.reader, self.sock, self.buf
        replies: list[Any] = []
        until = time.perf_counter() + self.spin if self.spin else 0.0
        while True:
            reply = reader.gets()
            if reply is _MORE:
                if until:
                    got = self._spin_recv(until)
                else:
                    try:
                        got = sock.recv_into(buf)
                    except BlockingIOError:  # SO_RCVTIMEO expired
                        raise _RedisTimeoutError(self._timeout_message("reading from")) from None
                if not got:
                    raise _RedisConnectionError("connection closed by the server")
                reader.feed(buf, 0, got)
                continue
            if isinstance(reply, _RedisConnectionError):  # NOAUTH, LOADING...: the link is unusable
                raise reply
            replies.append(reply)
            if len(replies) == n:
                return replies

    def _spin_recv(self, until: float) -> int:
        sock, buf = self.sock, self.buf
        clock, pause = time.perf_counter, os.sched_yield
        while True:
            try:
                return sock.recv_into(buf, 0, _DONTWAIT)
            except BlockingIOError:
                if clock() >= until:
                    break
                pause()  # a server on this very core gets to run
        try:
            return sock.recv_into(buf)
        except BlockingIOError:
            raise _RedisTimeoutError(self._timeout_message("reading from")) from None

    def _timeout_message(self, doing: str) -> str:
        return f"timeout {doing} the socket (socket_timeout={self.timeout} s)"


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
        Passed to :meth:`redis.ConnectionPool.from_url` (``socket_timeout``, ``ssl_ca_certs``...).
    """

    def __init__(self, url: str, *, spin: float = 0.0, **connection_kwargs: Any) -> None:
        self.url = url
        self.spin = check_spin(spin)
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
        return (_rebuild_client, (self.url, self.spin, self.connection_kwargs))

    def _open(self) -> _Link:
        pool = self._pool
        link = _Link(pool.connection_class(**pool.connection_kwargs), self.spin)
        self._local.link = link
        return link

    def _drop(self) -> None:
        link = getattr(self._local, "link", None)
        if link is not None:
            self._local.link = None
            if link.generation == _generation:  # never shut down a socket inherited over fork
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
                if link is None or link.generation != _generation:
                    link = self._open()
                if n == 0:
                    return link.request(buffers)
                return link.round_trip(buffers, n, timeout)
            except _IO_ERRORS as exc:
                self._drop()
                if attempt or not retry or isinstance(exc, redis.exceptions.AuthenticationError):
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
        caller decides); a connection failure raises :class:`StoreConnectionError` after one
        retry on a fresh connection when ``retry`` (every command chunkmap sends with
        ``retry=True`` is idempotent). ``timeout`` overrides the socket timeout while reading
        (for blocking commands).
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

