"""The outcome of a run: coordinates and values of what was computed, failures and statistics.

numpy only. A :class:`Result` unpacks like the seed's return value, ``xs, ys, values = result``
for 2-D inputs (one coordinate array per axis, then the values; with ``outputs=``, one array
per output: ``xs, ys, price, vega = result``); everything is in C order of the broadcast input
shape whatever the scheduler.
"""

from __future__ import annotations

import functools
import itertools
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, overload

import numpy as np

from . import labelled
from .display import failures_html, failures_summary, failures_text, result_html, result_text
from .failures import FailureRecords

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = ["Result", "Failures", "Failure", "Stats", "unravel"]


def unravel(flat_index: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Coordinate arrays (one per axis) of flat C-order indices; none for a 0-d shape."""
    return np.unravel_index(flat_index, shape) if shape else ()


@dataclass(frozen=True)
class Stats:
    """Counts and timing of a run.

    Attributes
    ----------
    elements : int
        Elements of the broadcast input shape.
    masked : int
        Elements masked out, never passed to ``func``.
    computed : int
        Elements whose call returned a value.
    failed : int
        Elements whose call failed: an exception listed in ``skip``, a crash or a timeout.
    wall_time : float
        Seconds from the call of ``run`` to its return.
    rate : float
        Calls of ``func`` made by this run (computed + failed - resumed) per second.
    resumed : int
        Elements (computed or failed) taken from a checkpoint instead of evaluated again.
    rejected : int
        Checkpoint records found but not used, because they did not prove that they belong
        to this run and chunk (damaged, another layout, misfiled); their chunks were computed.
    scheduler : str
        Where the run executed: ``"sync"``, ``"threads"``, ``"processes"`` or ``"distributed"``.
    workers : int
        How many workers (processes, threads, or a cluster's threads) it had.
    """

    elements: int
    masked: int
    computed: int
    failed: int
    wall_time: float
    rate: float
    resumed: int = 0
    rejected: int = 0
    scheduler: str = ""
    workers: int = 0

    def summary(self) -> str:
        """One line for logs: counts, time and rate."""
        return (
            f"{self.elements:,} elements: {self.masked:,} masked, {self.computed:,} computed, "
            f"{self.failed:,} failed in {self.wall_time:.3f} s ({self.rate:,.0f} calls/s)"
            + (f"; {self.resumed:,} resumed from a checkpoint" if self.resumed else "")
            + (f"; {self.rejected:,} checkpoint records not used" if self.rejected else "")
        )


def _strings(items: Sequence[str]) -> np.ndarray:
    """An object array referring to the strings (a fixed-width unicode array would copy each one
    at the width of the longest)."""
    return np.fromiter(items, dtype=object, count=len(items))


@dataclass(frozen=True)
class Failure:
    """One element whose call failed: where, how (``kind``), which exception, its message and
    the inputs ``func`` was called with.

    ``inputs`` is the tuple of Python scalars of the call, ``()`` when unknown (records made
    without them, e.g. read from a result file). It is not compared (a NaN input never equals
    itself; the coordinates already name the element), and ``repr`` leaves it out when empty.
    """

    coords: tuple[int, ...]
    kind: str
    type: str
    message: str
    inputs: tuple = field(default=(), compare=False)

    def __repr__(self) -> str:
        inputs = f", inputs={self.inputs!r}" if self.inputs else ""
        return (f"Failure(coords={self.coords!r}, kind={self.kind!r}, type={self.type!r}, "
                f"message={self.message!r}{inputs})")


class Failures:
    """The table of elements whose call failed, in C order.

    Indexing with an int gives a :class:`Failure` record, with a slice, an int array or a
    boolean mask the :class:`Failures` of those records; iterating yields the records. The
    columns are also available whole. The strings are kept packed
    (:class:`~chunkmap.failures.FailureRecords`): a record or a slice decompresses only the
    blocks holding it, and the string columns are built on first access.

    Attributes
    ----------
    flat_index : ndarray of int64
        Flat (C order) index of each failed element.
    kinds : ndarray of str (object dtype)
        ``"exception"`` (an exception listed in ``skip``), ``"crash"`` (the call killed its
        worker process) or ``"timeout"`` (the call exceeded the run's ``timeout``).
    types : ndarray of str (object dtype)
        The exception's class name.
    messages : ndarray of str (object dtype)
        ``str()`` of the exception.
    inputs : tuple of ndarray
        The values ``func`` was called with: one 1-D array per input (of that input's dtype),
        aligned with the failures; ``()`` without failures or when they were made without
        their inputs. Each failure costs the inputs' itemsizes more (8 bytes per float64 or
        int64 input), kept as these columns, not as Python objects.

    Examples
    --------
    >>> failures = Failures((3, 4), [1, 6, 11], ["KeyError", "ValueError", "ValueError"], ["'k'", "a", "b"],
    ...                     ["exception", "crash", "exception"],
    ...                     inputs=[np.array([0.5, np.nan, 2.0]), np.array([3, 0, -1], np.int32)])
    >>> failures[1:]
    <chunkmap.Failures: 2 failed elements (exception 1, crash 1; ValueError 2)
      (1, 2)  crash      (nan, 0)  -> ValueError: a
      (2, 3)  exception  (2.0, -1) -> ValueError: b>
    >>> [failure.coords for failure in failures[::2]], failures.counts_by_kind()
    ([(0, 1), (2, 3)], {'exception': 2, 'crash': 1})
    >>> failures[0].inputs, failures.inputs[1].dtype
    ((0.5, 3), dtype('int32'))
    >>> failures.summary()
    '3 failed elements (exception 2, crash 1; KeyError 1, ValueError 2)'
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        flat_index: Sequence[int] | np.ndarray,
        types: Sequence[str],
        messages: Sequence[str],
        kinds: Sequence[str] | None = None,
        inputs: Sequence[np.ndarray] = (),
    ) -> None:
        records = FailureRecords.from_columns(np.asarray(flat_index, np.int64), types, messages,
                                              [np.asarray(column) for column in inputs])
        kinds = ["exception"] * len(records) if kinds is None else [str(kind) for kind in kinds]
        table: dict[str, int] = {}
        codes = np.fromiter((table.setdefault(kind, len(table)) for kind in kinds), np.uint8, len(kinds))
        self._init(shape, records, codes, tuple(table))

    @classmethod
    def from_records(
        cls, shape: tuple[int, ...], records: FailureRecords, kind_codes: np.ndarray, kind_names: Sequence[str]
    ) -> Failures:
        """Failures from packed records whose positions are flat indices, and a code per kind."""
        failures = cls.__new__(cls)
        failures._init(shape, records, kind_codes, tuple(kind_names))
        return failures

    def _init(self, shape: tuple[int, ...], records: FailureRecords, kind_codes: np.ndarray,
              kind_names: tuple[str, ...]) -> None:
        if len(kind_codes) != len(records):
            raise ValueError(f"{len(records)} failures but {len(kind_codes)} kinds")
        self.shape = tuple(shape)
        self.records = records
        self._kind_codes = kind_codes
        self._kind_names = kind_names

    @property
    def flat_index(self) -> np.ndarray:
        return self.records.positions

    @property
    def inputs(self) -> tuple[np.ndarray, ...]:
        return self.records.inputs

    @functools.cached_property
    def kinds(self) -> np.ndarray:
        return _strings([self._kind_names[code] for code in self._kind_codes.tolist()])

    @functools.cached_property
    def types(self) -> np.ndarray:
        return _strings(self.records.types())

    @functools.cached_property
    def messages(self) -> np.ndarray:
        return _strings(self.records.messages())

    @functools.cached_property
    def coords(self) -> tuple[np.ndarray, ...]:
        """One int array per axis: the coordinates of each failed element."""
        return unravel(self.flat_index, self.shape)

    def __len__(self) -> int:
        return len(self.records)

    def counts_by_kind(self) -> dict[str, int]:
        """How many failures of each kind (``"exception"``, ``"crash"``, ``"timeout"``), none left at 0."""
        counts = np.bincount(self._kind_codes, minlength=len(self._kind_names)).tolist()
        return {name: count for name, count in zip(self._kind_names, counts) if count}

    def counts_by_type(self) -> dict[str, int]:
        """How many failures of each exception type, by name."""
        counts = np.bincount(self.records.type_codes, minlength=len(self.records.type_names)).tolist()
        return {name: count for name, count in sorted(zip(self.records.type_names, counts)) if count}

    @overload
    def __getitem__(self, key: int) -> Failure: ...

    @overload
    def __getitem__(self, key: slice | np.ndarray) -> Failures: ...

    def __getitem__(self, key: int | slice | np.ndarray) -> Failure | Failures:
        """One :class:`Failure` for an int (negative counts from the end); for a slice, an int
        array or a boolean mask, the :class:`Failures` of those records."""
        if isinstance(key, (numbers.Integral, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"failure {key} out of range: there are {len(self)} failures")
            return next(iter(self._take(np.array([key % len(self)], np.int64))))
        try:
            indices = np.arange(len(self), dtype=np.int64)[key]
        except IndexError as exc:
            raise IndexError(f"cannot select failures with {key!r}: {exc}") from None
        if indices.ndim != 1:
            raise IndexError(f"cannot select failures with {key!r}: expected an int, a slice, an int array or "
                             f"a boolean mask of length {len(self)}")
        return self._take(indices)

    def _take(self, indices: np.ndarray) -> Failures:
        return Failures.from_records(self.shape, self.records.take(indices), self._kind_codes[indices],
                                     self._kind_names)

    def __iter__(self) -> Iterator[Failure]:
        kinds = (self._kind_names[code] for code in self._kind_codes.tolist())
        coords = zip(*(axis.tolist() for axis in self.coords)) if self.shape else itertools.repeat(())
        return (Failure(tuple(where), kind, type_, message, inputs) for where, kind, (_, type_, message), inputs
                in zip(coords, kinds, self.records, self.records.input_tuples()))

    def summary(self) -> str:
        """One line: how many failed, by kind and by exception type (``repr`` adds the first rows)."""
        return failures_summary(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per failure: positions, kind, inputs, type, message (:func:`chunkmap.labelled.failures_to_pandas`)."""
        return labelled.failures_to_pandas(self)

    def __repr__(self) -> str:
        return failures_text(self)

    def _repr_html_(self) -> str:
        return failures_html(self)


class Result:
    """What :func:`chunkmap.run` computed.

    Unpacks as the coordinate arrays (one per axis) followed by the values, so for 2-D inputs
    ``xs, ys, values = result``; with ``outputs=``, followed by each output's values in order
    (``xs, ys, price, vega = result``).

    Attributes
    ----------
    shape : tuple of int
        The broadcast shape of the inputs.
    coords : tuple of ndarray
        One int array per axis: the coordinates of each computed element, in C order.
    values : ndarray or dict of str to ndarray
        ``func``'s result for each computed element (dtype: see :func:`chunkmap.run`); with
        ``outputs=``, a dict of output name to its values (in the order of ``outputs``), each
        array with its own dtype.
    outputs : tuple of str or None
        The names of the outputs (``run(..., outputs=)``), None for a single output.
    failures : Failures
        Every element that failed: an exception listed in ``skip``, a crash or a timeout.
    stats : Stats
        Counts, wall time and rate.

    Examples
    --------
    >>> result = Result((2, 2), (np.array([0, 1]), np.array([0, 1])), np.array([1.5, 2.5]),
    ...                 Failures((2, 2), [1], ["ValueError"], ["bad"]))
    >>> xs, ys, values = result
    >>> xs.tolist(), ys.tolist(), values.tolist(), result.flat_index.tolist()
    ([0, 1], [0, 1], [1.5, 2.5], [0, 3])
    >>> result.to_dense()
    array([[1.5, nan],
           [nan, 2.5]])
    >>> len(result), result.failures[-1]
    (2, Failure(coords=(0, 1), kind='exception', type='ValueError', message='bad'))
    >>> result
    <chunkmap.Result shape=(2, 2) dtype=float64
      elements 4
      computed 2   50.0%
      failed   1   25.0%  exception 1>

    Several outputs:

    >>> pair = Result((3,), (np.array([0, 2]),), {"n": np.array([1, 3]), "x": np.array([0.5, 1.5])},
    ...               Failures((3,), [], [], []))
    >>> xs, n, x = pair
    >>> pair.outputs, n.tolist(), pair.to_dense(-1)
    (('n', 'x'), [1, 3], (array([ 1, -1,  3]), array([ 0.5, -1. ,  1.5])))
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        coords: tuple[np.ndarray, ...],
        values: np.ndarray | Mapping[str, np.ndarray],
        failures: Failures,
        stats: Stats | None = None,
    ) -> None:
        self.shape = tuple(shape)
        self.coords = tuple(coords)
        self.outputs: tuple[str, ...] | None = tuple(values) if isinstance(values, Mapping) else None
        self.values = dict(values) if isinstance(values, Mapping) else values
        self.failures = failures
        self.stats = stats

    @property
    def failed_count(self) -> int:
        """How many elements failed: ``len(result.failures)``, known to a stored result without reading them."""
        return len(self.failures)

    def _per_output(self) -> list[np.ndarray]:
        """The values, one array per output (the values alone without ``outputs``)."""
        return [self.values] if self.outputs is None else list(self.values.values())

    @functools.cached_property
    def flat_index(self) -> np.ndarray:
        """Flat (C order) index of each computed element, ascending."""
        if not self.shape:
            return np.zeros(len(self), np.int64)
        return np.ravel_multi_index(self.coords, self.shape).astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The coordinate arrays, then the values (each output's): ``xs, ys, values = result``."""
        yield from self.coords
        yield from self._per_output()

    def __len__(self) -> int:
        """The number of computed elements (``len(result.values)`` for one output), not of the arrays unpacked."""
        return len(self._per_output()[0])

    def __bool__(self) -> bool:
        """Always true, as before ``len`` was defined: a result that computed nothing is still a result."""
        return True

    def to_dense(self, fill_value: Any = None) -> np.ndarray | tuple[np.ndarray, ...]:
        """The results as an array of the input shape, ``fill_value`` where nothing was computed.

        With the default ``fill_value=None``, the fill is NaN and integer or boolean values are
        promoted to float64; otherwise the dtype is what numpy promotes the values and
        ``fill_value`` to (e.g. ``to_dense(-1)`` keeps int64 values as int64). With ``outputs=``,
        a tuple of one such array per output, in order.
        """
        dense = tuple(_dense(values, self.flat_index, self.shape, fill_value) for values in self._per_output())
        return dense[0] if self.outputs is None else dense

    def to_masked(self) -> np.ma.MaskedArray | tuple[np.ma.MaskedArray, ...]:
        """The results as a masked array of the input shape, masked where nothing was computed.

        With ``outputs=``, a tuple of one masked array per output, in order (each with its own mask).
        """
        mask = np.ones(self.shape, dtype=bool)
        mask.reshape(-1)[self.flat_index] = False
        masked = []
        for values in self._per_output():
            data = np.zeros(self.shape, dtype=values.dtype)
            data.reshape(-1)[self.flat_index] = values
            masked.append(np.ma.MaskedArray(data, mask=mask.copy() if masked else mask))
        return masked[0] if self.outputs is None else tuple(masked)

    def to_xarray(self, *, status: bool = False) -> xarray.DataArray | xarray.Dataset:
        """A DataArray (a Dataset for ``outputs=``) with the inputs' labels (:func:`chunkmap.labelled.to_xarray`)."""
        return labelled.to_xarray(self, status=status)

    def to_pandas(self) -> pandas.DataFrame:
        """A table of a row per computed element: positions, then values (:func:`chunkmap.labelled.to_pandas`)."""
        return labelled.to_pandas(self)

    def __repr__(self) -> str:
        return result_text(self)

    def _repr_html_(self) -> str:
        return result_html(self)


def _dense(values: np.ndarray, flat_index: np.ndarray, shape: tuple[int, ...], fill_value: Any) -> np.ndarray:
    """``values`` at ``flat_index`` in an array of ``shape``, ``fill_value`` elsewhere (see :meth:`Result.to_dense`)."""
    if fill_value is None:
        dtype = np.result_type(values.dtype, np.float64)
        fill_value = np.nan
    elif values.dtype == object or not isinstance(fill_value, numbers.Number):
        dtype = np.dtype(object)
    else:
        dtype = np.result_type(values.dtype, np.min_scalar_type(fill_value))
    dense = np.full(shape, fill_value, dtype=dtype)
    dense.reshape(-1)[flat_index] = values
    return dense
