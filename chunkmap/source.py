"""Where a chunk's input values come from, and what a chunk carries across a process boundary.

numpy only. An :class:`ArraySource` holds the inputs of a run (broadcast views, never a stacked
copy) and reads them by ranges of flat C-order indices. A :class:`ChunkTask` pairs one chunk with
its source; in-process schedulers read straight from the caller's arrays, and when a task is
pickled for another process it carries only its own unmasked values (:class:`ChunkData`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .plan import Chunk

__all__ = ["Source", "ArraySource", "ChunkData", "ChunkTask"]


class Source(Protocol):
    """Anything a chunk's kernel can read its inputs from."""

    shape: tuple[int, ...]

    def gather(self, start: int, stop: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Flat indices of the unmasked elements in ``[start, stop)`` and their input values."""
        ...


class ArraySource:
    """The inputs of a run, broadcast to one shape and read by ranges of flat indices.

    Parameters
    ----------
    arrays : tuple of ndarray
        The inputs, each broadcastable to ``shape``; they are referenced, not copied.
    shape : tuple of int
        The broadcast shape.
    valid : ndarray of bool, optional
        Flat (C order) ``True`` for the elements to compute; None means all of them.

    Examples
    --------
    >>> source = ArraySource((np.arange(6).reshape(2, 3), np.array([10, 20, 30])), (2, 3),
    ...                      valid=np.array([1, 1, 0, 1, 0, 1], bool))
    >>> index, (a, b) = source.gather(1, 5)
    >>> index.tolist(), a.tolist(), b.tolist()
    ([1, 3], [1, 3], [20, 10])
    """

    def __init__(
        self, arrays: tuple[np.ndarray, ...], shape: tuple[int, ...], valid: np.ndarray | None = None
    ) -> None:
        self.arrays = tuple(arrays)
        self.shape = tuple(shape)
        self.size = math.prod(self.shape)
        self.valid = valid
        self._flat = [self._flat_view(array) for array in self.arrays]

    def _flat_view(self, array: np.ndarray) -> np.ndarray | np.flatiter:
        if array.shape == self.shape and array.flags.c_contiguous:
            return array.reshape(-1)  # a view: slicing it copies nothing
        return np.broadcast_to(array, self.shape).flat  # slicing copies just the range

    def columns(self, start: int, stop: int) -> list[np.ndarray]:
        """Every element in ``[start, stop)``, one 1-D array per input."""
        return [flat[start:stop] for flat in self._flat]

    def gather(self, start: int, stop: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Flat indices of the unmasked elements in ``[start, stop)`` and their input values."""
        columns = self.columns(start, stop)
        if self.valid is None:
            return np.arange(start, stop, dtype=np.int64), columns
        selected = self.valid[start:stop]
        index = np.flatnonzero(selected).astype(np.int64, copy=False) + start
        return index, [column[selected] for column in columns]

    def __reduce__(self):
        return (ArraySource, (self.arrays, self.shape, self.valid))

    def extract(self, start: int, stop: int) -> ChunkData:
        """The unmasked values of ``[start, stop)``, detached from the full arrays."""
        columns = self.columns(start, stop)
        if self.valid is None:
            return ChunkData(self.shape, start, stop, None, columns)
        selected = self.valid[start:stop]
        bits = np.packbits(selected)
        return ChunkData(self.shape, start, stop, bits, [column[selected] for column in columns])


class ChunkData:
    """The unmasked input values of one range of flat indices, with the range's mask as bits.

    This is what a chunk carries to another process: about the unmasked elements' bytes plus
    one bit per element, whatever the size of the full inputs.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        start: int,
        stop: int,
        valid_bits: np.ndarray | None,
        columns: list[np.ndarray],
    ) -> None:
        self.shape = shape
        self.start = start
        self.stop = stop
        self.valid_bits = valid_bits
        self.columns = [np.ascontiguousarray(column) for column in columns]

    def gather(self, start: int, stop: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if (start, stop) != (self.start, self.stop):
            raise ValueError(
                f"this ChunkData holds flat indices [{self.start}, {self.stop}); "
                f"asked for [{start}, {stop})"
            )
        if self.valid_bits is None:
            return np.arange(start, stop, dtype=np.int64), self.columns
        selected = np.unpackbits(self.valid_bits, count=stop - start).view(bool)
        return np.flatnonzero(selected).astype(np.int64, copy=False) + start, self.columns

    def __reduce__(self):
        return (ChunkData, (self.shape, self.start, self.stop, self.valid_bits, self.columns))


class ChunkTask:
    """One chunk of work and the source to read it from.

    In the process that made it, a task reads the caller's arrays directly. Pickled, it becomes
    the chunk plus its :class:`ChunkData`, so a task sent to a worker process carries its own
    slice of the inputs and never the full arrays; the slice is cut only when the scheduler
    sends the task, so the unsent tasks of a run hold no copies.
    """

    __slots__ = ("chunk", "source")

    def __init__(self, chunk: Chunk, source: Source) -> None:
        self.chunk = chunk
        self.source = source

    def gather(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Flat indices of the chunk's unmasked elements and their input values."""
        return self.source.gather(self.chunk.start, self.chunk.stop)

    def __reduce__(self):
        source = self.source
        if isinstance(source, ArraySource):
            source = source.extract(self.chunk.start, self.chunk.stop)
        return (ChunkTask, (self.chunk, source))

    def __dask_tokenize__(self):
        # dask hashes bag items to name them; never let it pickle the inputs to do so.
        return ("chunkmap.ChunkTask", self.chunk, id(self.source))

    def __repr__(self) -> str:
        return f"ChunkTask({self.chunk!r})"
