"""Normalise the inputs of a run, resolve its mask, and lay the work out in chunks.

numpy only. :func:`make_plan` builds the inputs and the mask; the layout (how many unmasked
elements each chunk holds) is applied once, by :meth:`Plan.with_layout`, when it is known: an
explicit ``chunks=``, a checkpoint's stored layout, or :func:`chunkmap.sizing.pilot`.

Every element of the broadcast input shape has a *flat index*: its position in C order. A run's
work is the set of unmasked flat indices; a :class:`Chunk` is a contiguous range of flat indices
holding a fixed number of them, so masked elements cost nothing and never count as work.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import arrays as lazy
from .bitmask import BitMask
from .blocks import BlockPlan, BlockSource
from .errors import DtypeError, InputError, MaskError, ShapeError
from .labelled import Labels
from .npy import NpyReader
from .source import ArraySource, Sized

__all__ = ["Chunk", "Plan", "make_plan"]

#: dtype kinds whose elements become Python bool, int, float or complex with ``tolist()``.
SUPPORTED_KINDS = "biufc"
#: elements evaluated per call of a mask callable.
BLOCK = 1 << 20
#: elements per step of the chunk boundary search (its temporaries are 8 bytes per element).
SEARCH_BLOCK = 1 << 16


@dataclass(frozen=True)
class Chunk:
    """A contiguous range ``[start, stop)`` of flat indices holding ``size`` unmasked elements."""

    index: int
    start: int
    stop: int
    size: int


@dataclass(frozen=True)
class Plan(Sized):
    """Everything a run needs to know before any work is scheduled.

    Attributes
    ----------
    source : ArraySource
        The broadcast inputs and the valid (unmasked) elements.
    unmasked : int
        How many elements are to be computed.
    chunks : list of Chunk
        The work, in C order; empty until laid out (:meth:`with_layout`), and when every element
        is masked or the shape is empty.
    head, chunk_size, tail
        The layout, see :func:`layout_ends` (``chunk_size`` 0: not laid out yet).
    """

    source: ArraySource
    unmasked: int
    chunks: list[Chunk] = field(default_factory=list)
    head: tuple[int, ...] = ()
    chunk_size: int = 0
    tail: int = 0
    labels: Labels | None = None

    def with_layout(self, head: Sequence[int], size: int, tail: int = 0) -> Plan:
        """The same work in chunks ending at the ``head`` counts, then of ``size`` elements each
        (shrinking at the end for ``tail`` workers, see :func:`layout_ends`)."""
        ends = layout_ends(self.unmasked, head, size, tail)
        chunks = chunks_from_ends(self.source.valid, self.source.size, ends, self.unmasked)
        return Plan(self.source, self.unmasked, chunks, tuple(head), size, tail, self.labels)

    def head_chunks(self, head: Sequence[int]) -> list[Chunk]:
        """The first chunks of a layout starting with ``head`` (for pilot rounds)."""
        return chunks_from_ends(self.source.valid, self.source.size, [min(e, self.unmasked) for e in head],
                                self.unmasked)



def make_plan(arrays: Sequence[Any], mask: Any = None, boxes: bool = False) -> Plan | BlockPlan:
    """Validate and normalise the inputs of :func:`chunkmap.run` and resolve the mask; no layout yet.

    Parameters
    ----------
    arrays : sequence of array_like
        The inputs; numpy masked arrays contribute their masks; xarray objects are broadcast
        by dimension name, a ``Dataset`` stands for its data variables (:mod:`chunkmap.arrays`).
    mask : None, array_like of bool, or callable
        ``True`` marks an element not to compute. A callable receives 1-D slices of the
        broadcast, C-order flattened inputs and returns one bool per element.

    boxes : bool
        Plan boxes (a :class:`BlockPlan`) whatever the inputs (``output=`` writes boxes).

    Returns
    -------
    Plan or BlockPlan
        A :class:`BlockPlan` when an input or the mask is lazy (dask, zarr, xarray data not in
        memory), or with ``boxes``: the mask is then evaluated box by box where the inputs are read.

    Examples
    --------
    >>> plan = make_plan([np.arange(6).reshape(2, 3), 10], mask=np.array([True, False, False]))
    >>> plan.shape, plan.elements, plan.unmasked
    ((2, 3), 6, 4)
    >>> [(c.start, c.stop, c.size) for c in plan.with_layout((), 3).chunks]
    [(0, 5, 3), (5, 6, 1)]
    """
    arrays = lazy.expand_datasets(arrays)
    dims = lazy.output_dims(arrays)
    labels = lazy.labels_of(arrays, dims) if dims is not None else None
    if boxes or any(map(lazy.is_lazy, arrays)) or lazy.is_lazy(mask):
        return make_block_plan(arrays, mask, dims, labels)
    if dims is not None:
        arrays = [_named_view(array, dims, labels) for array in arrays]
        mask = _named_view(mask, dims, labels)
    data, shape, input_masks = normalise_inputs(arrays)
    valid = resolve_valid(ArraySource(data, shape), input_masks, mask)
    source = ArraySource(data, shape, valid)
    return Plan(source, source.size if valid is None else valid.count(), labels=labels)


def _named_view(array: Any, dims: tuple[str, ...], labels: Labels) -> Any:
    """An in-memory xarray object as a numpy view with its axes in the order of ``dims`` (others unchanged)."""
    if not lazy.is_xarray(array):
        return array
    reader = lazy.readers([array], _named_shape([array], dims), dims)[0]
    data = np.asarray(reader.data.values)
    order = [axis for axis in reader.axes if axis is not None]
    return data.transpose(order)[tuple(slice(None) if axis is not None else np.newaxis for axis in reader.axes)]


def _named_shape(arrays: Sequence[Any], dims: tuple[str, ...]) -> tuple[int, ...]:
    sizes: dict[str, int] = {}
    for array in arrays:
        if lazy.is_xarray(array):
            sizes.update(zip(array.dims, array.shape))
    return tuple(sizes.get(dim, 1) for dim in dims)


def make_block_plan(arrays: Sequence[Any], mask: Any, dims: tuple[str, ...] | None,
                    labels: Labels | None = None) -> BlockPlan:
    """The plan of a run over lazy inputs: shapes and dtypes checked, boxes following the storage chunks.

    Nothing is read: the client holds one reader per input and the boxes' ends.
    """
    input_masks: list[Any] = []
    plain = []
    for array in arrays:
        if isinstance(array, (str, os.PathLike)) or isinstance(array, NpyReader):
            array = np.load(array if not isinstance(array, NpyReader) else array.path, mmap_mode="r")
        elif isinstance(array, np.ma.MaskedArray):
            if array.mask is not np.ma.nomask:
                input_masks.append(np.ma.getmaskarray(array))
            array = array.data
        plain.append(array)
    if dims is not None:
        shape = _named_shape(plain, dims)
        if lazy.is_xarray(mask):
            unknown = set(mask.dims) - set(dims)
            if unknown:
                raise MaskError(f"mask has dims {mask.dims}, and the inputs have {dims}; expected a mask "
                                f"whose dims are among the inputs' (it is broadcast to them by name)")
    else:
        shape = _broadcast_shape([np.shape(array) if not hasattr(array, "shape") else tuple(array.shape)
                                  for array in plain])
    readers = lazy.readers(plain, shape, dims)
    for number, reader in enumerate(readers, start=1):
        _check_dtype(reader.dtype, number)
    masks = lazy.readers(input_masks, shape, None)
    mask_callable = mask if callable(mask) and not hasattr(mask, "shape") else None
    if mask is not None and mask_callable is None:
        if not lazy.is_xarray(mask):
            _check_broadcasts(tuple(np.shape(mask) if not hasattr(mask, "shape") else mask.shape), shape, "mask")
        (reader,) = lazy.readers([mask], shape, dims if lazy.is_xarray(mask) else None)
        if reader.dtype != bool:
            raise MaskError(f"mask has dtype {reader.dtype}; expected a boolean array (True = do not compute), "
                            f"e.g. mask=a <= -1e10")
        masks.append(reader)
    return BlockPlan(BlockSource(readers, shape, [], masks, mask_callable), _preferred_ends(readers + masks, shape),
                     labels).with_chunks("auto")


def _preferred_ends(readers: Sequence[lazy.BoxReader], shape: tuple[int, ...]) -> list[list[int] | None]:
    """Per axis, every reader's storage chunk ends (their union), or None."""
    ends: list[set[int] | None] = [None] * len(shape)
    for reader in readers:
        for axis, found in enumerate(reader.boundaries()):
            if found is not None:
                ends[axis] = (ends[axis] or set()) | set(found)
    return [sorted(found) if found is not None else None for found in ends]


def normalise_inputs(
    arrays: Sequence[Any],
) -> tuple[tuple[np.ndarray | NpyReader, ...], tuple[int, ...], list[np.ndarray]]:
    """Turn the inputs into plain ndarrays or .npy readers, their broadcast shape and their masks.

    A path (``str`` or ``os.PathLike``) or an :class:`~chunkmap.npy.NpyReader` is an ``.npy``
    file read in place, chunk by chunk: it must have the full broadcast shape.
    """
    if len(arrays) == 0:
        raise InputError("run() needs at least one input array after func; got none")
    data, masks = [], []
    for number, array in enumerate(arrays, start=1):
        if isinstance(array, (str, os.PathLike)):
            array = NpyReader(array)  # MissingFileError or NpyFormatError say what is wrong
        if isinstance(array, NpyReader):
            _check_dtype(array.dtype, number)
            data.append(array)
            continue
        if isinstance(array, np.ma.MaskedArray):
            if array.mask is not np.ma.nomask:
                masks.append(np.ma.getmaskarray(array))
            array = array.data
        try:
            array = np.asarray(array)
        except ValueError as exc:
            raise InputError(
                f"input {number} cannot be made into a numpy array ({exc}); expected an array or "
                f"a (nested) list of numbers with a regular shape"
            ) from None
        _check_dtype(array.dtype, number)
        data.append(array)
    shape = _broadcast_shape([array.shape for array in data])
    for number, input_mask in enumerate(masks, start=1):
        _check_broadcasts(input_mask.shape, shape, f"the mask of masked input {number}")
    for number, array in enumerate(data, start=1):
        if isinstance(array, NpyReader) and array.shape != shape:
            raise ShapeError(
                f"input {number} is the .npy file {array.path} of shape {array.shape}; a file input "
                f"must have the inputs' full shape {shape} (it is read in place, not broadcast)"
            )
    return tuple(data), shape, masks


def _broadcast_shape(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ShapeError(
            f"input shapes {', '.join(map(str, shapes))} do not broadcast to one shape; expected equal shapes, "
            f"or shapes numpy can broadcast together such as (3, 4) and (4,)"
        ) from None


def _check_dtype(dtype: np.dtype, number: int) -> None:
    if dtype.kind not in SUPPORTED_KINDS:
        raise DtypeError(
            f"input {number} has dtype {dtype} ({dtype.kind!r} kind); expected a boolean, integer, "
            f"unsigned, floating or complex dtype, whose elements are passed to func as Python "
            f"bool, int, float or complex"
        )


def resolve_valid(
    source: ArraySource, input_masks: list[np.ndarray], mask: Any
) -> BitMask | None:
    """The elements to compute, one bit each in C order, or None when every element is."""
    masks = list(input_masks)
    if mask is not None and not callable(mask):
        masks.append(_mask_array(mask, source.shape))
    if not masks and mask is None:
        return None
    masked = np.zeros(source.shape, dtype=bool)
    for each in masks:
        np.logical_or(masked, each, out=masked)
    masked = masked.reshape(-1)
    if callable(mask):
        for start in range(0, source.size, BLOCK):
            stop = min(start + BLOCK, source.size)
            masked[start:stop] |= call_mask(mask, source.columns(start, stop))
    return BitMask.pack(np.logical_not(masked, out=masked))


def _mask_array(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise MaskError(
            f"mask has dtype {mask.dtype}; expected a boolean array (True = do not compute), "
            f"e.g. mask=a <= -1e10"
        )
    _check_broadcasts(mask.shape, shape, "mask")
    return mask


def _check_broadcasts(shape: tuple[int, ...], target: tuple[int, ...], what: str) -> None:
    try:
        fits = np.broadcast_shapes(shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise MaskError(
            f"{what} has shape {shape}; expected the inputs' shape {target} or a shape that "
            f"broadcasts to it"
        )


def call_mask(mask: Callable[..., Any], columns: list[np.ndarray]) -> np.ndarray:
    length = len(columns[0])
    result = np.asarray(mask(*columns))
    if result.dtype != bool or result.shape not in ((length,), ()):
        raise MaskError(
            f"the mask callable returned an array of dtype {result.dtype} and shape "
            f"{result.shape}; expected a boolean array of shape ({length},), one value per "
            f"element of the 1-D input slices it receives"
        )
    return result


#: the last chunks of a guided tail are this many times smaller than the others
TAIL_SHRINK = 8


def layout_ends(unmasked: int, head: Sequence[int], size: int, tail: int = 0) -> list[int]:
    """Cumulative unmasked counts at which chunks end: the ``head`` ends, then one every ``size``.

    With ``tail`` workers, the last chunks shrink so that the workers finish together (guided
    scheduling): once at most ``2 * tail`` chunks of ``size`` are left, each chunk takes
    ``1 / (2 * tail)`` of what is left, down to ``size / TAIL_SHRINK``. The rule depends only on
    its arguments, so a resumed run cuts the same chunks.

    Examples
    --------
    >>> layout_ends(10, [], 4), layout_ends(10, [1, 2, 6], 3), layout_ends(0, [], 5)
    ([4, 8, 10], [1, 2, 6, 9, 10], [])
    >>> layout_ends(100, [], 16, tail=2)
    [16, 32, 48, 61, 71, 79, 85, 89, 92, 94, 96, 98, 100]
    """
    ends = [end for end in head if end < unmasked]
    done = ends[-1] if ends else 0
    if len(ends) < len(head):  # the head reaches the end (a pilot that did everything)
        pass
    elif tail <= 0:
        ends.extend(range(done + size, unmasked, size))
    else:
        smallest = max(1, size // TAIL_SHRINK)
        while unmasked - done > smallest:
            left = unmasked - done
            done += size if left > 2 * tail * size else max(smallest, math.ceil(left / (2 * tail)))
            if done < unmasked:
                ends.append(done)
    if unmasked:
        ends.append(unmasked)
    return ends


def chunks_from_ends(valid: BitMask | None, elements: int, ends: Sequence[int], unmasked: int) -> list[Chunk]:
    """The chunks ending after the given cumulative counts of unmasked elements.

    The chunks tile ``[0, elements)`` up to the last end: masked elements before the first
    unmasked one belong to the first chunk, and those after the last unmasked one to the chunk
    holding it.

    Examples
    --------
    >>> valid = BitMask.pack(np.array([0, 1, 1, 0, 1, 0], bool))
    >>> [(c.start, c.stop, c.size) for c in chunks_from_ends(valid, 6, [2, 3], 3)]
    [(0, 3, 2), (3, 6, 1)]
    >>> [(c.start, c.stop, c.size) for c in chunks_from_ends(valid, 6, [1], 3)]
    [(0, 2, 1)]
    """
    if not ends:
        return []
    positions = positions_after(valid, ends)
    if ends[-1] == unmasked:
        positions[-1] = elements
    starts = [0, *positions[:-1]]
    sizes = np.diff([0, *ends]).tolist()
    return [Chunk(index, start, stop, size) for index, (start, stop, size)
            in enumerate(zip(starts, positions, sizes))]


def split(valid: BitMask | None, elements: int, size: int) -> list[Chunk]:
    """Split ``[0, elements)`` into chunks of ``size`` unmasked elements (the last may hold fewer).

    Examples
    --------
    >>> [(c.start, c.stop, c.size) for c in split(BitMask.pack(np.array([0, 1, 1, 0, 1, 0], bool)), 6, 2)]
    [(0, 3, 2), (3, 6, 1)]
    """
    unmasked = elements if valid is None else valid.count()
    return chunks_from_ends(valid, elements, layout_ends(unmasked, [], size), unmasked)


def positions_after(valid: BitMask | None, counts: Sequence[int]) -> list[int]:
    """For each count ``c`` (ascending, >= 1), the flat index just after the ``c``-th valid element."""
    if valid is None:
        return [int(count) for count in counts]
    targets = np.asarray(counts, dtype=np.int64)
    found: list[int] = []
    seen = 0
    for start in range(0, len(valid), SEARCH_BLOCK):
        if len(found) == len(targets):
            break
        counts_here = np.cumsum(valid[start : start + SEARCH_BLOCK], dtype=np.int32)
        inside = targets[len(found) :]
        inside = inside[inside <= seen + int(counts_here[-1])] - seen
        found.extend((start + np.searchsorted(counts_here, inside) + 1).tolist())
        seen += int(counts_here[-1])
    return found
