"""Collect chunk outputs, in any order, into the arrays of a :class:`~chunkmap.result.Result`.

numpy only. The arrays are allocated once, one slot per unmasked element (a chunk's slots are
known before it runs), and each chunk's coordinates and values are written into its slots as it
completes: nothing grows during a run, and no list of per-chunk results is kept to concatenate
at the end. Slots of failed elements are squeezed out when the result is built.
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from .kernel import COMPUTED, KINDS, ChunkOutput
from .plan import Chunk
from .result import Failures, Result

__all__ = ["Outputs", "compact"]

#: elements moved per step of an in-place compaction (bounds its temporary copy)
COMPACT_BLOCK = 1 << 20


def compact(array: np.ndarray, keep: np.ndarray, block: int = COMPACT_BLOCK) -> np.ndarray:
    """``array[keep]`` computed in place, block by block: a view on ``array``'s memory.

    Unlike ``array[keep]``, it never holds a second copy of a large array, only one block.

    Examples
    --------
    >>> compact(np.arange(6), np.array([1, 0, 1, 1, 0, 1], bool)).tolist()
    [0, 2, 3, 5]
    """
    if keep.all():
        return array
    written = 0
    for start in range(0, len(array), block):
        kept = array[start : start + block][keep[start : start + block]]
        array[written : written + len(kept)] = kept  # written <= start: nothing unread is overwritten
        written += len(kept)
    return array[:written]


class Outputs:
    """The growing result of a run.

    Examples
    --------
    >>> from chunkmap.kernel import Evaluation
    >>> outputs = Outputs((2, 3), [Chunk(0, 0, 3, 2), Chunk(1, 3, 6, 2)])
    >>> outputs.add(ChunkOutput(1, np.array([4, 5]), Evaluation(np.array([0, 1], np.uint8),
    ...             np.array([7.5]), [(1, "ValueError", "bad")])))
    >>> outputs.add(ChunkOutput(0, np.array([0, 2]), Evaluation(np.zeros(2, np.uint8), np.array([1, 2]))))
    >>> result = outputs.result()
    >>> [axis.tolist() for axis in result.coords], result.values.tolist(), len(result.failures)
    ([[0, 0, 1], [0, 2, 1]], [1.0, 2.0, 7.5], 1)
    """

    def __init__(self, shape: tuple[int, ...], chunks: Sequence[Chunk]) -> None:
        self.shape = shape
        sizes = np.array([chunk.size for chunk in chunks], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        slots = int(self.offsets[-1])
        self.coords = tuple(np.empty(slots, np.intp) for _ in shape)
        self.values: np.ndarray | None = None
        self.computed = np.zeros(slots, bool)
        self.completed = np.zeros(len(chunks), bool)
        self._failures: dict[int, tuple[np.ndarray, list[str], list[str], list[str]]] = {}
        self._lock = threading.Lock()

    def add(self, output: ChunkOutput) -> None:
        """Write one chunk's output into its slots (thread-safe)."""
        evaluation = output.evaluation
        computed = np.flatnonzero(evaluation.status == COMPUTED)
        slots = self.offsets[output.index] + computed
        coords = np.unravel_index(output.flat_index[computed], self.shape) if self.shape else ()
        with self._lock:
            self._ensure_dtype(evaluation.values.dtype, len(computed))
            for axis, values in zip(self.coords, coords):
                axis[slots] = values
            if len(computed):
                self.values[slots] = evaluation.values
            self.computed[slots] = True
            if evaluation.failures:
                positions = np.array([position for position, _, _ in evaluation.failures], np.int64)
                self._failures[output.index] = (
                    output.flat_index[positions],
                    [KINDS[status] for status in evaluation.status[positions].tolist()],
                    [name for _, name, _ in evaluation.failures],
                    [message for _, _, message in evaluation.failures],
                )
            self.completed[output.index] = True

    def _ensure_dtype(self, dtype: np.dtype, count: int) -> None:
        if count == 0:
            return
        if self.values is None:
            self.values = np.empty(len(self.computed), dtype)
        elif np.result_type(self.values.dtype, dtype) != self.values.dtype:
            self.values = self.values.astype(np.result_type(self.values.dtype, dtype))

    def result(self) -> Result:
        """The :class:`Result` of everything added (failures in C order, failed slots removed)."""
        values = self.values if self.values is not None else np.empty(len(self.computed), np.float64)
        coords, values = tuple(compact(axis, self.computed) for axis in self.coords), compact(values, self.computed)
        order = sorted(self._failures)
        columns = [self._failures[index] for index in order]
        failures = Failures(
            self.shape,
            np.concatenate([np.empty(0, np.int64), *(column[0] for column in columns)]),
            [name for column in columns for name in column[2]],
            [message for column in columns for message in column[3]],
            [kind for column in columns for kind in column[1]],
        )
        return Result(self.shape, coords, values, failures)
