"""The bookkeeping every party of a :class:`~chunkmap.shm.SlotPool` shares, in one small segment.

One int64 :class:`~chunkmap.shm.SharedArray` holds, for a pool of ``n`` slots:

- a header: closed flag, producers finished and expected, head and count of each ring;
- two rings of ``n`` slot indices, the *free* and the *filled* queue;
- each slot's state (free, held by a producer, filled, held by a consumer);
- the parties: up to :data:`MAX_PARTIES` processes that took part as producer or consumer,
  each as PID, start time and PID namespace (see :mod:`chunkmap.shm.pids`), role and whether it
  has left (a producer by finishing, a consumer at the end of the data or of ``consuming()``);
  a party whose process ended without leaving is *dead*, and recorded as the pool's cause of
  closing;
- the closing reason, as UTF-8 (at most :data:`REASON_BYTES` - 1 bytes).

It is read and changed only under one lock, held for a few index moves: a wait for it longer
than :data:`LOCK_TIMEOUT` means its holder died, and raises. Who waits for what (the
semaphores) is the pool's business, not this module's.

>>> import multiprocessing
>>> state = PoolState.create(2, producers=1, lock=multiprocessing.get_context("spawn").Lock())
>>> with state.locked():
...     index = state.pop(FREE)
...     state.push(FILLED, index)
...     state.count(FREE), state.count(FILLED)
(1, 1)
>>> state.close()
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import SharedMemoryError
from . import pids
from .array import SharedArray

__all__ = [
    "PoolState",
    "LOCK_TIMEOUT",
    "REASON_BYTES",
    "MAX_PARTIES",
    "PRODUCER",
    "CONSUMER",
    "ROLE_NAMES",
    "FREE",
    "FILLED",
    "SLOT_FREE",
    "SLOT_FILLING",
    "SLOT_FILLED",
    "SLOT_USING",
    "SLOT_STATE_NAMES",
]

LOCK_TIMEOUT = 30.0
"""Seconds a party waits for the pool's lock before concluding its holder died."""

REASON_BYTES = 512
"""Bytes kept for the closing reason (its terminating zero included)."""

MAX_PARTIES = 64
"""Parties a pool watches for death; processes beyond these take part unwatched."""

PRODUCER, CONSUMER = 1, 2
"""The parties' roles."""
ROLE_NAMES = {PRODUCER: "producer", CONSUMER: "consumer"}

FREE, FILLED = 0, 1
"""The two rings."""

SLOT_FREE, SLOT_FILLING, SLOT_FILLED, SLOT_USING = range(4)
SLOT_STATE_NAMES = {
    SLOT_FREE: "free",
    SLOT_FILLING: "held by a producer",
    SLOT_FILLED: "filled",
    SLOT_USING: "held by a consumer",
}

# the header's int64 fields
(_CLOSED, _FINISHED, _PRODUCERS, _FREE_HEAD, _FREE_COUNT, _FILLED_HEAD, _FILLED_COUNT, _DEAD_PID, _DEAD_ROLE,
 _HEADER) = range(10)
# a party's int64 fields (a row of zeros is unused)
_PID, _STARTED, _NAMESPACE, _ROLE, _LEFT, _PARTY_FIELDS = range(6)
_PARTIES = MAX_PARTIES * _PARTY_FIELDS
_RING_FIELDS = ((_FREE_HEAD, _FREE_COUNT), (_FILLED_HEAD, _FILLED_COUNT))


class PoolState:
    """A pool's shared bookkeeping (see the module docstring): ``segment`` guarded by ``lock``.

    Every method but :meth:`locked`, :meth:`close` and the ``closed``/``finished``/``reason``
    reads expects the caller to hold :meth:`locked`. Pickles as its segment and lock.
    """

    def __init__(self, segment: SharedArray, lock: Any) -> None:
        self.segment = segment
        self.lock = lock
        st = segment.array
        self.n = n = (len(st) - _HEADER - _PARTIES - REASON_BYTES // 8) // 3
        self._st = st
        self._rings = st[_HEADER : _HEADER + 2 * n].reshape(2, n)
        self._slot_states = st[_HEADER + 2 * n : _HEADER + 3 * n]
        self._parties = st[_HEADER + 3 * n : _HEADER + 3 * n + _PARTIES].reshape(MAX_PARTIES, _PARTY_FIELDS)
        self._reason = st[_HEADER + 3 * n + _PARTIES :].view(np.uint8)

    @classmethod
    def create(cls, slots: int, *, producers: int, lock: Any) -> PoolState:
        """A new state for ``slots`` free slots and ``producers`` producers."""
        segment = SharedArray.create(_HEADER + 3 * slots + _PARTIES + REASON_BYTES // 8, np.int64)
        st = segment.array
        st[_PRODUCERS] = producers
        st[_HEADER : _HEADER + slots] = np.arange(slots)  # the free ring holds every slot
        st[_FREE_COUNT] = slots
        return cls(segment, lock)

    def __getstate__(self) -> dict[str, Any]:
        return {"segment": self.segment, "lock": self.lock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["segment"], state["lock"])  # type: ignore[misc]

    @property
    def name(self) -> str:
        """The segment's name."""
        return self.segment.name

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock (raise :class:`SharedMemoryError` after :data:`LOCK_TIMEOUT` seconds)."""
        if not self.lock.acquire(timeout=LOCK_TIMEOUT):
            raise SharedMemoryError(
                f"the slot pool's lock was held for more than {LOCK_TIMEOUT} s: a process probably died "
                f"while holding it; close the pool and start again"
            )
        try:
            yield
        finally:
            self.lock.release()

    # -- the rings -----------------------------------------------------------------------------
    def push(self, ring: int, index: int) -> None:
        """Append slot ``index`` to ``ring`` (:data:`FREE` or :data:`FILLED`)."""
        head, count = _RING_FIELDS[ring]
        st = self._st
        self._rings[ring, (st[head] + st[count]) % self.n] = index
        st[count] += 1

    def pop(self, ring: int) -> int:
        """Take the oldest slot index of ``ring``."""
        head, count = _RING_FIELDS[ring]
        st = self._st
        index = int(self._rings[ring, st[head]])
        st[head] = (st[head] + 1) % self.n
        st[count] -= 1
        return index

    def count(self, ring: int) -> int:
        """How many slot indices ``ring`` holds."""
        return int(self._st[_RING_FIELDS[ring][1]])

    # -- slots ---------------------------------------------------------------------------------
    def slot_state(self, index: int) -> int:
        """Slot ``index``'s state, one of the ``SLOT_*`` values."""
        return int(self._slot_states[index])

    def set_slot_state(self, index: int, state: int) -> None:
        self._slot_states[index] = state

    # -- parties -------------------------------------------------------------------------------
    def _row_of(self, pid: int, role: int) -> np.ndarray | None:
        for row in self._parties:
            if row[_PID] == pid and row[_ROLE] == role:
                return row
        return None

    def join(self, role: int) -> None:
        """Count this process as a party of ``role`` (again, if it had left); watched from now on."""
        pid = os.getpid()
        row = self._row_of(pid, role)
        if row is None or row[_STARTED] != pids.start_time(pid):
            row = self._row_of(0, 0) if row is None else row  # a free row, or a dead PID's reused one
            if row is None:
                return  # MAX_PARTIES are watched already
            row[:] = (pid, pids.start_time(pid), pids.namespace(), role, 0)
        row[_LEFT] = 0

    def leave(self, role: int) -> None:
        """This process is done as ``role`` (it no longer counts as dead when it ends)."""
        row = self._row_of(os.getpid(), role)
        if row is not None:
            row[_LEFT] = 1

    def dead_party(self) -> tuple[int, int] | None:
        """(PID, role) of a party of this PID namespace whose process ended without leaving, or None."""
        here = pids.namespace()
        for pid, started, namespace, role, left in self._parties.tolist():
            if pid and not left and namespace == here and not pids.alive(pid, started):
                return pid, role
        return None

    @property
    def dead(self) -> tuple[int, int] | None:
        """(PID, role) of the dead party the pool was closed for, or None."""
        pid = int(self._st[_DEAD_PID])
        return (pid, int(self._st[_DEAD_ROLE])) if pid else None

    # -- producers and closing -----------------------------------------------------------------
    def finish_one(self) -> bool:
        """Count one producer as finished; return whether it was the last."""
        self._st[_FINISHED] += 1
        return bool(self._st[_FINISHED] == self._st[_PRODUCERS])

    @property
    def finished(self) -> bool:
        """True once every producer has finished."""
        return bool(self._st[_FINISHED] >= self._st[_PRODUCERS])

    @property
    def closed(self) -> bool:
        """True once :meth:`set_closed` was called (by any process)."""
        return bool(self._st[_CLOSED])

    @property
    def reason(self) -> str:
        """The reason given to :meth:`set_closed` ("" before)."""
        return bytes(self._reason).rstrip(b"\0").decode("utf-8", "replace")

    def set_closed(self, reason: str, dead: tuple[int, int] | None = None) -> None:
        """Mark the pool closed for every process, keeping the first :data:`REASON_BYTES` - 1
        bytes of ``reason`` and the (PID, role) of the ``dead`` party that caused it, if any."""
        if dead is not None:
            self._st[_DEAD_PID], self._st[_DEAD_ROLE] = dead
        data = reason.encode("utf-8", "replace")[: REASON_BYTES - 1]
        self._reason[:] = 0
        self._reason[: len(data)] = np.frombuffer(data, np.uint8)
        self._st[_CLOSED] = 1

    def close(self) -> None:
        """Drop this process's mapping (and unlink the segment in the creating process)."""
        if self.segment.owner:
            self.segment.unlink()
        self.segment.close()
        self._st = self._rings = self._slot_states = self._parties = self._reason = None  # type: ignore[assignment]
