"""The bookkeeping every party of a :class:`~chunkmap.shm.SlotPool` shares, in one small segment.

One int64 :class:`~chunkmap.shm.SharedArray` holds, for a pool of ``n`` slots:

- a header: closed flag, producers finished and expected, head and count of each ring;
- two rings of ``n`` slot indices, the *free* and the *filled* queue;
- each slot's state (free, held by a producer, filled, held by a consumer);
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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import SharedMemoryError
from .array import SharedArray

__all__ = [
    "PoolState",
    "LOCK_TIMEOUT",
    "REASON_BYTES",
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
_CLOSED, _FINISHED, _PRODUCERS, _FREE_HEAD, _FREE_COUNT, _FILLED_HEAD, _FILLED_COUNT, _HEADER = range(8)
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
        self.n = n = (len(st) - _HEADER - REASON_BYTES // 8) // 3
        self._st = st
        self._rings = st[_HEADER : _HEADER + 2 * n].reshape(2, n)
        self._slot_states = st[_HEADER + 2 * n : _HEADER + 3 * n]
        self._reason = st[_HEADER + 3 * n :].view(np.uint8)

    @classmethod
    def create(cls, slots: int, *, producers: int, lock: Any) -> PoolState:
        """A new state for ``slots`` free slots and ``producers`` producers."""
        segment = SharedArray.create(_HEADER + 3 * slots + REASON_BYTES // 8, np.int64)
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

    def set_closed(self, reason: str) -> None:
        """Mark the pool closed for every process, keeping the first :data:`REASON_BYTES` - 1
        bytes of ``reason``."""
        data = reason.encode("utf-8", "replace")[: REASON_BYTES - 1]
        self._reason[:] = 0
        self._reason[: len(data)] = np.frombuffer(data, np.uint8)
        self._st[_CLOSED] = 1

    def close(self) -> None:
        """Drop this process's mapping (and unlink the segment in the creating process)."""
        if self.segment.owner:
            self.segment.unlink()
        self.segment.close()
        self._st = self._rings = self._slot_states = self._reason = None  # type: ignore[assignment]
