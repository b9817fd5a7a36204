"""The work of a run over lazy inputs, in boxes: read where the inputs live, masked where they are read.

numpy only. When an input or the mask is lazy (a dask or zarr array, xarray data not in
memory; :mod:`chunkmap.arrays`), no element-level mask is made in the client: the broadcast
shape is cut into a grid of boxes that follows the inputs' storage chunks
(:func:`block_ends`), each chunk of work is one box, and its task reads the box of every input
and of the mask, evaluates a mask callable on it, and computes the unmasked elements. The
client holds O(boxes) for the plan, never O(elements).

A box's chunk is a range of *work positions*: boxes in C order, each box's elements in C order
within it, so that a chunk is still ``[start, stop)`` with ``size`` the box's element count
(masked ones included: how many are unmasked is known once the task has read the mask).
:class:`BlockOutputs` puts the chunks' outputs back in C order of the input.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from .arrays import Box, BoxReader
from .failures import FailureRecords
from .kernel import COMPUTED, ChunkOutput, Evaluation
from .source import Sized

__all__ = ["BlockPlan", "BlockSource", "BlockOutputs", "block_ends", "TASK_ELEMENTS"]

#: with ``chunks="auto"``, boxes hold at least this many elements (storage chunks are merged up to it)
TASK_ELEMENTS = 1 << 16
#: with ``chunks="auto"`` and no storage chunks to follow, boxes of about this many elements
UNCHUNKED_ELEMENTS = 1 << 20


def block_ends(shape: tuple[int, ...], preferred: Sequence[Sequence[int] | None], target: int,
               split: bool = True) -> list[list[int]]:
    """The ends of the boxes along each axis: the storage chunks' boundaries, merged or split to about ``target`` elements.

    ``preferred`` holds, per axis, the ends of the inputs' storage chunks (all inputs'
    boundaries are kept: every box lies inside one storage chunk of each input), or None.
    Boxes smaller than ``target`` are merged along the last axis first (whole rows read
    contiguously), then the next; with ``split``, boxes larger than twice ``target`` are split
    along the first axis, then the next.

    Examples
    --------
    >>> block_ends((4, 6), [[2, 4], [3, 6]], 6)
    [[2, 4], [3, 6]]
    >>> block_ends((4, 6), [[2, 4], [3, 6]], 12)
    [[2, 4], [6]]
    >>> block_ends((8,), [None], 2)
    [[2, 4, 6, 8]]
    """
    if 0 in shape:
        return [[] for _ in shape]  # no element, no box
    axes = [sorted({*(preferred[axis] or ()), length}) for axis, length in enumerate(shape)]
    typical = [_longest(ends) for ends in axes]
    for axis in reversed(range(len(shape))):
        if math.prod(typical) >= target:
            break
        group = min(len(axes[axis]), math.ceil(target / max(1, math.prod(typical))))
        axes[axis] = axes[axis][group - 1 :: group] + ([axes[axis][-1]] if len(axes[axis]) % group else [])
        typical[axis] = _longest(axes[axis])
    for axis in range(len(shape)):
        if not split or math.prod(typical) <= 2 * target:
            break
        pieces = min(typical[axis], math.ceil(math.prod(typical) / target))
        axes[axis] = _split(axes[axis], pieces)
        typical[axis] = _longest(axes[axis])
    return axes


def regular_ends(ends: Sequence[int]) -> list[int]:
    """Ends of equal intervals (the last one shorter) as long as the longest of ``ends``.

    Examples
    --------
    >>> regular_ends([3, 5, 9]), regular_ends([4, 8, 10])
    ([4, 8, 9], [4, 8, 10])
    """
    step = _longest(ends)
    return [*range(step, ends[-1], step), ends[-1]] if ends else []


def _longest(ends: Sequence[int]) -> int:
    return int(np.diff([0, *ends]).max(initial=0))


def _split(ends: Sequence[int], pieces: int) -> list[int]:
    """Each interval of ``ends`` cut into ``pieces`` nearly equal parts."""
    split: list[int] = []
    for start, stop in zip([0, *ends[:-1]], ends):
        cuts = np.linspace(start, stop, min(pieces, stop - start) + 1).round().astype(int)[1:]
        split.extend(cuts.tolist())
    return split


@dataclass(frozen=True)
class BlockSource:
    """The inputs of a run read box by box, the mask applied where they are read.

    Parameters
    ----------
    readers : list of BoxReader
        The inputs, each broadcast to ``shape``.
    shape : tuple of int
    ends : list of list of int
        The boxes' ends along each axis (:func:`block_ends`).
    masks : list of BoxReader
        Boolean arrays, True where not to compute (the ``mask`` and masked inputs' masks).
    mask_callable : callable, optional
        Called on a box's flattened inputs; True where not to compute.
    """

    readers: list[BoxReader]
    shape: tuple[int, ...]
    ends: list[list[int]]
    masks: list[BoxReader] = field(default_factory=list)
    mask_callable: Callable[..., Any] | None = None
    writer: Any = None  #: a :class:`~chunkmap.stored.BoxWriter` with ``output=``

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def grid(self) -> tuple[int, ...]:
        """How many boxes along each axis."""
        return tuple(len(ends) for ends in self.ends)

    def box(self, number: int) -> Box:
        """The box of the ``number``-th block, counted in C order of the grid."""
        where = np.unravel_index(number, self.grid) if self.shape else ()
        return tuple((ends[i - 1] if i else 0, ends[i]) for ends, i in zip(self.ends, map(int, where)))

    def offsets(self) -> np.ndarray:
        """The first work position of every box, and the total (boxes in C order)."""
        lengths = [np.diff([0, *ends]) for ends in self.ends]
        sizes = np.ones(1, np.int64)
        for axis_lengths in lengths:
            sizes = np.multiply.outer(sizes, axis_lengths).reshape(-1)
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def gather(self, start: int, stop: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Flat indices and inputs of the unmasked elements of the box that work positions ``[start, stop)`` make."""
        box = self._box_at(start, stop)
        columns = [reader.read(box).reshape(-1) for reader in self.readers]
        flat = box_flat_index(box, self.shape)
        masked = None
        for reader in self.masks:
            part = reader.read(box).reshape(-1)
            masked = part.copy() if masked is None else np.logical_or(masked, part, out=masked)
        if self.mask_callable is not None:
            from .plan import call_mask

            part = call_mask(self.mask_callable, columns)
            masked = np.broadcast_to(part, flat.shape).copy() if masked is None else masked | part
        if masked is None:
            return flat, columns
        keep = ~masked
        return flat[keep], [column[keep] for column in columns]

    @functools.cached_property
    def _offsets(self) -> np.ndarray:
        return self.offsets()

    def _box_at(self, start: int, stop: int) -> Box:
        offsets = self._offsets
        number = int(np.searchsorted(offsets, start))
        if number >= len(offsets) - 1 or offsets[number] != start or offsets[number + 1] != stop:
            raise ValueError(f"work positions [{start}, {stop}) are not one box of this source")
        return self.box(number)

    def finish(self, chunk: Any, output: Any) -> Any:
        """What a task hands back for ``chunk``'s output: the output, or with ``output=`` its counts once written."""
        if self.writer is None or output is None:
            return output
        return self.writer.write(output, self._box_at(chunk.start, chunk.stop))

    def readable_elsewhere(self) -> bool:
        """False: a box is read by the task that evaluates it, and its unmasked values sent on."""
        return False

    def chunks(self) -> list[Any]:
        """One chunk per box, in C order of the grid (its index is the box's number; no box is empty)."""
        from .plan import Chunk

        offsets = self._offsets.tolist()
        return [Chunk(number, start, stop, stop - start)
                for number, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:]))]


def box_flat_index(box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """The C-order flat indices of ``box``'s elements, in C order of the box.

    Examples
    --------
    >>> box_flat_index(((1, 3), (2, 4)), (3, 5)).tolist()
    [7, 8, 12, 13]
    """
    flat = np.zeros(1, np.int64)
    stride = math.prod(shape)
    for (start, stop), length in zip(box, shape):
        stride //= length
        flat = np.add.outer(flat, np.arange(start, stop, dtype=np.int64) * stride).reshape(-1)
    return flat


@dataclass(frozen=True)
class BlockPlan(Sized):
    """A run over lazy inputs: the boxes to compute, known without reading the inputs or the mask.

    ``preferred`` holds the inputs' storage chunk ends per axis (see :func:`block_ends`);
    ``labels`` the dims and coordinates of xarray inputs.
    """

    source: BlockSource
    preferred: list[list[int] | None]
    labels: Any = None

    def with_chunks(self, chunks: int | str) -> BlockPlan:
        """The boxes for ``chunks=``: ``"auto"`` follows the storage chunks (merged up to
        :data:`TASK_ELEMENTS`; without storage chunks, boxes of :data:`UNCHUNKED_ELEMENTS`), an int
        makes boxes of about that many elements (storage chunks merged or split)."""
        if chunks != "auto":
            ends = block_ends(self.shape, self.preferred, int(chunks))
        elif any(found is not None for found in self.preferred):
            ends = block_ends(self.shape, self.preferred, TASK_ELEMENTS, split=False)
        else:
            ends = block_ends(self.shape, self.preferred, UNCHUNKED_ELEMENTS)
        return replace(self, source=replace(self.source, ends=ends))

    def regular(self) -> BlockPlan:
        """The same plan with equal boxes along each axis (the last ones shorter): a zarr chunk grid."""
        return replace(self, source=replace(self.source, ends=[regular_ends(ends) for ends in self.source.ends]))

    @functools.cached_property
    def chunks(self) -> list[Any]:
        return self.source.chunks()


class BlockOutputs:
    """The outputs of a block run, kept per chunk as they arrive and put in C order once, by :meth:`ordered`.

    Same interface as :class:`~chunkmap.outputs.Outputs` for :class:`~chunkmap.outputs.Delivery`
    (``add``, ``completed``); the final sort costs one ``argsort`` of the computed elements' flat
    indices (none when the boxes already follow C order, e.g. whole rows).
    """

    def __init__(self, shape: tuple[int, ...], chunks: Sequence[Any], names: tuple[str, ...] | None = None) -> None:
        self.shape = shape
        self.names = names
        self.completed = np.zeros(len(chunks), bool)
        self._outputs: dict[int, ChunkOutput] = {}
        self._lock = threading.Lock()

    def add(self, output: ChunkOutput) -> None:
        with self._lock:
            self._outputs[output.index] = output
            self.completed[output.index] = True

    def result(self) -> Any:
        """The :class:`~chunkmap.result.Result` of everything added, as :class:`~chunkmap.outputs.Outputs` makes it."""
        from .outputs import Outputs
        from .plan import Chunk

        output = self.ordered()
        outputs = Outputs(self.shape, [Chunk(0, 0, math.prod(self.shape), len(output.flat_index))], self.names)
        outputs.add(output)
        del output
        return outputs.result()

    def ordered(self) -> ChunkOutput:
        """Every output as one chunk's, its elements in C order."""
        outputs = [self._outputs.pop(index) for index in sorted(self._outputs)]
        lengths = [len(output.flat_index) for output in outputs]
        flat = np.concatenate([np.empty(0, np.int64), *(output.flat_index for output in outputs)])
        status = np.concatenate([np.empty(0, np.uint8), *(output.evaluation.status for output in outputs)])
        with_values = [output.evaluation.values for output in outputs if len(output.evaluation.values)]
        values = np.concatenate(with_values) if with_values else np.empty(0, np.float64)
        offsets = np.cumsum([0, *lengths[:-1]]).tolist()
        failures = FailureRecords.concat([output.evaluation.failures for output in outputs], offsets)
        del outputs
        if len(flat) and not bool(np.all(flat[1:] > flat[:-1])):
            order = np.argsort(flat, kind="stable")
            computed = status == COMPUTED
            values = values[np.argsort(flat[computed], kind="stable")]
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            moved = rank[failures.positions]
            failures = replace(failures.take(np.argsort(moved, kind="stable")), positions=np.sort(moved))
            flat, status = flat[order], status[order]
        return ChunkOutput(0, flat, Evaluation(status, values, failures))
