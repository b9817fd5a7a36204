"""How a chunk's input values reach a worker process, in requests of a few hundred bytes.

numpy, :mod:`chunkmap.shm` and :mod:`chunkmap.source` only. Two ways, both giving the worker
``columns()``:

- :class:`SourceSlice`, when the worker can read the inputs itself (``.npy`` files, small
  arrays): the request carries the file paths, the chunk's flat range and its mask as bits, and
  the worker reads just that slice of each file.
- :class:`SharedColumns` otherwise: each worker slot of a pool owns one shared-memory buffer
  (:class:`InputBuffer`, grown when a chunk needs more); the parent copies the chunk's unmasked
  values into it and the request carries the buffer's name and each column's offset, dtype and
  length. The worker reads the columns as views on its mapping, without copying them.

:func:`chunk_inputs` picks the way for a chunk and :func:`request` makes the message for the part
of it a worker evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence, Union

import numpy as np

from ..shm import SharedArray
from ..source import ArraySource

__all__ = ["SharedColumns", "InputBuffer", "SourceSlice", "ChunkInputs", "chunk_inputs", "inputs_length", "request"]

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


@dataclass(frozen=True)
class SourceSlice:
    """Positions ``[first, last)`` of the unmasked elements of flat range ``[start, stop)`` of a source.

    Made in the parent by :meth:`of`, narrowed to the part a worker evaluates by :meth:`narrow`,
    and read in the worker by :meth:`columns`.
    """

    source: ArraySource
    start: int
    stop: int
    valid_bits: np.ndarray | None
    first: int
    last: int

    @classmethod
    def of(cls, source: ArraySource, start: int, stop: int) -> SourceSlice:
        """All unmasked elements of ``[start, stop)``; the mask travels as bits, the source without it."""
        selected = source.valid[start:stop] if source.valid is not None else None
        length = (stop - start) if selected is None else int(np.count_nonzero(selected))
        bits = np.packbits(selected) if selected is not None else None
        return cls(source.without_mask(), start, stop, bits, 0, length)

    @property
    def length(self) -> int:
        return self.last - self.first

    def narrow(self, first: int, last: int) -> SourceSlice:
        """Positions ``[first, last)`` of this slice."""
        return replace(self, first=self.first + first, last=self.first + last)

    def columns(self) -> list[np.ndarray]:
        """Read the slice (in the worker)."""
        columns = self.source.columns(self.start, self.stop)
        if self.valid_bits is not None:
            selected = np.unpackbits(self.valid_bits, count=self.stop - self.start).view(bool)
            columns = [column[selected] for column in columns]
        return [column[self.first : self.last] for column in columns]


#: a chunk's inputs in the parent: the gathered columns, or a slice the workers read themselves
ChunkInputs = Union[Sequence[np.ndarray], SourceSlice]


def chunk_inputs(source: ArraySource, start: int, stop: int) -> tuple[np.ndarray, ChunkInputs]:
    """The flat indices and inputs of the unmasked elements of ``[start, stop)``, in the cheaper way.

    Files (and small arrays) are read by each worker itself; in-memory arrays are gathered here
    and travel through the worker's shared buffer.
    """
    if source.readable_elsewhere():
        return source.flat_index(start, stop), SourceSlice.of(source, start, stop)
    return source.gather(start, stop)


def inputs_length(inputs: ChunkInputs) -> int:
    """How many elements ``inputs`` hold."""
    if isinstance(inputs, SourceSlice):
        return inputs.length
    return len(inputs[0]) if len(inputs) else 0


def request(inputs: ChunkInputs, first: int, last: int, buffer: InputBuffer) -> SharedColumns | SourceSlice:
    """What a worker is sent for positions ``[first, last)`` of ``inputs`` (using its slot's ``buffer``)."""
    if isinstance(inputs, SourceSlice):
        return inputs.narrow(first, last)
    return buffer.store([column[first:last] for column in inputs])
