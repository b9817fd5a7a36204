"""Functions run in child processes by the shared-memory tests (importable under spawn)."""

from __future__ import annotations

import os
import time


from chunkmap.shm import SharedArray, SlotPool


def pid() -> int:
    return os.getpid()


def maps_of(name: str) -> int:
    """How many mappings of the segment ``name`` this process has."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if name.rsplit("/", 1)[-1] in line)


def add_one(sa: SharedArray) -> tuple[int, float]:
    """Add 1 to every element in place; return the pid and the new sum."""
    a = sa.array
    a += 1
    return os.getpid(), float(a.sum())


def hold_many(refs: list[SharedArray]) -> tuple[int, int, int]:
    """Attach every reference (all to one segment); return pid, mappings of it, distinct buffers."""
    arrays = [r.array for r in refs]
    bases = {a.__array_interface__["data"][0] for a in arrays}
    return os.getpid(), maps_of(refs[0].name), len(bases)


def mappings_after_attach(sa: SharedArray) -> tuple[int, int, int]:
    """Touch the attached array; return the pid, how many mappings of it the process has, and
    the id of the mmap object behind it (the same for every task if the mapping is reused)."""
    sa.array.flat[0] += 0
    return os.getpid(), maps_of(sa.name), id(sa._segment.mmap)


def attach_and_report(name: str, shape, dtype) -> float:
    sa = SharedArray.attach(name, shape, dtype)
    return float(sa.array.sum())


def use_forever(sa: SharedArray, ready) -> None:
    """Attach, signal, and keep touching the array until killed."""
    a = sa.array
    a[0] += 1
    ready.set()
    while True:
        a[0] += 1
        time.sleep(0.001)


def block_on_filled(pool: SlotPool, timeout: float, out) -> None:
    """Wait for a filled slot; report what happened in ``out`` (a queue)."""
    t = time.monotonic()
    try:
        pool.get_filled(timeout=timeout)
        out.put(("slot", time.monotonic() - t))
    except Exception as exc:
        out.put((type(exc).__name__, time.monotonic() - t))


def block_on_free(pool: SlotPool, timeout: float, out) -> None:
    """Take every free slot, then wait for one more; report what happened."""
    t = time.monotonic()
    try:
        while True:
            pool.get_free(timeout=timeout)
    except Exception as exc:
        out.put((type(exc).__name__, time.monotonic() - t))


def produce_items(pool: SlotPool, items: range, timeout: float) -> None:
    """Publish one slot per item: element 0 holds the item, the rest the producer's pid."""
    with pool.producing():
        for k in items:
            with pool.get_free(timeout=timeout) as slot:
                slot.array[:] = os.getpid()
                slot.array[0] = k


def consume_into(pool: SlotPool, seen: SharedArray, row: int, timeout: float, delay: float = 0.0) -> None:
    """Count each received item in row ``row`` of ``seen``."""
    counts = seen.array[row]
    with pool.consuming():
        for slot in pool.filled(timeout=timeout):
            with slot:
                counts[int(slot.array[0])] += 1
                if delay:
                    time.sleep(delay)



def maps_after_attaching(sa: SharedArray, other: str) -> tuple[int, int]:
    """Attach ``sa``; return mappings of it and of segment ``other``."""
    sa.array.sum()
    return maps_of(sa.name), maps_of(other)


def forget_and_count(name: str) -> tuple[int, int]:
    from chunkmap.shm import segment

    return segment.forget_mappings(), maps_of(name)


def wait_as(role: str, pool: SlotPool, out) -> None:
    """Block as ``role`` inside its context manager with no timeout: a producer after taking every
    free slot, a consumer for a filled one; report (error, its pid and role, seconds) in ``out``."""
    t = time.monotonic()
    try:
        if role == "producer":
            with pool.producing():
                while True:
                    pool.get_free(timeout=None)
        else:
            with pool.consuming():
                pool.get_filled(timeout=None)
        out.put(("returned", 0, "", time.monotonic() - t))
    except Exception as exc:
        out.put((type(exc).__name__, getattr(exc, "pid", 0), getattr(exc, "role", ""), time.monotonic() - t))
