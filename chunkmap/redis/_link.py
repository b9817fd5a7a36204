"""One thread's connection to Redis: redis-py connects it, chunkmap does the I/O.

A request is written with one ``sendmsg`` (the arrays' memory as an iovec, see
:mod:`chunkmap.redis._resp`) and its reply read with ``recv_into`` into the link's reused
buffer, parsed by a ``hiredis.Reader`` of its own. On Linux a plain TCP or Unix socket is made
blocking with the ``socket_timeout`` as kernel timeouts (``SO_SNDTIMEO``/``SO_RCVTIMEO``), so a
request costs two system calls (``sendmsg``, ``recvfrom``) -- Python's own timeout would add a
``poll`` before each. TLS sockets and other systems keep Python's timeout. An optional bounded
busy-poll (``spin``) waits for the reply without letting the core go idle. Why the socket is
taken from redis-py at all is measured in :mod:`chunkmap.redis._adapter`.

A process forked from one that had links must not use (or shut down) their sockets:
:func:`current_generation` changes in every forked child, and a link remembers its own.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._adapter import (
    MORE,
    RedisConnectionError,
    RedisTimeoutError,
    connect,
    reply_reader,
)
from ._resp import pack_parts

__all__ = ["Link", "MAX_SPIN", "check_spin", "current_generation"]

MAX_SPIN = 0.01
"""Seconds: the longest busy-poll a client may ask for."""

_RECV_SIZE = 256 * 1024
_LINUX = sys.platform.startswith("linux")
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_TIMEVAL = struct.Struct("@ll")


def check_spin(spin: Any) -> float:
    """Validate a busy-poll duration in seconds (0 = off, at most :data:`MAX_SPIN`).

    Examples
    --------
    >>> check_spin(200e-6)
    0.0002
    """
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


_generation = 0


def _after_fork() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def current_generation() -> int:
    """How many forks separate this process from the one that imported this module first."""
    return _generation


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


class Link:
    """A connection of ``pool`` (see the module docstring), opened on construction.

    Attributes
    ----------
    conn : redis.Connection
        redis-py's connection (``conn.disconnect()`` closes it).
    sock : socket.socket
        Its socket, on which this link reads and writes.
    generation : int
        :func:`current_generation` when it was opened.
    """

    __slots__ = ("conn", "sock", "reader", "buf", "generation", "kernel_timeout", "timeout", "spin")

    def __init__(self, pool: Any, spin: float) -> None:
        self.conn, sock = connect(pool)
        self.sock = sock
        self.generation = _generation
        self.reader = reply_reader(pool)
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
            raise RedisTimeoutError(self._timeout_message("writing to")) from None
        if self.spin:
            return self.read(1)[0]
        try:  # the usual case, inline: the whole reply in one recv_into
            got = sock.recv_into(self.buf)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise RedisTimeoutError(self._timeout_message("reading from")) from None
        if not got:
            raise RedisConnectionError("connection closed by the server")
        reader = self.reader
        reader.feed(self.buf, 0, got)
        reply = reader.gets()
        if reply is MORE:
            return self.read(1)[0]
        if isinstance(reply, RedisConnectionError):
            raise reply
        return reply

    def round_trip(self, buffers: Sequence[bytes], n: int, timeout: float | None) -> list[Any]:
        """Send ``buffers`` and read ``n`` replies; ``timeout`` overrides the socket's while reading."""
        sock = self.sock
        try:
            for b in buffers:
                sock.sendall(b)
        except BlockingIOError:  # SO_SNDTIMEO expired
            raise RedisTimeoutError(self._timeout_message("writing to")) from None
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
            if reply is MORE:
                if until:
                    got = self._spin_recv(until)
                else:
                    try:
                        got = sock.recv_into(buf)
                    except BlockingIOError:  # SO_RCVTIMEO expired
                        raise RedisTimeoutError(self._timeout_message("reading from")) from None
                if not got:
                    raise RedisConnectionError("connection closed by the server")
                reader.feed(buf, 0, got)
                continue
            if isinstance(reply, RedisConnectionError):  # NOAUTH, LOADING...: the link is unusable
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
            raise RedisTimeoutError(self._timeout_message("reading from")) from None

    def _timeout_message(self, doing: str) -> str:
        return f"timeout {doing} the socket"
