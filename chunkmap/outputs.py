"""Collect chunk outputs, in any order, into the arrays of a :class:`~chunkmap.result.Result`.

:class:`Delivery` is where a run sends each chunk's output: into the :class:`Outputs`, to the
checkpoint and to the progress count.

numpy only. The arrays are allocated once, one slot per unmasked element (a chunk's slots are
known before it runs), and each chunk's flat indices and values are written into its slots as it
completes: nothing grows during a run, and no list of per-chunk results is kept to concatenate
at the end. Each chunk's computed elements go to the front of its slots (flat indices and values);
when the result is built, the gaps failures left are closed in place, one move per chunk and array,
and the coordinates are unravelled into the flat indices' memory, block by block: the peak is the
result itself (its coordinates, values and packed failures). (Unravelling each chunk into slots as
it arrived was faster at the end of a run, by ~25 ms for 9M elements, but held every coordinate
array through the run: 64M elements peaked at 1.16x inputs + outputs instead of 1.12x.)

With several outputs (``run(..., outputs=)``) each chunk's values come as one structured array
(:mod:`chunkmap.fields`) and each output gets its own contiguous slots: the result's arrays are
contiguous without a copy at the end (views of one structured array would be strided).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .failures import FailureRecords
from .fields import columns
from .kernel import COMPUTED, KINDS, ChunkOutput
from .plan import Chunk
from .result import Failures, Result
from .system import release_free_memory

if TYPE_CHECKING:
    from .checkpoint import RunCheckpoint
    from .progress import Progress

__all__ = ["Outputs", "Delivery", "close_gaps", "unravel_in_place", "unravel_into"]

#: flat indices unravelled per step at the end of a run: 32k (256 kB) stay in cache, which halves
#: the time of a whole-array unravel (9M elements: ~50 vs ~110 ms)
UNRAVEL_BLOCK = 1 << 15
#: elements of a chunk after which the heap it freed is returned to the system (~0.4 ms): glibc
#: keeps megabyte-sized temporaries in the delivering thread's arena, where they add to the peak
#: of the slots filled meanwhile (64M elements: ~20 MB)
TRIM_AFTER = 1 << 18


class Outputs:
    """The growing result of a run.

    Each chunk's computed elements fill the front of its slots: their flat indices and values
    (one per output of ``names``); the gaps its failures leave are closed at the end, and the
    flat indices become the coordinates.

    Examples
    --------
    >>> from chunkmap.failures import FailureRecords
    >>> from chunkmap.kernel import Evaluation
    >>> outputs = Outputs((2, 3), [Chunk(0, 0, 3, 2), Chunk(1, 3, 6, 2)])
    >>> outputs.add(ChunkOutput(1, np.array([4, 5]), Evaluation(np.array([0, 1], np.uint8),
    ...             np.array([7.5]), FailureRecords.from_tuples([(1, "ValueError", "bad")]))))
    >>> outputs.add(ChunkOutput(0, np.array([0, 2]), Evaluation(np.zeros(2, np.uint8), np.array([1, 2]))))
    >>> result = outputs.result()
    >>> [axis.tolist() for axis in result.coords], result.values.tolist(), list(result.failures)
    ([[0, 0, 1], [0, 2, 1]], [1.0, 2.0, 7.5], [Failure(coords=(1, 2), kind='exception', type='ValueError', message='bad')])
    """

    def __init__(self, shape: tuple[int, ...], chunks: Sequence[Chunk],
                 names: tuple[str, ...] | None = None) -> None:
        self.shape = shape
        self.names = names
        sizes = np.array([chunk.size for chunk in chunks], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        slots = int(self.offsets[-1])
        self.flat_index = np.empty(slots, np.int64)  #: each chunk's computed flat indices, at the front of its slots
        self.values: list[np.ndarray | None] = [None] * (1 if names is None else len(names))  #: one per output
        self.completed = np.zeros(len(chunks), bool)
        self.kept = np.zeros(len(chunks), np.int64)  #: computed elements of each chunk, at the front of its slots
        self._failures: dict[int, tuple[FailureRecords, np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, output: ChunkOutput) -> None:
        """Write one chunk's computed elements at the front of its slots (thread-safe)."""
        evaluation = output.evaluation
        first = int(self.offsets[output.index])
        failures = evaluation.failures
        flat = output.flat_index if not len(failures) else output.flat_index[evaluation.status == COMPUTED]
        kept = slice(first, first + len(flat))
        self.flat_index[kept] = flat
        with self._lock:
            if len(evaluation.values):
                for number, values in enumerate(columns(evaluation.values, self.names)):
                    self._ensure_dtype(number, values.dtype)
                    self.values[number][kept] = values
            if len(failures):
                self._failures[output.index] = (
                    dataclasses.replace(failures, positions=output.flat_index[failures.positions]),
                    evaluation.status[failures.positions],
                )
            self.kept[output.index] = len(flat)
            self.completed[output.index] = True
        if len(output.flat_index) >= TRIM_AFTER:
            release_free_memory()  # the chunk's temporaries, freed into this thread's arena: not the run's peak

    def _ensure_dtype(self, number: int, dtype: np.dtype) -> None:
        """Output ``number``'s slots made, or promoted, to hold values of ``dtype``."""
        slots = self.values[number]
        if slots is None:
            self.values[number] = np.empty(len(self.flat_index), dtype)
        elif np.result_type(slots.dtype, dtype) != slots.dtype:
            self.values[number] = slots.astype(np.result_type(slots.dtype, dtype))

    def result(self) -> Result:
        """The :class:`Result` of everything added (failures in C order, failed slots removed).

        The slots' memory becomes the result's: the gaps of failed elements are closed in place
        and the arrays shrunk to what is left.
        """
        flat_index, self.flat_index = self.flat_index, np.empty(0, np.int64)
        values = [slots if slots is not None else np.empty(len(flat_index), np.float64) for slots in self.values]
        self.values = [None] * len(values)
        if self._failures:
            kept = close_gaps([flat_index, *values], self.offsets[:-1], self.kept)
            flat_index, values = _shrunk(flat_index, kept), [_shrunk(slots, kept) for slots in values]
        parts = [self._failures.pop(index) for index in sorted(self._failures)]
        records = FailureRecords.concat([records for records, _ in parts])
        statuses = np.concatenate([np.empty(0, np.uint8), *(statuses for _, statuses in parts)])
        del parts
        codes = np.searchsorted(FAILING, statuses).astype(np.uint8)
        failures = Failures.from_records(self.shape, records, codes, [KINDS[status] for status in FAILING])
        release_free_memory()  # before the coordinates take new memory
        outputs = values[0] if self.names is None else dict(zip(self.names, values))
        return Result(self.shape, unravel_in_place(flat_index, self.shape), outputs, failures)


class Delivery:
    """Where each chunk output of a run goes: its :class:`Outputs`, its checkpoint, its progress count.

    Called from any thread, as chunks complete.
    """

    def __init__(self, chunks: Sequence[Chunk], outputs: Outputs, checkpoint: RunCheckpoint | None = None,
                 progress: Progress | None = None) -> None:
        self.chunks = chunks
        self.outputs = outputs
        self.checkpoint = checkpoint
        self.progress = progress

    def __call__(self, output: ChunkOutput) -> None:
        """A chunk computed by this run: kept, saved, its failures counted (its elements were, as they ran)."""
        self.outputs.add(output)
        if self.checkpoint is not None:
            self.checkpoint.save(output, self.chunks[output.index])
        if self.progress is not None:
            self.progress.fail(output.failed)
            self.progress.masked(self.chunks[output.index].size - output.unmasked)  # a lazy box's mask

    def resume(self, outputs: Sequence[ChunkOutput]) -> int:
        """Chunks read back from the checkpoint: kept and counted as done; their unmasked element count."""
        for output in outputs:
            self.outputs.add(output)
        if self.progress is not None:  # a lazy run's bar counts the masked elements of a box too
            self.progress.resume(sum(self.chunks[output.index].size for output in outputs),
                                 sum(output.failed for output in outputs))
        return sum(output.unmasked for output in outputs)

    def done(self) -> int:
        """Elements of the chunks delivered so far (computed, failed or resumed)."""
        return sum(chunk.size for chunk in self.chunks if self.outputs.completed[chunk.index])

    def remaining(self) -> list[Chunk]:
        """The chunks no output has been delivered for yet."""
        return [chunk for chunk in self.chunks if not self.outputs.completed[chunk.index]]


#: the failing statuses, ascending (a failure's kind code is its status's index here)
FAILING = np.array(sorted(KINDS), np.uint8)


def close_gaps(arrays: Sequence[np.ndarray], starts: np.ndarray, counts: np.ndarray) -> int:
    """Move the runs ``[starts[k], starts[k] + counts[k])`` of each of ``arrays`` down to follow one another, in place.

    ``starts`` ascending, runs not overlapping; returns the length now filled.

    >>> values = np.array([1.0, 2.0, 0.0, 3.0, 0.0, 0.0, 4.0])
    >>> close_gaps([values], np.array([0, 3, 6]), np.array([2, 1, 1])), values[:4].tolist()
    (4, [1.0, 2.0, 3.0, 4.0])
    """
    written = 0
    for start, count in zip(starts.tolist(), counts.tolist()):
        if count and start != written:
            for array in arrays:
                array[written : written + count] = array[start : start + count]  # numpy moves overlapping runs safely
        written += count
    return written


def unravel_in_place(flat_index: np.ndarray, shape: tuple[int, ...], block: int = UNRAVEL_BLOCK) -> tuple[np.ndarray, ...]:
    """The coordinates of C-order flat indices, the first axis in ``flat_index``'s own memory.

    Like ``np.unravel_index`` (which returns new arrays for every axis), with one array fewer,
    block by block so that each block's divisions stay in cache.

    >>> [axis.tolist() for axis in unravel_in_place(np.array([0, 5, 7]), (2, 4))]
    [[0, 1, 1], [0, 1, 3]]
    """
    if not shape:
        return ()
    trailing = [np.empty(len(flat_index), np.intp) for _ in shape[1:]]
    for start in range(0, len(flat_index), block):
        part = flat_index[start : start + block]
        unravel_into(part.copy(), shape, [part, *(axis[start : start + block] for axis in trailing)])
    return (flat_index if flat_index.dtype == np.intp else flat_index.view(np.intp), *trailing)


def unravel_into(flat_index: np.ndarray, shape: tuple[int, ...], out: Sequence[np.ndarray]) -> None:
    """Write the coordinates of C-order flat indices into ``out``, one array per axis, as ``np.unravel_index``.

    A 0-d ``shape`` writes zeros into ``out[0]``. Each remainder is taken as ``flat - q * size``:
    one division per axis, not two.

    >>> out = [np.empty(3, np.intp), np.empty(3, np.intp)]
    >>> unravel_into(np.array([0, 5, 7]), (2, 4), out)
    >>> [axis.tolist() for axis in out]
    [[0, 1, 1], [0, 1, 3]]
    """
    if len(shape) <= 1:
        out[0][:] = flat_index if shape else 0
        return
    remaining = flat_index
    for number in range(len(shape) - 1, 0, -1):
        quotient = np.floor_divide(remaining, shape[number], out=out[0] if number == 1 else None)
        np.multiply(quotient, shape[number], out=out[number])
        np.subtract(remaining, out[number], out=out[number])
        remaining = quotient


def _shrunk(array: np.ndarray, length: int) -> np.ndarray:
    """``array[:length]``, giving the rest of its memory back when it owns it."""
    if array.base is None and array.flags.owndata and length < len(array):
        array.resize(length, refcheck=False)  # realloc: the allocator returns the tail
        return array
    return array[:length]
