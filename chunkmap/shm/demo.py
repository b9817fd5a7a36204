"""The seed's loader/processor pipeline on a :class:`~chunkmap.shm.SlotPool`.

Module-level functions, so that processes started with spawn can import them (a notebook's
own functions cannot be imported by a spawned child). Loaders fill slot ``k`` of the data with
the value ``k`` (a full write); processors check every element (a full read) and mark the item
seen in a shared counter array, so the caller can verify that every item arrived exactly once.

>>> report = run_pipeline(items=6, shape=(1000,), start_method="fork")
>>> report.ok, report.seen.tolist()
(True, [1, 1, 1, 1, 1, 1])
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from typing import Any

import numpy as np

from .array import SharedArray
from .pool import SlotPool

__all__ = ["loader", "processor", "run_pipeline", "PipelineReport", "add_and_sum"]


class DemoError(RuntimeError):
    """The failure injected by ``fail_at``."""


def loader(pool: SlotPool, items: range, timeout: float = 30.0, fail_at: int | None = None) -> None:
    """Fill one free slot per item of ``items`` with the item's value and publish it.

    Raises :class:`DemoError` at item ``fail_at`` (which aborts the pool).
    """
    with pool.producing():
        for k in items:
            with pool.get_free(timeout=timeout) as slot:
                if k == fail_at:
                    raise DemoError(f"loader failed at item {k}")
                slot.array.fill(k)


def processor(pool: SlotPool, seen: SharedArray, timeout: float = 30.0, fail_at: int | None = None) -> None:
    """Check every filled slot (all elements equal one item number) and count the item in ``seen``.

    Raises :class:`DemoError` when it receives item ``fail_at`` (which aborts the pool).
    """
    counts = seen.array
    with pool.consuming():
        for slot in pool.filled(timeout=timeout):
            with slot:
                a = slot.array
                k = int(a.flat[0]) if a.size else 0
                if k == fail_at:
                    raise DemoError(f"processor failed at item {k}")
                if a.size and not (a == k).all():
                    raise DemoError(f"slot {slot.index} holds a mix of items")
                counts[k] += 1


def add_and_sum(sa: SharedArray, value: float) -> tuple[int, float]:
    """Add ``value`` to every element of the shared array in place; return (pid, new sum)."""
    import os

    a = sa.array
    a += value
    return os.getpid(), float(a.sum())


@dataclasses.dataclass
class PipelineReport:
    """What :func:`run_pipeline` observed.

    Attributes
    ----------
    seen : numpy.ndarray
        How many times each item was processed.
    seconds : float
        Wall time from starting the processes to joining them.
    exitcodes : list of int or None
        Exit codes of the loaders then the processors (None: still running after ``timeout``).
    reason : str
        Why the pool closed ("" if it was not aborted).
    """

    seen: np.ndarray
    seconds: float
    exitcodes: list[int | None]
    reason: str

    @property
    def ok(self) -> bool:
        """Every process exited with 0 and every item was processed exactly once."""
        return all(c == 0 for c in self.exitcodes) and bool((self.seen == 1).all())


def run_pipeline(
    items: int = 10,
    shape: Any = (1_000_000,),
    dtype: Any = "float32",
    slots: int = 2,
    loaders: int = 1,
    processors: int = 1,
    start_method: str = "spawn",
    fail: str | None = None,
    timeout: float = 60.0,
) -> PipelineReport:
    """Run ``loaders`` and ``processors`` processes over ``items`` items through ``slots`` slots.

    Parameters
    ----------
    fail : {None, "loader", "processor", "close"}
        Inject a failure: the first loader or processor raises at item ``items // 2``, or the
        main process closes the pool once half the items are processed.
    timeout : float
        Bound on every wait, and on joining the processes (which are killed after it).
    """
    ctx = multiprocessing.get_context(start_method)
    half = items // 2
    with SlotPool(slots, shape, dtype, producers=loaders) as pool, SharedArray.create(items, np.int64) as seen:
        procs = [
            ctx.Process(
                target=loader,
                args=(pool, range(i, items, loaders), timeout, half if fail == "loader" and i == 0 else None),
            )
            for i in range(loaders)
        ] + [
            ctx.Process(target=processor, args=(pool, seen, timeout, half if fail == "processor" and i == 0 else None))
            for i in range(processors)
        ]
        t = time.perf_counter()
        for p in procs:
            p.start()
        if fail == "close":  # once half the items are through
            deadline = time.monotonic() + timeout
            while seen.array.sum() < half and time.monotonic() < deadline and any(p.is_alive() for p in procs):
                time.sleep(0.005)
            pool.close()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        seconds = time.perf_counter() - t
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        exitcodes = [p.exitcode if not p.is_alive() else None for p in procs]
        reason = pool.reason if pool.closed else ""
        return PipelineReport(seen.array.copy(), seconds, exitcodes, reason)
