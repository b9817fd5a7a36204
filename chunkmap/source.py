"""Where a chunk's input values come from.

numpy only. An :class:`ArraySource` holds the inputs of a run (broadcast views, never a stacked
copy) and reads them by ranges of flat C-order indices: a chunk gathers only its own unmasked
elements, which is all that is ever sent to a worker process.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .bitmask import BitMask
from .npy import NpyReader

if TYPE_CHECKING:
    from .kernel import ChunkOutput

__all__ = ["Source", "ArraySource", "Sized"]


class Source(Protocol):
    """Anything a chunk's kernel can read its inputs from."""

    shape: tuple[int, ...]

    def gather(self, start: int, stop: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Flat indices of the unmasked elements in ``[start, stop)`` and their input values."""
        ...


class Sized:
    """The ``shape`` and the number of ``elements`` of something planned over a ``source``."""

    source: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def elements(self) -> int:
        return self.source.size


class ArraySource:
    """The inputs of a run, broadcast to one shape and read by ranges of flat indices.

    Parameters
    ----------
    arrays : tuple of ndarray or NpyReader
        The inputs, each broadcastable to ``shape``; they are referenced, not copied. An
        :class:`~chunkmap.npy.NpyReader` (of the full shape) is read range by range.
    shape : tuple of int
        The broadcast shape.
    valid : BitMask or ndarray of bool, optional
        Flat (C order) ``True`` for the elements to compute (kept as a :class:`BitMask`);
        None means all of them.

    Examples
    --------
    >>> source = ArraySource((np.arange(6).reshape(2, 3), np.array([10, 20, 30])), (2, 3),
    ...                      valid=np.array([1, 1, 0, 1, 0, 1], bool))
    >>> index, (a, b) = source.gather(1, 5)
    >>> index.tolist(), a.tolist(), b.tolist()
    ([1, 3], [1, 3], [20, 10])
    """

    def __init__(
        self, arrays: tuple[np.ndarray, ...], shape: tuple[int, ...], valid: BitMask | np.ndarray | None = None
    ) -> None:
        self.arrays = tuple(arrays)
        self.shape = tuple(shape)
        self.size = math.prod(self.shape)
        self.valid = valid if valid is None or isinstance(valid, BitMask) else BitMask.pack(valid)
        self._flat = [self._flat_view(array) for array in self.arrays]

    def _flat_view(self, array: Any) -> Any:
        if isinstance(array, NpyReader):
            return FlatFile(array)
        if array.shape == self.shape and array.flags.c_contiguous:
            return array.reshape(-1)  # a view: slicing it copies nothing
        return np.broadcast_to(array, self.shape).flat  # slicing copies just the range

    def columns(self, start: int, stop: int) -> list[np.ndarray]:
        """Every element in ``[start, stop)``, one 1-D array per input."""
        return [flat[start:stop] for flat in self._flat]

    def flat_index(self, start: int, stop: int) -> np.ndarray:
        """Flat indices of the unmasked elements in ``[start, stop)`` (reads no input)."""
        if self.valid is None:
            return np.arange(start, stop, dtype=np.int64)
        index = np.flatnonzero(self.valid[start:stop]).astype(np.int64, copy=False)
        return np.add(index, start, out=index)

    def gather(self, start: int, stop: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Flat indices of the unmasked elements in ``[start, stop)`` and their input values."""
        columns = self.columns(start, stop)
        if self.valid is None:
            return self.flat_index(start, stop), columns
        selected = self.valid[start:stop]
        return self.flat_index(start, stop), [column[selected] for column in columns]

    def flat_arrays(self) -> tuple[np.ndarray, ...] | None:
        """Each input as a flat C-order array view, or None when one is broadcast or a file
        (its elements are then read by range, :meth:`columns`, not picked by flat index)."""
        flats = tuple(self._flat)
        return flats if all(isinstance(flat, np.ndarray) for flat in flats) else None

    def __reduce__(self):
        return (ArraySource, (self.arrays, self.shape, self.valid))

    def finish(self, chunk: Any, output: ChunkOutput) -> ChunkOutput:
        """What a task hands back for ``chunk``'s output: the output itself."""
        return output

    def readable_elsewhere(self, limit: int = 1 << 16) -> bool:
        """Whether another process can read the inputs from a small pickle: files, and in-memory
        arrays of at most ``limit`` bytes in all (each request would carry them: 640 kB cost a
        request ~8 ms here)."""
        in_memory = sum(array.nbytes for array in self.arrays if not isinstance(array, NpyReader))
        return in_memory <= limit

    def without_mask(self) -> ArraySource:
        """The same inputs with every element valid (to send with a chunk's own mask bits)."""
        return ArraySource(self.arrays, self.shape)


class FlatFile:
    """An .npy file sliced like a flat array: ``flat[start:stop]`` reads those elements (C order)."""

    def __init__(self, reader: NpyReader) -> None:
        self.reader = reader

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.reader.size)
        return self.reader.read_flat(start, max(start, stop))
