"""SlotPool: N pre-allocated shared arrays passed between producers and consumers as tokens.

The seed's loader/processor pattern as a class. Producers take a *free* slot, fill it and
publish it; consumers take a *filled* slot, use it and release it. Only slot indices move
between processes; the arrays stay where they are.

How it works, and why shutdown cannot hang
    The free and filled queues are two rings of slot indices in a small shared segment, guarded
    by one lock (:mod:`chunkmap.shm.pool_state`); two counting semaphores hold one token per
    queued index. Ending or closing the pool adds one extra *poison* token: a party that takes
    a token and finds the pool closed (or, for consumers, the data ended and nothing left to
    consume) puts the token back before returning, so every blocked party -- and every later
    one -- wakes up, however many there are.
    There are no feeder threads or pipes (the shutdown hang of ``multiprocessing.Queue``),
    every wait takes a ``timeout``, and the lock is only held for a few index moves (a wait for
    it longer than :data:`LOCK_TIMEOUT` means its holder died, and raises).

    - end of data: each of the ``producers`` producers calls :meth:`SlotPool.finish` (or leaves
      ``with pool.producing():``); consumers drain the filled slots, then :meth:`get_filled`
      returns None and :meth:`filled` stops.
    - an exception inside ``with slot:`` or ``with pool.producing():`` aborts the pool with a
      description of it; everyone else gets :class:`~chunkmap.shm.PoolClosedError` carrying it.
    - :meth:`close` does the same with reason ``"closed"`` and, in the creating process, unlinks
      the segments (processes that have them mapped keep using their memory safely).
    - a party whose process ends (SIGKILL, a crash) without leaving the pool: a waiting party
      notices within :data:`PEER_CHECK_INTERVAL` seconds, even with ``timeout=None``, and closes
      the pool; everyone gets :class:`~chunkmap.errors.PeerDiedError` naming the dead PID
      (:mod:`chunkmap.shm.parties` says who counts as a party and when it has left).

What is not handled: one killed inside the lock's few-microsecond critical section leaves the
lock taken (the others then raise after :data:`LOCK_TIMEOUT`).

The pool pickles -- so it can be an argument of a ``multiprocessing.Process`` or a pool
initializer, started with fork or spawn -- as its segments' names and its semaphores. The
semaphores come from the spawn context so they work in both; like every multiprocessing lock,
they can only be pickled while a process is being started (not put on a queue later).

>>> pool = SlotPool(2, (3,), "float32")
>>> with pool.get_free(timeout=1) as slot:          # producer: fill, then publish at the end
...     slot.array[:] = [1, 2, 3]
>>> pool.finish()                                   # the only producer is done
>>> [float(slot.array.sum()) for slot in pool.filled(timeout=1)]
[6.0]
>>> pool.close()
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import (
    InputError,
    OptionError,
    PeerDiedError,
    PoolClosedError,
    SharedMemoryError,
)
from .array import SharedArray
from .parties import PEER_CHECK_INTERVAL, Parties
from .pool_state import (
    CONSUMER,
    FILLED,
    FREE,
    LOCK_TIMEOUT,
    MAX_PARTIES,
    PRODUCER,
    ROLE_NAMES,
    SLOT_FILLED,
    SLOT_FILLING,
    SLOT_FREE,
    SLOT_STATE_NAMES,
    SLOT_USING,
    PoolState,
)
from .slot import Slot

__all__ = ["SlotPool", "Slot", "LOCK_TIMEOUT", "MAX_PARTIES", "PEER_CHECK_INTERVAL"]


class SlotPool(Parties):
    """``slots`` shared arrays of one shape and dtype, passed around as free/filled tokens.

    Parameters
    ----------
    slots : int
        Number of pre-allocated arrays (2 gives double buffering).
    shape : int or sequence of int
        Shape of each array.
    dtype : numpy dtype-like
        Their dtype (default float64).
    producers : int
        How many producers will call :meth:`finish`; the data ends when all have.

    Examples
    --------
    Producer process::

        with pool.producing():                  # finish() at the end, abort() on an exception
            for chunk in source:
                with pool.get_free(timeout=60) as slot:
                    slot.array[...] = chunk     # published when the block ends

    Consumer process::

        with pool.consuming():                  # abort() on an exception
            for slot in pool.filled(timeout=60):   # until every producer has finished
                with slot:                      # released when the block ends
                    use(slot.array)
    """

    def __init__(
        self, slots: int, shape: int | Sequence[int], dtype: Any = np.float64, *, producers: int = 1
    ) -> None:
        if int(slots) < 1:
            raise OptionError(f"slots must be at least 1, got {slots!r}")
        if int(producers) < 1:
            raise OptionError(f"producers must be at least 1, got {producers!r}")
        n = int(slots)
        self._slots = [SharedArray.create(shape, dtype) for _ in range(n)]
        ctx = multiprocessing.get_context("spawn")  # named semaphores: usable under fork and spawn
        self._state = PoolState.create(n, producers=int(producers), lock=ctx.Lock())
        self._free_sem = ctx.Semaphore(n)
        self._filled_sem = ctx.Semaphore(0)
        self._setup()

    def _setup(self) -> None:
        self._n = len(self._slots)
        self.arrays: list[np.ndarray] = [s.array for s in self._slots]
        """The slots' numpy arrays, indexed like the slots."""
        self._closed_here = False
        self._final_reason = ""
        self._final_dead: tuple[int, int] | None = None
        self._joined: tuple[int, set[int]] = (os.getpid(), set())  # roles this process joined as

    def __getstate__(self) -> dict[str, Any]:
        if self._closed_here:
            raise PoolClosedError("closed")
        return {"slots": self._slots, "state": self._state, "semaphores": (self._free_sem, self._filled_sem)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._slots = state["slots"]
        self._state = state["state"]
        self._free_sem, self._filled_sem = state["semaphores"]
        self._setup()

    # -- properties ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, ...]:
        return self._slots[0].shape

    @property
    def dtype(self) -> np.dtype:
        return self._slots[0].dtype

    @property
    def closed(self) -> bool:
        """True once the pool was closed or aborted (by any process)."""
        return self._closed_here or self._state.closed

    @property
    def reason(self) -> str:
        """Why the pool was closed ("" while it is open)."""
        if self._closed_here:
            return self._final_reason
        return self._state.reason

    @property
    def finished(self) -> bool:
        """True once every producer has called :meth:`finish`."""
        if self._closed_here:
            return False
        return self._state.finished

    # -- internals -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._closed_here:
            self._raise_closed()
        with self._state.locked():
            yield

    def _raise_closed(self) -> None:
        dead = self._final_dead if self._closed_here else self._state.dead
        if dead is not None:
            raise PeerDiedError(self.reason, dead[0], ROLE_NAMES[dead[1]])
        raise PoolClosedError(self.reason or "closed")

    def _expect(self, slot: Slot, state: int, action: str) -> None:
        if slot.pool._state.name != self._state.name or not 0 <= slot.index < self._n:
            raise InputError(f"{slot!r} does not belong to this pool")
        if slot.done or self._state.slot_state(slot.index) != state:
            now = "already handed on" if slot.done else SLOT_STATE_NAMES[self._state.slot_state(slot.index)]
            raise InputError(f"cannot {action} slot {slot.index}: it is {now}")

    # -- producer side ---------------------------------------------------------------------------
    def get_free(self, timeout: float | None = None) -> Slot:
        """Take a free slot to fill (blocks until one is free).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits until a slot is free or the pool is closed.

        Returns
        -------
        Slot
            Publish it with :meth:`publish` (or use it as a context manager).

        Raises
        ------
        PoolClosedError
            If the pool is closed or aborted, before or while waiting.
        PeerDiedError
            (a PoolClosedError) If a party's process ended without leaving the pool.
        PoolTimeoutError
            If no slot became free in time.
        """
        self._join(PRODUCER)
        self._acquire(self._free_sem, timeout, "free")
        with self._locked():
            if self._state.closed or self._state.count(FREE) == 0:
                self._free_sem.release()  # pass the wake-up on
                self._raise_closed()
            index = self._state.pop(FREE)
            self._state.set_slot_state(index, SLOT_FILLING)
        return Slot(self, index, "producer")

    def publish(self, slot: Slot) -> None:
        """Hand a filled slot to the consumers.

        Raises
        ------
        PoolClosedError
            If the pool was closed meanwhile (the data is dropped).
        """
        with self._locked():
            self._expect(slot, SLOT_FILLING, "publish")
            slot.done = True
            if self._state.closed:
                self._raise_closed()
            self._state.set_slot_state(slot.index, SLOT_FILLED)
            self._state.push(FILLED, slot.index)
        self._filled_sem.release()

    def finish(self) -> None:
        """Declare that this producer has no more data (call once per producer).

        When all ``producers`` have finished, consumers drain what is filled and then stop.
        """
        with self._locked():
            last = self._state.finish_one()
            self._state.leave(PRODUCER)
        if last:
            self._filled_sem.release()  # the end-of-data token

    # -- consumer side ---------------------------------------------------------------------------
    def get_filled(self, timeout: float | None = None) -> Slot | None:
        """Take a filled slot to use (blocks until one is published or the data ends).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits until a slot is filled, the data ends or the
            pool is closed.

        Returns
        -------
        Slot or None
            A slot to :meth:`release` after use, or None once every producer has finished and
            every filled slot was taken.

        Raises
        ------
        PoolClosedError
            If the pool is closed or aborted.
        PeerDiedError
            (a PoolClosedError) If a party's process ended without leaving the pool.
        PoolTimeoutError
            If nothing arrived in time.
        """
        self._join(CONSUMER)
        self._acquire(self._filled_sem, timeout, "filled")
        with self._locked():
            if self._state.closed or self._state.count(FILLED) == 0:
                self._filled_sem.release()  # pass the end-of-data or closing token on
                if self._state.closed:
                    self._raise_closed()
                self._state.leave(CONSUMER)
                self._joined[1].discard(CONSUMER)
                return None
            index = self._state.pop(FILLED)
            self._state.set_slot_state(index, SLOT_USING)
        return Slot(self, index, "consumer")

    def release(self, slot: Slot) -> None:
        """Give a used slot back to the producers (does nothing once the pool is closed)."""
        if self.closed:
            slot.done = True
            return
        with self._locked():
            self._expect(slot, SLOT_USING, "release")
            slot.done = True
            self._state.set_slot_state(slot.index, SLOT_FREE)
            self._state.push(FREE, slot.index)
        self._free_sem.release()

    def filled(self, timeout: float | None = None) -> Iterator[Slot]:
        """Iterate over filled slots until the data ends.

        Each slot is released when the loop moves on (or use ``with slot:`` in the loop body, which
        also aborts the pool if the body raises).

        Parameters
        ----------
        timeout : float or None
            Passed to each :meth:`get_filled`.

        Raises
        ------
        PoolClosedError, PoolTimeoutError
            As :meth:`get_filled`.
        """
        while True:
            slot = self.get_filled(timeout)
            if slot is None:
                return
            try:
                yield slot
            finally:
                if not slot.done:
                    self.release(slot)

    # -- shutdown --------------------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        """Close the pool for every process, recording ``reason``; wakes every blocked party.

        The first reason is kept; later calls do nothing.
        """
        if self._closed_here:
            return
        with self._locked():
            if self._state.closed:
                return
            self._state.set_closed(reason)
        self._free_sem.release()  # one wake-up token each; every woken party passes it on
        self._filled_sem.release()

    def close(self) -> None:
        """Abort the pool with reason ``"closed"`` (if still open) and drop this process's mappings.

        In the creating process, also unlink the segments. Calling it again does nothing.
        """
        if self._closed_here:
            return
        try:
            self.abort("closed")
        except SharedMemoryError:  # a dead lock holder: still release what we hold
            pass
        self._final_reason = self.reason
        self._final_dead = self._state.dead
        self._closed_here = True
        for sa in self._slots:
            if sa.owner:
                sa.unlink()
            sa.close()
        self._state.close()
        self.arrays = []

    def __enter__(self) -> SlotPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"SlotPool(slots={self._n}, shape={self.shape}, dtype={self.dtype}, {state})"

