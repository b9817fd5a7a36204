"""The outcome of a run: coordinates and values of what was computed, failures and statistics.

numpy only. A :class:`Result` unpacks like the seed's return value, ``xs, ys, values = result``
for 2-D inputs (one coordinate array per axis, then the values); everything is in C order of
the broadcast input shape whatever the scheduler.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .failures import FailureRecords

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
    """One element whose call failed: where, how (``kind``), which exception and its message."""

    coords: tuple[int, ...]
    kind: str
    type: str
    message: str


class Failures:
    """The table of elements whose call failed, in C order.

    Iterating yields :class:`Failure` records; the columns are also available whole. The
    strings are kept packed (:class:`~chunkmap.failures.FailureRecords`) and the string
    columns are built on first access.

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
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        flat_index: Sequence[int] | np.ndarray,
        types: Sequence[str],
        messages: Sequence[str],
        kinds: Sequence[str] | None = None,
    ) -> None:
        records = FailureRecords.from_columns(np.asarray(flat_index, np.int64), types, messages)
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

    def __getitem__(self, i: int) -> Failure:
        coords = tuple(int(axis[i]) for axis in self.coords)
        return Failure(coords, str(self.kinds[i]), str(self.types[i]), str(self.messages[i]))

    def __iter__(self) -> Iterator[Failure]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        if not len(self):
            return "Failures(0)"
        counts = np.bincount(self.records.type_codes, minlength=len(self.records.type_names))
        by_type = ", ".join(f"{name}: {count}" for name, count in sorted(zip(self.records.type_names, counts.tolist())))
        return f"Failures({len(self)}; {by_type})"


class Result:
    """What :func:`chunkmap.run` computed.

    Unpacks as the coordinate arrays (one per axis) followed by the values, so for 2-D inputs
    ``xs, ys, values = result``.

    Attributes
    ----------
    shape : tuple of int
        The broadcast shape of the inputs.
    coords : tuple of ndarray
        One int array per axis: the coordinates of each computed element, in C order.
    values : ndarray
        ``func``'s result for each computed element (dtype: see :func:`chunkmap.run`).
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
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        coords: tuple[np.ndarray, ...],
        values: np.ndarray,
        failures: Failures,
        stats: Stats | None = None,
    ) -> None:
        self.shape = tuple(shape)
        self.coords = tuple(coords)
        self.values = values
        self.failures = failures
        self.stats = stats

    @functools.cached_property
    def flat_index(self) -> np.ndarray:
        """Flat (C order) index of each computed element, ascending."""
        if not self.shape:
            return np.zeros(len(self.values), np.int64)
        return np.ravel_multi_index(self.coords, self.shape).astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield from self.coords
        yield self.values

    def to_dense(self, fill_value: Any = None) -> np.ndarray:
        """The results as an array of the input shape, ``fill_value`` where nothing was computed.

        With the default ``fill_value=None``, the fill is NaN and integer or boolean values are
        promoted to float64; otherwise the dtype is what numpy promotes the values and
        ``fill_value`` to (e.g. ``to_dense(-1)`` keeps int64 values as int64).
        """
        if fill_value is None:
            dtype = np.result_type(self.values.dtype, np.float64)
            fill_value = np.nan
        elif self.values.dtype == object or not isinstance(fill_value, numbers.Number):
            dtype = np.dtype(object)
        else:
            dtype = np.result_type(self.values.dtype, np.min_scalar_type(fill_value))
        dense = np.full(self.shape, fill_value, dtype=dtype)
        dense.reshape(-1)[self.flat_index] = self.values
        return dense

    def to_masked(self) -> np.ma.MaskedArray:
        """The results as a masked array of the input shape, masked where nothing was computed."""
        mask = np.ones(self.shape, dtype=bool)
        mask.reshape(-1)[self.flat_index] = False
        data = np.zeros(self.shape, dtype=self.values.dtype)
        data.reshape(-1)[self.flat_index] = self.values
        return np.ma.MaskedArray(data, mask=mask)

    def __repr__(self) -> str:
        stats = f"; {self.stats.summary()}" if self.stats else ""
        return (
            f"<chunkmap.Result shape={self.shape} computed={len(self.values)} "
            f"dtype={self.values.dtype} failed={len(self.failures)}{stats}>"
        )
