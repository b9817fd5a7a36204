"""Evaluate the user's function over one chunk: the hot loop.

numpy only; no scheduler. A chunk's inputs become plain Python scalars (``tolist()``, as the
seed's ``np.asscalar`` did: SWIG wrappers reject numpy scalars), ``func`` is called once per
unmasked element, and the outcome is a compact :class:`ChunkResult`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .errors import ElementError
from .source import Source

__all__ = ["ChunkResult", "evaluate", "values_array"]


@dataclass
class ChunkResult:
    """What one chunk produced.

    Attributes
    ----------
    index : int
        The chunk's position in the run.
    flat_index : ndarray of int64
        Flat indices of the elements computed, ascending.
    values : ndarray
        ``func``'s results for those elements.
    failure_index : ndarray of int64
        Flat indices of the elements whose call raised an exception listed in ``skip``.
    failure_types, failure_messages : list of str
        The exception class name and message of each failure.
    """

    index: int
    flat_index: np.ndarray
    values: np.ndarray
    failure_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    failure_types: list[str] = field(default_factory=list)
    failure_messages: list[str] = field(default_factory=list)


def evaluate(
    index: int,
    start: int,
    stop: int,
    source: Source,
    func: Callable[..., Any],
    skip: tuple[type[BaseException], ...] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> ChunkResult:
    """Call ``func`` on every unmasked element of flat indices ``[start, stop)`` of ``source``.

    Raises
    ------
    ElementError
        When ``func`` raises an exception that ``skip`` does not list; it names the element's
        coordinates and inputs and chains the original exception.

    Examples
    --------
    >>> from chunkmap.source import ArraySource
    >>> source = ArraySource((np.array([1.0, 2.0, 0.0]), np.array([4.0, 4.0, 4.0])), (3,))
    >>> result = evaluate(0, 0, 3, source, lambda a, b: b / a, skip=ZeroDivisionError)
    >>> result.flat_index.tolist(), result.values.tolist(), result.failure_types
    ([0, 1], [4.0, 2.0], ['ZeroDivisionError'])
    """
    flat_index, columns = source.gather(start, stop)
    call = functools.partial(func, **kwargs) if kwargs else func
    values: list[Any] = []
    append = values.append
    failed: list[tuple[int, str, str]] = []
    position = 0
    for position, args in enumerate(zip(*(column.tolist() for column in columns))):
        try:
            append(call(*args))
        except skip as exc:
            failed.append((position, type(exc).__name__, str(exc)))
        except Exception as exc:
            coords = tuple(int(c) for c in np.unravel_index(flat_index[position], source.shape))
            raise ElementError(coords, args, type(exc).__name__, str(exc)) from exc
    if not failed:
        return ChunkResult(index, flat_index, values_array(values))
    positions = np.array([pos for pos, _, _ in failed], dtype=np.int64)
    computed = np.ones(len(flat_index), dtype=bool)
    computed[positions] = False
    return ChunkResult(
        index,
        flat_index[computed],
        values_array(values),
        flat_index[positions],
        [name for _, name, _ in failed],
        [message for _, _, message in failed],
    )


def values_array(values: list[Any]) -> np.ndarray:
    """The 1-D array of ``func``'s results, in the dtype numpy infers from them.

    Python ``bool``, ``int``, ``float`` and ``complex`` give ``bool``, ``int64``, ``float64``
    and ``complex128``; a mix promotes as numpy does (int and float give float64). Anything
    else (str, None, tuples, arrays, ints beyond 64 bits) gives an ``object`` array holding the
    returned objects as they are.

    Examples
    --------
    >>> values_array([1, 2]).dtype, values_array([1, 2.5]).dtype, values_array(["a", 1]).dtype
    (dtype('int64'), dtype('float64'), dtype('O'))
    """
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError):
        array = None
    if array is None or array.ndim != 1 or array.dtype.kind not in "biufc":
        array = np.fromiter(values, dtype=object, count=len(values))
    return array
