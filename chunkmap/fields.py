"""Several outputs per call (``run(..., outputs=)``) as one array: a structured array, one field per output.

numpy only. The kernel turns the sequences ``func`` returned into a 1-D structured array
(:func:`to_fields`), so that everything between the kernel and the result (joining parts,
transport, the result's slots, checkpoint records) handles one array, as for a single output;
:func:`columns` takes it apart again. Each field's dtype follows the rule of a single output
(``numpy.asarray`` of that output's values: int gives int64, float float64, a mix as numpy
promotes, anything else an object field).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .loop import _values_array

__all__ = ["Miscount", "to_fields", "columns", "describe"]

#: the dtype ``numpy.asarray`` gives a list of Python scalars all of one of these types
_SCALAR_DTYPES = {bool: np.dtype(np.bool_), int: np.dtype(np.int64), float: np.dtype(np.float64),
                  complex: np.dtype(np.complex128)}


class Miscount(Exception):
    """The value ``func`` returned for computed element ``number`` is not a sequence of one value per output."""

    def __init__(self, number: int, value: Any) -> None:
        super().__init__(number, value)
        self.number = number
        self.value = value


def to_fields(values: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The computed ``values`` (one sequence of ``len(names)`` values each) as a structured array.

    Raises
    ------
    Miscount
        For the first value that is not a sequence of ``len(names)`` values.

    Examples
    --------
    >>> records = to_fields(np.array([(1, 2.5), (3, 4.0)], dtype=object), ("n", "x"))
    >>> records.dtype, records["n"].tolist()
    (dtype([('n', '<i8'), ('x', '<f8')]), [1, 3])
    """
    count = len(names)
    rows = values.tolist() if values.dtype == object or not len(values) else None
    if rows is None:  # numbers: func returned one value, not a sequence
        raise Miscount(0, values[0].item())
    if not (set(map(type, rows)) <= {tuple, list} and set(map(len, rows)) <= {count}):  # the fast check failed
        for number, row in enumerate(rows):
            if not (type(row) in (tuple, list) and len(row) == count) and not _other_sequence_of(row, count):
                raise Miscount(number, row)
    per_output = [_output_array(list(map(operator.itemgetter(field), rows))) for field in range(count)]
    records = np.empty(len(rows), [(name, column.dtype) for name, column in zip(names, per_output)])
    for name, column in zip(names, per_output):
        records[name] = column
    return records


def _output_array(values: list[Any]) -> np.ndarray:
    """``numpy.asarray(values)`` as a single output's values are made (:func:`chunkmap.loop._values_array`).

    Values all of one Python scalar type take a shortcut (half the time) to the same array.
    """
    types = set(map(type, values))
    dtype = _SCALAR_DTYPES.get(types.pop()) if len(types) == 1 else None
    if dtype is not None:
        try:
            return np.fromiter(values, dtype, len(values))
        except OverflowError:  # an int beyond int64
            pass
    return _values_array(values)


def _other_sequence_of(row: Any, count: int) -> bool:
    """Whether ``row``, not a tuple or list of ``count`` values, is another sequence of them (a 1-D array...)."""
    if isinstance(row, np.ndarray):
        return row.ndim == 1 and len(row) == count
    return isinstance(row, Sequence) and not isinstance(row, (str, bytes)) and len(row) == count


def columns(values: np.ndarray, names: tuple[str, ...] | None) -> list[np.ndarray]:
    """One array per output: ``[values]`` without names, else each field (a float64 array where ``values`` has none)."""
    if names is None:
        return [values]
    if values.dtype.names is None:  # no element computed: no fields were made
        return [values.astype(np.float64) for _ in names]
    return [values[name] for name in names]


def describe(value: Any, names: tuple[str, ...]) -> str:
    """What ``func`` returned and what ``outputs=`` expected, for :class:`~chunkmap.errors.OutputCountError`.

    Examples
    --------
    >>> describe((1.0, 2.0, 3.0), ("price", "vega"))
    "a tuple of 3 values (1.0, 2.0, 3.0) where outputs=('price', 'vega') expects a sequence of 2"
    """
    try:
        what = f"a {type(value).__name__} of {len(value)} values {value!r:.200}"
    except TypeError:  # no len(): not a sequence
        what = f"a {type(value).__name__} {value!r:.200}"
    return f"{what} where outputs={names!r} expects a sequence of {len(names)}"
