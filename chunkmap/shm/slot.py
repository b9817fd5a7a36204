"""A slot taken from a :class:`~chunkmap.shm.SlotPool`: its index, its array, and what ending
its ``with`` block does (publish or release it, or abort the pool if the block raised)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import PoolClosedError

if TYPE_CHECKING:
    from .pool import SlotPool

__all__ = ["Slot", "abort_reason"]


def abort_reason(role: str, exc: BaseException) -> str:
    """The reason a pool is aborted with when ``role``'s block raised ``exc``.

    Examples
    --------
    >>> abort_reason("producer", ValueError("bad row")).endswith("raised ValueError: bad row")
    True
    """
    return f"a {role} (pid {os.getpid()}) raised {type(exc).__name__}: {exc}"


class Slot:
    """A slot taken from a :class:`SlotPool`: its index and its array.

    As a context manager, a slot from :meth:`SlotPool.get_free` is published at the end of the
    block and one from :meth:`SlotPool.get_filled` is released; if the block raises, the pool is
    aborted (waking every other party) and the exception propagates.

    Attributes
    ----------
    index : int
        The slot's index in the pool.
    array : numpy.ndarray
        The slot's shared array.
    role : str
        ``"producer"`` or ``"consumer"``.
    """

    __slots__ = ("pool", "index", "array", "role", "done")

    def __init__(self, pool: SlotPool, index: int, role: str) -> None:
        self.pool = pool
        self.index = index
        self.array = pool.arrays[index]
        self.role = role
        self.done = False

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.done:
            return
        if exc is None:
            if self.role == "producer":
                self.pool.publish(self)
            else:
                self.pool.release(self)
        elif not isinstance(exc, PoolClosedError):
            self.pool.abort(abort_reason(self.role, exc))

    def __repr__(self) -> str:
        return f"Slot(index={self.index}, role={self.role!r})"
