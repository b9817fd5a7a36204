"""How a chunk's input values reach a worker process: through the worker's shared-memory buffer.

numpy and :mod:`chunkmap.shm` only. Each worker slot of a pool owns one shared-memory buffer
(grown when a chunk needs more). The parent copies a chunk's unmasked values into it, one column
after the other, and the request carries only the buffer's name and each column's offset, dtype
and length (:class:`SharedColumns`): a few hundred bytes whatever the chunk's size. The worker
reads the columns as views on its mapping of the buffer, without copying them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .shm import SharedArray

__all__ = ["SharedColumns", "InputBuffer"]

ALIGNMENT = 64


@dataclass(frozen=True)
class SharedColumns:
    """Columns stored in a shared buffer: ``(offset, dtype, length)`` each. Pickles small."""

    buffer: SharedArray
    layout: tuple[tuple[int, str, int], ...]

    def columns(self) -> list[np.ndarray]:
        """The columns as read-only views on this process's mapping of the buffer."""
        data = self.buffer.array
        columns = []
        for offset, dtype, length in self.layout:
            column = np.frombuffer(data, dtype=np.dtype(dtype), count=length, offset=offset)
            column.flags.writeable = False
            columns.append(column)
        return columns


class InputBuffer:
    """A worker slot's shared-memory buffer, owned by the parent.

    Examples
    --------
    >>> buffer = InputBuffer()
    >>> shared = buffer.store([np.arange(3.0), np.array([True, False, True])])
    >>> [column.tolist() for column in shared.columns()]
    [[0.0, 1.0, 2.0], [True, False, True]]
    >>> buffer.close()
    """

    def __init__(self) -> None:
        self._shared: SharedArray | None = None

    def store(self, columns: Sequence[np.ndarray]) -> SharedColumns:
        """Copy ``columns`` into the buffer (growing it if needed) and describe where they are."""
        layout, size = [], 0
        for column in columns:
            size = -(-size // ALIGNMENT) * ALIGNMENT
            layout.append((size, column.dtype.str, len(column)))
            size += column.nbytes
        shared = self._reserve(size)
        data = shared.array
        for (offset, _, _), column in zip(layout, columns):
            data[offset : offset + column.nbytes] = np.ascontiguousarray(column).view(np.uint8).reshape(-1)
        return SharedColumns(shared, tuple(layout))

    def _reserve(self, size: int) -> SharedArray:
        if self._shared is None or self._shared.nbytes < size:
            grown = 2 * self._shared.nbytes if self._shared is not None else 0
            self.close()
            self._shared = SharedArray.create(max(size, 1 << 16, grown), np.uint8)
        return self._shared

    def close(self) -> None:
        """Unlink the buffer (workers' mappings stay valid until they drop them)."""
        if self._shared is not None:
            self._shared.unlink()
            self._shared.close()
            self._shared = None
