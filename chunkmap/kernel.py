"""Evaluate the user's function over the elements of one chunk: the hot loop.

numpy only; no scheduler. A chunk's inputs become plain Python scalars (as the seed's
``np.asscalar`` did: SWIG wrappers reject numpy scalars), ``func`` is called once per element,
and the outcome is an :class:`Evaluation`: the values computed, one status byte per element and
the failures. The same code runs in the calling process (``sync``, ``threads``) and inside the
isolated worker processes of :mod:`chunkmap.local`. An :class:`Execution` says what a run
calls and how each call is guarded.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .cfunc import CFunction, run_to_end as run_cfunction
from .errors import ElementError, OutputCountError, UnpicklableResultError
from .failures import FailureRecords, input_columns
from .fields import Miscount, describe, to_fields
from .loop import run_to_end
from .source import Source
from .workers import PerWorker, Setup, modules_to_preload

__all__ = [
    "COMPUTED",
    "EXCEPTION",
    "CRASH",
    "TIMEOUT",
    "KINDS",
    "Execution",
    "Cancellation",
    "Evaluation",
    "ElementFailure",
    "ChunkOutput",
    "evaluate_columns",
    "evaluate",
]

#: Status of an element: its call returned a value.
COMPUTED = 0
#: Its call raised an exception listed in ``skip``.
EXCEPTION = 1
#: Its call killed the worker process (segmentation fault, abort, exit).
CRASH = 2
#: Its call ran longer than the run's ``timeout``.
TIMEOUT = 3
#: The failure kind of each failing status.
KINDS = {EXCEPTION: "exception", CRASH: "crash", TIMEOUT: "timeout"}


class Cancellation:
    """Whether a run must stop: set by chunkmap (an error, Ctrl-C), or through the caller's ``cancel=`` event.

    It reads as a ``threading.Event`` (``is_set``, ``set``); setting it never sets the caller's event.
    """

    def __init__(self, requested: Any = None) -> None:
        self._event = threading.Event()
        self.requested = requested  #: the caller's event (anything with ``is_set()``), or None

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set() or self.by_caller()

    def by_caller(self) -> bool:
        """Whether the caller's ``cancel=`` event asked the run to stop."""
        return self.requested is not None and bool(self.requested.is_set())


@dataclass
class Execution:
    """What a run executes: the function, how each element's call is guarded, what workers do besides.

    ``outputs`` names the values each call returns (``run``'s ``outputs=``), None for one value.
    ``progress`` (elements newly done) and ``cancelled`` (set on Ctrl-C or an error: busy
    workers stop at once) belong to the calling process and are not pickled with the rest.
    """

    func: Callable[..., Any]
    skip: tuple[type[BaseException], ...] = ()
    kwargs: Mapping[str, Any] | None = None
    timeout: float | None = None
    setup: Setup | None = None
    max_calls: int | None = None
    max_memory: int | None = None
    outputs: tuple[str, ...] | None = None
    progress: Callable[[int], None] | None = None
    cancelled: Cancellation = field(default_factory=Cancellation)

    def __reduce__(self):
        return (Execution, (self.func, self.skip, self.kwargs, self.timeout, self.setup, self.max_calls,
                            self.max_memory, self.outputs))

    def pool_key(self) -> tuple[str | None, tuple[str, ...]]:
        """``(setup key, modules to preload)``: what a worker pool for this run is kept by.

        A run with another setup (or none) gets fresh workers; see
        :func:`~chunkmap.workers.modules_to_preload` for the modules.
        """
        return self.setup.key if self.setup is not None else None, modules_to_preload(self.func)


@dataclass
class Evaluation:
    """What calling ``func`` on ``k`` elements produced.

    Attributes
    ----------
    status : ndarray of uint8, shape (k,)
        :data:`COMPUTED`, :data:`EXCEPTION`, :data:`CRASH` or :data:`TIMEOUT` per element.
    values : ndarray
        The values of the computed elements, in order (one per ``COMPUTED`` status); with
        ``outputs``, a structured array with one field per output.
    failures : FailureRecords
        One record per failing element (position, exception type, message, input values), in
        order; its kind is its status.
    seconds : float
        Time spent in the per-element loop (calling ``func``), without any transfer.
    """

    status: np.ndarray
    values: np.ndarray
    failures: FailureRecords = field(default_factory=FailureRecords.empty)
    seconds: float = 0.0

    @classmethod
    def join(cls, parts: Sequence[tuple[int, Evaluation]], length: int) -> Evaluation:
        """One evaluation of ``length`` elements from parts evaluated at the given offsets."""
        if len(parts) == 1 and parts[0][0] == 0 and len(parts[0][1].status) == length:
            return parts[0][1]  # the usual case: the chunk in one piece
        parts = sorted(parts, key=lambda part: part[0])
        status = np.empty(length, np.uint8)
        for offset, part in parts:
            status[offset : offset + len(part.status)] = part.status
        with_values = [part.values for _, part in parts if len(part.values)]
        values = np.concatenate(with_values) if with_values else np.empty(0, np.float64)
        failures = FailureRecords.concat([part.failures for _, part in parts], [offset for offset, _ in parts])
        return cls(status, values, failures, sum(part.seconds for _, part in parts))


class ElementFailure(Exception):
    """``func`` raised an exception that ``skip`` does not list (internal: positions, not coordinates).

    The caller, which knows the element's flat index, turns it into an :class:`ElementError`
    (``error``, when given, is the subclass to raise).
    """

    def __init__(self, position: int, inputs: tuple, exception_type: str, message: str, returned: bool = False,
                 error: type[ElementError] | None = None) -> None:
        super().__init__(position, inputs, exception_type, message, returned, error)
        self.position = position
        self.inputs = inputs
        self.exception_type = exception_type
        self.message = message
        self.returned = returned  #: func returned a value of type ``exception_type`` that cannot be pickled
        self.error = error or (UnpicklableResultError if returned else ElementError)

    def shifted(self, offset: int) -> ElementFailure:
        """The same failure, its position counted from ``offset`` elements earlier (a part's within its chunk)."""
        return ElementFailure(offset + self.position, self.inputs, self.exception_type, self.message, self.returned,
                              self.error)

    def to_element_error(self, flat_index: int, shape: tuple[int, ...]) -> ElementError:
        coords = tuple(int(c) for c in np.unravel_index(flat_index, shape)) if shape else ()
        return self.error(coords, self.inputs, self.exception_type, self.message)


def evaluate_columns(
    func: Callable[..., Any],
    columns: Sequence[np.ndarray],
    skip: tuple[type[BaseException], ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    heartbeat: np.ndarray | None = None,
    outputs: tuple[str, ...] | None = None,
) -> Evaluation:
    """Call ``func`` on every element of the 1-D ``columns`` (one column per input).

    The per-element loop is :data:`chunkmap.loop.loop`: compiled C calling ``func`` through
    the C API when the extension is built, pure Python otherwise (same results). A
    :class:`~chunkmap.cfunc.CFunction` (without ``kwargs`` and ``outputs``) is called from C
    through its pointer instead, the GIL released (:func:`chunkmap.cfunc.run_to_end`), unless a
    column's dtype does not convert to its parameter's safely.

    Parameters
    ----------
    heartbeat : ndarray of int64, optional
        Written with each element's position just before its call, so that another process
        can tell which element was running when this one died or hung.
    outputs : tuple of str, optional
        ``func`` returns a sequence of one value per name: the values become a structured
        array, one field per output (:func:`chunkmap.fields.to_fields`).

    Raises
    ------
    ElementFailure
        ``func`` raised an exception not listed in ``skip``; the original is its ``__cause__``.
        With ``outputs``, also for a value that is not a sequence of one value per output (its
        ``error`` is :class:`~chunkmap.errors.OutputCountError`).
    SetupError
        ``func`` is a :class:`~chunkmap.workers.PerWorker` whose factory raised.

    Examples
    --------
    >>> result = evaluate_columns(lambda a, b: b / a, [np.array([1.0, 0.0, 4.0]), np.array([2.0, 2.0, 2.0])],
    ...                           skip=ZeroDivisionError)
    >>> result.values.tolist(), result.status.tolist(), list(result.failures), list(result.failures.input_tuples())
    ([2.0, 0.5], [0, 1, 0], [(1, 'ZeroDivisionError', 'float division by zero')], [(0.0, 2.0)])
    """
    if isinstance(func, PerWorker):
        func = func.build()
    call = functools.partial(func, **kwargs) if kwargs else func
    given, columns = columns, tuple(_loopable(column) for column in columns)
    skip = skip if isinstance(skip, tuple) else (skip,)
    started = time.perf_counter()
    direct = isinstance(func, CFunction) and not kwargs and outputs is None
    ran = run_cfunction(func, columns, skip, heartbeat) if direct else None
    values, status, failures, error = ran or run_to_end(call, columns, skip, heartbeat=heartbeat,
                                                        keep_objects=outputs is not None)
    seconds = time.perf_counter() - started
    if error is not None:
        position, exc = error
        inputs = tuple(column[position].item() for column in columns)
        raise ElementFailure(position, inputs, type(exc).__name__, _message(exc)) from exc
    if outputs is not None:
        try:
            values = to_fields(values, outputs)
        except Miscount as miscount:
            position = int(np.flatnonzero(status == COMPUTED)[miscount.number])
            inputs = tuple(column[position].item() for column in columns)
            raise ElementFailure(position, inputs, type(miscount.value).__name__, describe(miscount.value, outputs),
                                 error=OutputCountError) from None
    if not isinstance(failures, FailureRecords):  # a CFunction's come as records already
        failures = FailureRecords.from_tuples(failures)
    if len(failures):
        failures = dataclasses.replace(failures, inputs=input_columns(given, failures.positions))
    return Evaluation(status, values, failures, seconds)


def _loopable(column: np.ndarray) -> np.ndarray:
    """The column as the loop takes it: C-contiguous, native byte order, no float16."""
    if column.dtype == np.float16:
        column = column.astype(np.float32)
    elif not column.dtype.isnative:
        column = column.astype(column.dtype.newbyteorder("="))
    elif column.dtype.byteorder not in "=|":  # native, but spelled '<' (zarr's dtypes): the loop reads '=' only
        column = column.view(np.dtype(column.dtype.str))
    return np.ascontiguousarray(column)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not lose the failure
        return f"<{type(exc).__name__} whose str() failed>"


@dataclass
class ChunkOutput:
    """What one chunk produced: its unmasked flat indices and their evaluation.

    ``seconds`` is how long the chunk took where it ran, reading its inputs included (0 when
    not timed, e.g. read back from a checkpoint); the pilot of ``chunks="auto"`` fits on it.
    """

    index: int
    flat_index: np.ndarray
    evaluation: Evaluation
    seconds: float = 0.0

    @property
    def unmasked(self) -> int:
        """How many elements the chunk evaluated (its unmasked ones)."""
        return len(self.flat_index)

    @property
    def failed(self) -> int:
        return len(self.evaluation.failures)


def evaluate(
    index: int,
    start: int,
    stop: int,
    source: Source,
    func: Callable[..., Any],
    skip: tuple[type[BaseException], ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    cancelled: Cancellation | threading.Event | None = None,
    outputs: tuple[str, ...] | None = None,
) -> ChunkOutput | None:
    """Evaluate the unmasked elements of flat indices ``[start, stop)`` of ``source`` in this process.

    With ``cancelled``, the elements go in blocks (growing until one lasts
    :data:`CANCEL_CHECK_SECONDS`), and the evaluation stops between two blocks once it is set:
    then the result is None.

    Raises
    ------
    ElementError
        When ``func`` raises an exception that ``skip`` does not list; it names the element's
        coordinates and inputs and chains the original exception.
        :class:`~chunkmap.errors.OutputCountError` when it returns other than one value per
        name of ``outputs``.

    Examples
    --------
    >>> from chunkmap.source import ArraySource
    >>> source = ArraySource((np.array([1.0, 2.0, 0.0]), np.array([4.0, 4.0, 4.0])), (3,))
    >>> output = evaluate(0, 0, 3, source, lambda a, b: b / a, skip=ZeroDivisionError)
    >>> output.evaluation.values.tolist(), list(output.evaluation.failures)
    ([4.0, 2.0], [(2, 'ZeroDivisionError', 'float division by zero')])
    """
    started = time.perf_counter()
    flat_index, columns = source.gather(start, stop)
    try:
        if cancelled is None:
            evaluation = evaluate_columns(func, columns, skip, kwargs, outputs=outputs)
        else:
            evaluation = _evaluate_in_blocks(func, columns, skip, kwargs, cancelled, outputs)
    except ElementFailure as failure:
        error = failure.to_element_error(int(flat_index[failure.position]), source.shape)
        raise error from failure.__cause__
    if evaluation is None:
        return None
    return ChunkOutput(index, flat_index, evaluation, time.perf_counter() - started)


#: with a cancel event, an in-process evaluation looks at it about this often (seconds)
CANCEL_CHECK_SECONDS = 0.05
#: the first block of an in-process evaluation that can be cancelled
FIRST_BLOCK = 256


def _evaluate_in_blocks(func: Callable[..., Any], columns: Sequence[np.ndarray], skip: tuple[type[BaseException], ...],
                        kwargs: Mapping[str, Any] | None, cancelled: Cancellation | threading.Event,
                        outputs: tuple[str, ...] | None = None) -> Evaluation | None:
    """:func:`evaluate_columns` block by block, None once ``cancelled`` is set between two blocks."""
    length = len(columns[0]) if columns else 0
    parts: list[tuple[int, Evaluation]] = []
    first, block = 0, FIRST_BLOCK
    while first < length:
        if cancelled.is_set():
            return None
        last = min(first + block, length)
        try:
            part = evaluate_columns(func, [column[first:last] for column in columns], skip, kwargs, outputs=outputs)
        except ElementFailure as failure:
            raise failure.shifted(first) from failure.__cause__
        parts.append((first, part))
        if part.seconds < CANCEL_CHECK_SECONDS:
            block *= 2
        first = last
    return Evaluation.join(parts, length)
