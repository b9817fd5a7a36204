"""What :func:`chunkmap.run` must return, computed by the plain serial loop of the seed.

The seed's ``build_indexes`` loops over every element with ``np.ndenumerate``, skips the masked
ones, calls the function and appends to lists. :func:`serial_reference` is that loop for any
number of inputs and dimensions, written without any of chunkmap's machinery (no plan, chunks,
kernel, compiled loop or scheduler): numpy's broadcasting, then one Python ``for`` over
``np.ndindex``. :func:`assert_matches_reference` compares a :class:`~chunkmap.Result` with it.
numpy and the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Reference", "assert_matches_reference", "serial_reference", "values_array"]

#: the Python types whose results make a numeric ``values`` array, in promotion order
_PROMOTION = ((bool, np.bool_), (int, np.int64), (float, np.float64), (complex, np.complex128))
_INT64 = np.iinfo(np.int64)


class Reference(NamedTuple):
    """What the serial loop computed, in the terms of :class:`~chunkmap.Result`.

    Attributes
    ----------
    shape : tuple of int
        The broadcast shape of the inputs.
    coords : tuple of ndarray of int64
        One array per axis: the coordinates of every computed element, in C order.
    values : ndarray
        What ``func`` returned for each of them (dtype: :func:`values_array`).
    failures : list of (coords, type name, message)
        Every element whose call raised an exception listed in ``skip``, in C order.
    masked : int
        How many elements were masked (never passed to ``func``).
    """

    shape: tuple[int, ...]
    coords: tuple[np.ndarray, ...]
    values: np.ndarray
    failures: list[tuple[tuple[int, ...], str, str]]
    masked: int


def values_array(values: Sequence[Any]) -> np.ndarray:
    """The ``values`` array :func:`chunkmap.run` documents for these results.

    bool gives bool, int int64, float float64, complex complex128 (subclasses count as their
    base: ``numpy.float64`` is a float); a mix promotes as numpy does (bool < int64 < float64 <
    complex128); anything else (str, None, tuples, other objects, ints outside int64) gives an
    object array of the results themselves. No results give an empty float64 array.

    Examples
    --------
    >>> values_array([1, 2.5]).dtype, values_array([True, 2]).tolist(), values_array([]).dtype
    (dtype('float64'), [1, 2], dtype('float64'))
    >>> values_array([(1, 2), None])
    array([(1, 2), None], dtype=object)
    """
    if not values:
        return np.empty(0, np.float64)
    rank = 0
    for value in values:
        found = _rank(value)
        if found is None:
            return np.fromiter(values, dtype=object, count=len(values))
        rank = max(rank, found)
    return np.array(values, dtype=_PROMOTION[rank][1])


def _rank(value: Any) -> int | None:
    """The place of ``value``'s type in the promotion order, None for an object result."""
    for rank, (kind, _) in enumerate(_PROMOTION):
        if isinstance(value, kind):
            if kind is int and not _INT64.min <= value <= _INT64.max:
                return None
            return rank
    return None


def serial_reference(
    func: Callable[..., Any],
    *arrays: Any,
    mask: Any = None,
    skip: type[BaseException] | tuple[type[BaseException], ...] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Reference:
    """Compute what ``chunkmap.run(func, *arrays, mask=mask, skip=skip, kwargs=kwargs)`` returns.

    Parameters
    ----------
    func : callable
        Called as ``func(*scalars, **kwargs)`` with plain Python scalars, element by element in
        C order, in this process.
    *arrays : array_like
        Broadcast to one shape; numpy masked arrays contribute their masks.
    mask : None, array_like of bool, or callable, optional
        ``True`` means "do not compute". A callable receives the broadcast inputs flattened in C
        order (one 1-D array per input) and returns a boolean array of that length.
    skip : exception class or tuple of them, optional
        Exceptions recorded as failures. Any other exception propagates (``run`` raises
        :class:`~chunkmap.errors.ElementError` there).
    kwargs : mapping, optional
        Keyword arguments of every call.

    Examples
    --------
    >>> def inverse(x):
    ...     return 1 / x
    >>> reference = serial_reference(inverse, [[1, 0], [4, -2]], mask=[[False, False], [False, True]],
    ...                              skip=ZeroDivisionError)
    >>> [axis.tolist() for axis in reference.coords], reference.values
    ([[0, 1], [0, 0]], array([1.  , 0.25]))
    >>> reference.failures, reference.masked
    ([((0, 1), 'ZeroDivisionError', 'division by zero')], 1)
    """
    inputs = [np.ma.asarray(array) for array in arrays]
    data = np.broadcast_arrays(*(np.ma.getdata(array) for array in inputs))
    shape = data[0].shape
    masked = np.zeros(shape, dtype=bool)
    for array in inputs:
        masked |= np.broadcast_to(np.ma.getmaskarray(array), shape)
    if callable(mask):
        masked |= np.asarray(mask(*(column.reshape(-1) for column in data)), dtype=bool).reshape(shape)
    elif mask is not None:
        masked |= np.broadcast_to(np.asarray(mask, dtype=bool), shape)
    coords: list[tuple[int, ...]] = []
    values: list[Any] = []
    failures: list[tuple[tuple[int, ...], str, str]] = []
    for index in np.ndindex(shape):
        if masked[index]:
            continue
        scalars = [column[index].item() for column in data]
        try:
            value = func(*scalars, **(kwargs or {}))
        except skip as exc:
            failures.append((index, type(exc).__name__, str(exc)))
        else:
            coords.append(index)
            values.append(value)
    axes = tuple(np.array([index[axis] for index in coords], dtype=np.int64) for axis in range(len(shape)))
    return Reference(shape, axes, values_array(values), failures, int(masked.sum()))


def assert_matches_reference(result: Any, func: Callable[..., Any], *arrays: Any, mask: Any = None,
                             skip: type[BaseException] | tuple[type[BaseException], ...] = (),
                             kwargs: Mapping[str, Any] | None = None) -> None:
    """Assert that ``result`` is what :func:`serial_reference` computes, element for element.

    Checks the shape, the coordinates, the values and their dtype, the failures (coordinates,
    exception type name, message; all of kind ``"exception"``) and the counts in
    ``result.stats``. The arguments after ``result`` are those of :func:`chunkmap.run`.
    """
    expected = serial_reference(func, *arrays, mask=mask, skip=skip, kwargs=kwargs)
    assert result.shape == expected.shape, f"shape {result.shape}, expected {expected.shape}"
    assert len(result.coords) == len(expected.coords)
    for got, want in zip(result.coords, expected.coords):
        np.testing.assert_array_equal(got, want)
    assert result.values.dtype == expected.values.dtype, (
        f"values of dtype {result.values.dtype}, expected {expected.values.dtype}")
    if expected.values.dtype == object:
        assert result.values.tolist() == expected.values.tolist()
    else:
        np.testing.assert_array_equal(result.values, expected.values)
    assert [(f.coords, f.type, f.message) for f in result.failures] == expected.failures
    assert all(f.kind == "exception" for f in result.failures)
    stats = result.stats
    assert (stats.elements, stats.masked, stats.computed, stats.failed) == (
        int(np.prod(expected.shape)), expected.masked, len(expected.values), len(expected.failures))
