"""The parties of a :class:`~chunkmap.shm.SlotPool`: joining and leaving, waiting, and a dead one.

A process is watched as a party from its first ``get_free`` (a producer), ``get_filled`` (a
consumer) or ``with pool.producing():``/``consuming():`` until it leaves: a producer by
``finish``, a consumer when ``get_filled`` returns None or its ``consuming()`` block ends. Who
is watched is kept in the pool's shared state (:mod:`chunkmap.shm.pool_state`).

A party blocked for a slot checks every :data:`PEER_CHECK_INTERVAL` seconds, whatever its
``timeout`` (None too), whether a party's process has ended without leaving -- killed, crashed,
or exited early; a zombie counts as ended (:mod:`chunkmap.shm.pids`). If one has, it closes
the pool naming that PID, waking every blocked party, and every party then gets
:class:`~chunkmap.errors.PeerDiedError`, a :class:`~chunkmap.errors.PoolClosedError` that
``producing()`` and ``consuming()`` let through: a dead party cannot report its own end, so
the survivors do. Only parties in this PID namespace, and the first
:data:`~chunkmap.shm.pool_state.MAX_PARTIES`, are watched.

>>> died_reason(1234, PRODUCER).startswith("a producer (pid 1234) died without leaving the pool")
True
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import PeerDiedError, PoolClosedError, PoolTimeoutError
from .pool_state import CONSUMER, PRODUCER, ROLE_NAMES
from .slot import abort_reason

__all__ = ["PEER_CHECK_INTERVAL", "Parties", "died_reason"]

PEER_CHECK_INTERVAL = 0.2
"""Seconds between a blocked party's checks that the other parties' processes still exist."""


def died_reason(pid: int, role: int) -> str:
    """The reason a pool is closed with when party ``pid`` of ``role`` died without leaving."""
    missing = "finish()" if role == PRODUCER else "the end of the data or of its consuming() block"
    return (
        f"a {ROLE_NAMES[role]} (pid {pid}) died without leaving the pool: its process ended (killed, "
        f"crashed, or exited early) before {missing}; what went through the pool is incomplete, so run "
        f"the pipeline again"
    )


class Parties:
    """What a :class:`~chunkmap.shm.SlotPool` does as a party (see the module docstring).

    Expects of the pool: ``_state`` (a :class:`~chunkmap.shm.pool_state.PoolState`),
    ``_free_sem``, ``_filled_sem``, ``_joined`` (this process's PID and the roles it joined as),
    ``closed``, ``_closed_here``, ``_locked()``, ``_raise_closed()``, ``finish()`` and ``abort()``.
    """

    _state: Any
    _free_sem: Any
    _filled_sem: Any
    _joined: tuple[int, set[int]]
    _closed_here: bool
    closed: bool

    def _join(self, role: int) -> None:
        """Be watched as a party of ``role`` from now on."""
        pid, roles = self._joined
        if pid != os.getpid():  # a forked child: a party of its own
            self._joined = pid, roles = os.getpid(), set()
        if role not in roles and not self.closed:
            with self._locked():
                self._state.join(role)
            roles.add(role)

    def _leave(self, role: int) -> None:
        """Stop being watched as ``role`` (a party that has left may end without closing the pool)."""
        if not self.closed:
            with self._locked():
                self._state.leave(role)
        self._joined[1].discard(role)

    def _close_for_dead_party(self) -> None:
        """Close the pool if a party's process ended without leaving it."""
        with self._locked():
            dead = None if self._state.closed else self._state.dead_party()
            if dead is not None:
                self._state.set_closed(died_reason(*dead), dead)
        if dead is not None:
            self._free_sem.release()  # wake every blocked party, as abort() does
            self._filled_sem.release()

    def _acquire(self, sem: Any, timeout: float | None, what: str) -> None:
        """Take a token from ``sem``, checking between waits that the pool is open and its parties alive."""
        if self._closed_here:
            self._raise_closed()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = PEER_CHECK_INTERVAL if deadline is None else max(0.0, deadline - time.monotonic())
            if sem.acquire(timeout=min(left, PEER_CHECK_INTERVAL)):
                return
            self._close_for_dead_party()
            if self.closed:
                self._raise_closed()
            if deadline is not None and time.monotonic() >= deadline:
                raise PoolTimeoutError(f"no {what} slot within {timeout} s")

    @contextmanager
    def producing(self) -> Iterator[Any]:
        """Context manager for one producer: ``finish()`` on success, ``abort()`` on an exception.

        A :class:`PoolClosedError` (someone else failed or closed the pool) ends the block quietly;
        a :class:`PeerDiedError` propagates.
        """
        self._join(PRODUCER)
        with self._party("producer"):
            yield self
        if not self.closed:
            self.finish()

    @contextmanager
    def consuming(self) -> Iterator[Any]:
        """Context manager for one consumer: ``abort()`` on an exception; it leaves the pool at the end.

        A :class:`PoolClosedError` (someone else failed or closed the pool) ends the block quietly;
        a :class:`PeerDiedError` propagates.
        """
        self._join(CONSUMER)
        with self._party("consumer"):
            yield self
        self._leave(CONSUMER)

    @contextmanager
    def _party(self, role: str) -> Iterator[None]:
        """Abort the pool when ``role``'s block raises; end quietly if the pool was closed meanwhile."""
        try:
            yield
        except PeerDiedError:
            raise
        except PoolClosedError:
            return
        except BaseException as exc:
            self.abort(abort_reason(role, exc))
            raise
