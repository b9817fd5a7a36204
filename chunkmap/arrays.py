"""Inputs that are read where they live: dask arrays, zarr arrays and xarray objects, box by box.

numpy only at import time: dask, zarr and xarray are recognised by their types' modules and used
through their own array API (``array[box]``), never imported here. Each input of a run becomes
a :class:`BoxReader`: its shape and dtype, the boundaries of its storage chunks along each axis
(so that tasks read whole storage chunks), and ``read(box)``, which returns the box of the
*broadcast* input as a numpy array, reading only the input's part of it.

Broadcasting follows numpy for arrays (axes aligned from the right, length-1 axes stretched)
and dimension names for xarray objects (the output's dims are the union of the inputs' dims in
order of first appearance, as ``xarray.apply_ufunc`` has them): every array input must then be
xarray (or a scalar). A ``Dataset`` stands for its data variables, in order
(``run(f, ds[["a", "b"]])`` picks them by name).

An xarray object whose data is in memory (numpy) is not lazy: :func:`eager_view` gives it to the
in-memory path as a numpy view with its axes in the output's order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .errors import InputError, ShapeError
from .labelled import Labels

__all__ = ["BoxReader", "Box", "is_lazy", "is_xarray", "expand_datasets", "output_dims", "readers",
           "labels_of"]

#: a box of the broadcast shape: one ``(start, stop)`` per axis
Box = tuple[tuple[int, int], ...]


def _module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def is_dask(obj: Any) -> bool:
    return _module(obj) == "dask" and hasattr(obj, "__dask_graph__") and hasattr(obj, "chunks")


def is_zarr(obj: Any) -> bool:
    return _module(obj) == "zarr" and hasattr(obj, "chunks") and hasattr(obj, "shape")


def is_xarray(obj: Any) -> bool:
    return _module(obj) == "xarray" and type(obj).__name__ in ("DataArray", "Dataset", "Variable")


def is_lazy(obj: Any) -> bool:
    """Whether ``obj`` is read box by box: a dask or zarr array, or xarray data not in memory."""
    if is_xarray(obj) and type(obj).__name__ != "Dataset":
        variable = getattr(obj, "variable", obj)
        return variable.chunks is not None or not getattr(variable, "_in_memory", True)
    return is_dask(obj) or is_zarr(obj)


def expand_datasets(arrays: Sequence[Any]) -> list[Any]:
    """The inputs with each xarray ``Dataset`` replaced by its data variables, in order."""
    expanded: list[Any] = []
    for array in arrays:
        if is_xarray(array) and type(array).__name__ == "Dataset":
            if not array.data_vars:
                raise InputError("an input is an xarray Dataset without data variables; expected a Dataset "
                                 "whose data variables are the inputs, e.g. ds[['a', 'b']]")
            expanded.extend(array[name] for name in array.data_vars)
        else:
            expanded.append(array)
    return expanded


def output_dims(arrays: Sequence[Any]) -> tuple[str, ...] | None:
    """The dims of the output when inputs are xarray objects (their union in order of first appearance), else None.

    Raises
    ------
    ShapeError
        xarray inputs mixed with non-scalar plain arrays, or a dim with two different lengths.
    """
    labelled = [array for array in arrays if is_xarray(array)]
    if not labelled:
        return None
    sizes: dict[str, int] = {}
    for number, array in enumerate(arrays, start=1):
        if is_xarray(array):
            for dim, size in zip(array.dims, array.shape):
                if sizes.setdefault(dim, size) != size:
                    raise ShapeError(f"input {number} has dim {dim!r} of length {size}, another input has "
                                     f"{sizes[dim]}; expected one length per dimension name (align the inputs "
                                     f"first, e.g. xarray.align(a, b, join='inner'))")
        elif np.ndim(array) != 0:
            raise ShapeError(f"input {number} is a plain array of shape {np.shape(array)} beside xarray inputs; "
                             f"expected xarray objects (broadcast by dimension name) or scalars: wrap it, e.g. "
                             f"xarray.DataArray(a, dims=('y', 'x'))")
    return tuple(sizes)


class BoxReader:
    """One input of a run, read by boxes of the broadcast shape.

    Parameters
    ----------
    data : array-like
        Anything sliced by a tuple of slices into something ``numpy.asarray`` reads: a numpy
        array, a dask array (the box is computed with the synchronous scheduler, in the task
        that asks), a zarr array, an xarray ``Variable``.
    shape : tuple of int
        The broadcast shape of the run.
    axes : tuple of (int or None)
        For each axis of ``shape``, the axis of ``data`` it reads, or None where ``data``
        is broadcast (it has no such axis, or one of length 1).

    Examples
    --------
    >>> reader = BoxReader(np.arange(3), (2, 3), (None, 0))
    >>> reader.read(((0, 2), (1, 3))).tolist()
    [[1, 2], [1, 2]]
    """

    def __init__(self, data: Any, shape: tuple[int, ...], axes: tuple[int | None, ...]) -> None:
        self.data = data
        self.shape = tuple(shape)
        self.axes = tuple(axes)
        self.dtype = np.dtype(data.dtype)

    def read(self, box: Box) -> np.ndarray:
        """The box of the broadcast input (a read-only view when ``data`` broadcasts)."""
        index: list[slice] = [slice(0, 1)] * np.ndim(self.data)
        for (start, stop), axis in zip(box, self.axes):
            if axis is not None:
                index[axis] = slice(start, stop)
        part = self.data[tuple(index)] if index else self.data
        if is_xarray(part):
            part = part.data  # a dask array, or this box of the backend's array, read now
        if is_dask(part):
            part = part.compute(scheduler="sync")
        part = np.asarray(part)
        present = [axis for axis in self.axes if axis is not None]
        order = present + [axis for axis in range(part.ndim) if axis not in present]
        part = part.transpose(order).reshape([part.shape[axis] for axis in present])
        expanded = [slice(None) if axis is not None else np.newaxis for axis in self.axes]
        return np.broadcast_to(part[tuple(expanded)], tuple(stop - start for start, stop in box))

    def boundaries(self) -> list[list[int] | None]:
        """For each axis of the broadcast shape, the storage chunks' ends along it (None: no preference)."""
        chunks = _chunk_lengths(self.data)
        ends: list[list[int] | None] = []
        for axis in self.axes:
            if axis is None or chunks is None:
                ends.append(None)
            else:
                ends.append(np.cumsum(chunks[axis]).tolist())
        return ends

    def __reduce__(self):
        return (BoxReader, (self.data, self.shape, self.axes))


def _chunk_lengths(data: Any) -> list[list[int]] | None:
    """The lengths of ``data``'s storage chunks along each of its axes, or None for a numpy array."""
    if is_xarray(data):
        variable = getattr(data, "variable", data)
        if variable.chunks is not None:
            return [list(lengths) for lengths in variable.chunks]
        preferred = variable.encoding.get("preferred_chunks") or {}
        sizes = [preferred.get(dim) for dim in variable.dims]
        if all(sizes) and sizes:
            return [_regular(length, size) for length, size in zip(variable.shape, sizes)]
        return None
    if is_dask(data):
        return [list(lengths) for lengths in data.chunks]
    if is_zarr(data):
        return [_regular(length, size) for length, size in zip(data.shape, data.chunks)]
    return None


def _regular(length: int, size: int) -> list[int]:
    """Lengths of a regular chunking of ``length`` by ``size`` (the last one shorter)."""
    size = max(1, int(size))
    return [min(size, length - start) for start in range(0, length, size)] or [0]


def readers(arrays: Sequence[Any], shape: tuple[int, ...], dims: tuple[str, ...] | None) -> list[BoxReader]:
    """A :class:`BoxReader` for each input, broadcast to ``shape`` (by name when ``dims`` is given)."""
    found = []
    for array in arrays:
        if dims is not None and is_xarray(array):
            variable = getattr(array, "variable", array)
            for dim, size in zip(dims, shape):
                if variable.sizes.get(dim, size) not in (size, 1):
                    raise ShapeError(f"an array with dims {variable.dims} has {dim!r} of length {variable.sizes[dim]}, "
                                     f"and the inputs' is {size}; expected one length per dimension name")
            axes = tuple(variable.dims.index(dim) if dim in variable.dims and variable.sizes[dim] == size
                         else None for dim, size in zip(dims, shape))
            found.append(BoxReader(variable, shape, axes))
            continue
        data = array if (is_dask(array) or is_zarr(array)) else np.asarray(array)
        offset = len(shape) - np.ndim(data)
        axes = tuple(axis - offset if axis >= offset and data.shape[axis - offset] == size and size != 1
                     else None for axis, size in enumerate(shape))
        found.append(BoxReader(data, shape, axes))
    return found


def labels_of(arrays: Sequence[Any], dims: tuple[str, ...]) -> Labels:
    """The :class:`~chunkmap.labelled.Labels` of a run over xarray ``arrays`` whose output has ``dims``.

    The coordinates of all inputs whose dims are among ``dims`` (the first input's win), read
    into numpy unless they hold more than 2**24 elements.
    """
    coords: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for array in arrays:
        for name, coord in getattr(array, "coords", {}).items():
            if name not in coords and set(coord.dims) <= set(dims) and math.prod(coord.shape) < 1 << 24:
                coords[str(name)] = (tuple(coord.dims), np.asarray(coord.values))
    return Labels(dims, coords)  # not an input's name and attrs: the result is func's, not theirs
