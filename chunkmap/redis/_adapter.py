"""Everything chunkmap's Redis client takes from redis-py and hiredis, in one place.

redis-py connects: URL parsing, TLS, AUTH, SELECT, HELLO, credential providers and the other
options of :meth:`redis.ConnectionPool.from_url` stay its job, reached through public API only
(``ConnectionPool.from_url``, ``ConnectionPool.make_connection``, ``Connection.connect`` and
``disconnect``, the parser class's ``parse_error``). After that chunkmap does the I/O itself on
the connection's socket, which redis-py keeps in the private attribute ``Connection._sock``.

That attribute is the one private piece of redis-py chunkmap relies on. It is read here only
(:func:`connect`), redis-py is pinned in ``pyproject.toml`` to the major versions tested
(:data:`TESTED`), a changed attribute fails at the first connection with a
:class:`~chunkmap.errors.StoreError` naming the versions, and
``tests/redis/test_client.py::test_adapter_contract`` fails if redis-py changes it.

Why the socket rather than redis-py's public ``send_packed_command``/``read_response``
(measured in issue 12 with 80x80 uint16 arrays, redis-py 8.1 + hiredis 3.5, on the project's
2-core VM while it was loaded, so the timings are indicative; the system-call counts are exact):

- a put or get costs 2 system calls (one ``sendmsg`` with the array as an iovec, one
  ``recv_into``) instead of 4: redis-py 8 gives every socket a 5 s Python timeout, so each send
  and receive is preceded by a ``poll``; the kernel timeouts that replace it here
  (``SO_SNDTIMEO``/``SO_RCVTIMEO``) are set on the socket. Each system call is expensive on
  this VM (see the Redis section of ``benchmarks/README.md``).
- ``send_packed_command`` sends every piece with its own ``sendall``: an array is 3 sends, or
  one after copying it into a single buffer.
- the ``spin`` option (busy-polling for the reply: a single put 167 -> 59 us with client and
  server on separate cores, ``benchmarks/README.md``) needs non-blocking reads of the socket.
- measured side by side in one process (client and server sharing a core, 7 interleaved
  passes, load average ~6): put p50 45 us through the socket vs 55 us through the public calls
  (the array copied into one buffer; 117 us sending its pieces), get 46 vs 61 us, 64 arrays per
  round trip 102 k vs 67 k puts/s and 91 k vs 55 k gets/s.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..errors import StoreError

try:
    import hiredis
    import redis
    from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "chunkmap.redis needs the redis client: pip install 'chunkmap[redis]' (redis>=5,<9, hiredis>=2.1)"
    ) from exc

__all__ = [
    "TESTED",
    "MORE",
    "connection_pool",
    "connect",
    "reply_reader",
    "AuthenticationError",
    "InvalidResponse",
    "ResponseError",
    "RedisConnectionError",
    "RedisTimeoutError",
]

TESTED = "redis>=5,<9"
"""The redis-py versions whose ``Connection._sock`` chunkmap relies on (as pinned in pyproject.toml)."""

MORE = object()
"""What a :func:`reply_reader` returns while no complete reply is buffered."""


def connection_pool(url: str, **connection_kwargs: Any) -> redis.ConnectionPool:
    """Parse ``url`` and the connection options (raises ``ValueError``/``TypeError`` if invalid)."""
    return redis.ConnectionPool.from_url(url, **connection_kwargs)


def connect(pool: redis.ConnectionPool) -> tuple[Any, socket.socket]:
    """Open a new connection of ``pool``, handshake done; return it and its socket.

    The connection is not the pool's to hand out again: close it with its ``disconnect()``.
    """
    conn = pool.make_connection()
    conn.connect()
    sock = getattr(conn, "_sock", None)
    if not isinstance(sock, socket.socket):  # ssl.SSLSocket is a socket.socket too
        conn.disconnect()
        raise StoreError(
            f"redis-py {redis.__version__} keeps no connected socket in Connection._sock (found "
            f"{type(sock).__name__}), which chunkmap.redis relies on; it is tested with {TESTED}: "
            f"pip install '{TESTED}'"
        )
    return conn, sock


def reply_reader(pool: redis.ConnectionPool) -> Any:
    """A ``hiredis.Reader`` that parses replies as ``pool``'s connections would.

    Error replies become the exception instances redis-py's parser makes (``LOADING`` a
    ``BusyLoadingError``, ``NOAUTH`` an ``AuthenticationError``, both ``ConnectionError``\\ s;
    others a ``ResponseError``); :data:`MORE` stands for "no complete reply yet".
    """
    parser = pool.connection_kwargs.get("parser_class") or redis.connection.DefaultParser
    parse_error: Callable[[str], Exception] = getattr(parser, "parse_error", ResponseError)
    try:
        return hiredis.Reader(protocolError=InvalidResponse, replyError=parse_error, notEnoughData=MORE)
    except TypeError:  # pragma: no cover - hiredis < 2.1 answers False, also a RESP3 reply
        raise ImportError("chunkmap.redis needs hiredis>=2.1: pip install -U hiredis") from None
