"""``chunkmap.run``: call a scalar function on every unmasked element of numpy arrays, in parallel."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from . import sizing
from .checkpoint import Checkpoint, RunCheckpoint, run_identity
from .checkpoint.run import describe
from .errors import CheckpointWarning, NotCallableError, OptionError
from .kernel import ChunkOutput
from .outputs import Outputs
from .plan import Plan, make_plan
from .progress import Progress, make_progress
from .result import Result, Stats
from .workers import cpu_count, shared_pool

if TYPE_CHECKING:
    from .engine import Execution, Scheduler

__all__ = ["run"]


def run(
    func: Callable[..., Any],
    *arrays: Any,
    mask: Any = None,
    skip: type[BaseException] | tuple[type[BaseException], ...] = (),
    chunks: int | str = "auto",
    scheduler: Any = None,
    client: Any = None,
    kwargs: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    progress: bool | Callable[[int, int, int], None] | None = None,
    checkpoint: Any = None,
) -> Result:
    """Call ``func`` on every unmasked element of ``arrays``, in parallel on dask.

    ``func(*scalars, **kwargs)`` is called once per element with plain Python scalars (bool,
    int, float, complex), never numpy scalars, so SWIG-wrapped C functions accept them.

    Parameters
    ----------
    func : callable
        The scalar function, e.g. a SWIG-wrapped C function. On the ``processes`` and
        distributed schedulers it must pickle (module-level functions and SWIG functions do;
        lambdas and closures go through cloudpickle).
    *arrays : array_like
        One or more arrays of any number of dimensions (lists too), broadcast to one shape.
        numpy masked arrays contribute their masks. Dtypes: bool, integer, unsigned, floating,
        complex. Inputs are never stacked or copied whole: chunks read them in place.
    mask : None, array_like of bool, or callable, optional
        ``True`` means "do not compute" (the numpy.ma convention). An array must broadcast to
        the inputs' shape. A callable is vectorised: it receives consecutive 1-D slices of the
        broadcast, C-order flattened inputs (one array per input) and returns a boolean array
        of the same length; it is evaluated in the calling process before any work is sent.
        Masked elements are never passed to ``func`` and never sent to workers.
    skip : exception class or tuple of them, optional
        A call raising one of these is recorded in ``result.failures`` (coordinates, exception
        type, message) and the run goes on. Any other exception stops the run with an
        :class:`~chunkmap.errors.ElementError` naming the element's coordinates and inputs.
    chunks : "auto" or int, optional
        Unmasked elements per chunk, the unit of scheduling. ``"auto"`` sizes chunks from a
        timed pilot on the first elements (kept, not wasted; every worker takes part): rounds of
        one chunk per worker with 1, 8, 64, ... elements each until a round takes 20 ms, which
        gives the time per call ``t`` and the overhead per task ``o``. The rest is cut into
        equal chunks lasting at least ``100 o`` (overhead under 1%), about 1/32 of each worker's
        share (the last chunks end together), at most half of it and at most 30 s.
    scheduler : str, distributed.Client or None, optional
        ``"processes"`` (the default: a local process pool, one per core), ``"threads"`` (for
        functions that release the GIL), ``"sync"`` (in the calling thread, for debugging),
        ``"distributed"`` (the current ``distributed.Client``), a ``distributed.Client``, or
        a scheduler address such as ``"tcp://127.0.0.1:8786"`` (chunkmap connects, waiting
        dask's ``distributed.comm.timeouts.connect``, and disconnects at the end).
    client : distributed.Client, optional
        Run on this client's cluster; the same as ``scheduler=client``.
    kwargs : mapping, optional
        Keyword arguments passed to every call of ``func``.
    progress : bool, callable or None, optional
        A live count of elements (done/total, rate, ETA, failures). ``None`` (the default)
        shows a tqdm bar when interactive (Jupyter, IPython, a terminal) and tqdm is
        installed; ``True`` always (it needs the ``progress`` extra); ``False`` never; a
        callable is called with ``(done, total, failed)`` after every change. Counts are
        unmasked elements; they only grow, also when a range is re-run after a crash.
    checkpoint : str, path, store or chunkmap.Checkpoint, optional
        Persist every finished chunk there (a directory, or a ``redis://`` URL) and reuse
        finished chunks when the same call runs again: after a crash, a kill or Ctrl-C, the
        rerun computes only the rest and returns the same result as an uninterrupted run.
        Runs are told apart by their identity: the function's code and bound state, ``kwargs``,
        ``skip``, ``timeout``, an explicit ``chunks``, the inputs' contents and the mask (see
        :mod:`chunkmap.checkpoint.identity`; ``chunkmap.Checkpoint(location, name=...)`` names
        the function yourself). A different call starts a fresh run beside the old one, with a
        :class:`~chunkmap.errors.CheckpointWarning` saying what differs; stored records that do
        not prove they belong to this run are computed again (``result.stats.rejected``). The
        same call running elsewhere at the moment raises
        :class:`~chunkmap.errors.CheckpointBusyError`.
    timeout : float, optional
        Seconds one call may take. A call that runs longer is recorded in ``result.failures``
        with kind ``"timeout"``, its worker process is replaced and the run goes on. Needs a
        scheduler that isolates calls in worker processes (``"processes"`` or distributed).

    Returns
    -------
    Result
        Coordinates (``result.coords``, one int array per axis) and ``result.values`` of every
        computed element in C order of the input (the same for every scheduler), plus
        ``failures``, ``stats``, ``shape`` and ``to_dense()``. It unpacks as the coordinate
        arrays followed by the values: ``xs, ys, values = run(f, a, b)`` for 2-D inputs.
        The dtype of ``values`` follows what ``func`` returns: int gives int64, float float64,
        bool bool, complex complex128; a mix promotes as numpy does (int and float give
        float64); anything else (str, None, tuples, objects) gives an object array. With
        nothing computed (empty or fully masked inputs) ``values`` is an empty float64 array.

    Raises
    ------
    chunkmap.errors.InputError
        Shapes that do not broadcast (``ShapeError``), an unsupported dtype (``DtypeError``),
        a mask of the wrong shape or dtype (``MaskError``).
    chunkmap.errors.NotCallableError
        ``func`` is not callable.
    chunkmap.errors.OptionError
        ``chunks``, ``skip`` or ``kwargs`` out of their domain.
    chunkmap.errors.SchedulerError
        An unknown scheduler, or no scheduler at the address (``SchedulerUnreachableError``).
    chunkmap.errors.ElementError
        ``func`` raised an exception not listed in ``skip``.
    chunkmap.errors.CheckpointError
        The checkpoint cannot be written or trusted (a full disk, a corrupt manifest), another
        live run holds it (``CheckpointBusyError``), or ``func`` cannot be fingerprinted
        (``IdentityError``).

    Examples
    --------
    >>> import numpy as np, chunkmap
    >>> a = np.array([[1.0, 2.0], [-1e12, 4.0]])
    >>> b = np.array([[10.0, 0.0], [30.0, 40.0]])
    >>> xs, ys, values = chunkmap.run(lambda x, y: x / y, a, b, mask=a <= -1e10,
    ...                               skip=ZeroDivisionError, scheduler="sync")
    >>> xs.tolist(), ys.tolist(), values.tolist()
    ([0, 1], [0, 1], [0.1, 0.1])
    """
    started = time.perf_counter()
    if not callable(func):
        raise NotCallableError(
            f"func must be callable; got {type(func).__name__} {func!r:.80}. The function comes "
            f"first: run(func, *arrays)"
        )
    if scheduler in (None, "processes") and client is None:
        shared_pool(cpu_count())  # the workers start while dask is imported and the inputs planned
    from .engine import Execution, resolve_scheduler  # dask loads on the first run, not on import

    execution = Execution(func, _skip_tuple(skip), _kwargs_mapping(kwargs), _timeout(timeout))
    location = Checkpoint.of(checkpoint) if checkpoint is not None else None
    with resolve_scheduler(scheduler, client) as resolved:
        plan = make_plan(arrays, mask=mask, chunks=chunks, workers=resolved.workers)
        saved = _open_checkpoint(location, plan, execution, chunks) if location is not None else None
        reporter = None
        try:
            reporter = make_progress(progress, plan.unmasked)
            result, resumed = _execute(plan, chunks == "auto", execution, resolved, saved, reporter)
        finally:
            if reporter is not None:
                reporter.close()
            if saved is not None:
                saved.close()
                _show(saved)
    wall_time = time.perf_counter() - started
    calls = len(result.values) + len(result.failures) - resumed
    result.stats = Stats(
        elements=plan.elements,
        masked=plan.elements - plan.unmasked,
        computed=len(result.values),
        failed=len(result.failures),
        wall_time=wall_time,
        rate=calls / wall_time if wall_time > 0 else float(calls),
        resumed=resumed,
        rejected=saved.rejected if saved is not None else 0,
    )
    return result


def _open_checkpoint(location: Checkpoint, plan: Plan, execution: Execution, chunks: int | str) -> RunCheckpoint:
    """Identify the run and take its lease in the location's store."""
    identity = run_identity(execution.func, plan.source, execution.skip, execution.kwargs, execution.timeout,
                            chunks, name=location.name)
    return RunCheckpoint(location.store, identity, describe(execution.func, plan))


def _show(saved: RunCheckpoint, depth: int = 0) -> None:
    """Warn with the checkpoint's notices so far, once each, from the line that called ``run``.

    ``depth``: the calls between ``run`` and this function's caller.
    """
    while saved.notices:
        warnings.warn(saved.notices.pop(0), CheckpointWarning, stacklevel=3 + depth)


def _execute(
    plan: Plan,
    auto: bool,
    execution: Execution,
    scheduler: Scheduler,
    saved: Checkpoint | None,
    reporter: Progress | None,
) -> tuple[Result, int]:
    """Lay out the chunks (pilot or checkpoint), resume, evaluate the rest; the result and resumed count."""
    from .engine import execute

    if reporter is not None:
        execution.progress = reporter.advance
    layout = saved.stored_layout() if saved is not None else None
    pilot_outputs: list[ChunkOutput] = []
    if layout is not None:
        plan = plan.with_layout(*layout)
    elif auto and plan.unmasked:
        plan = plan.with_layout(*_pilot(plan, execution, scheduler, pilot_outputs.append), scheduler.workers)
    resumed: list[ChunkOutput] = []
    if saved is not None:
        saved.begin(plan)
        resumed = saved.resume(plan, lambda chunk: plan.source.flat_index(chunk.start, chunk.stop))
        _show(saved, depth=1)
    outputs = Outputs(plan.shape, plan.chunks)
    for output in resumed:
        outputs.add(output)
    if reporter is not None:
        reporter.advance(sum(len(o.flat_index) for o in resumed), sum(len(o.evaluation.failures) for o in resumed))

    def deliver(output: ChunkOutput) -> None:
        outputs.add(output)
        if saved is not None:
            saved.save(output, plan.chunks[output.index])
        if reporter is not None:
            reporter.fail(len(output.evaluation.failures))

    for output in pilot_outputs:
        deliver(output)
    remaining = [chunk for chunk in plan.chunks if not outputs.completed[chunk.index]]
    execute(plan.source, remaining, execution, scheduler, deliver)
    if saved is not None:
        saved.finish()
    return outputs.result(), sum(len(output.flat_index) for output in resumed)


def _pilot(
    plan: Plan, execution: Execution, scheduler: Scheduler, deliver: Callable[[ChunkOutput], None]
) -> tuple[list[int], int]:
    """Run pilot rounds (one chunk per worker, growing) and size the rest: ``(head ends, chunk size)``.

    See :mod:`chunkmap.sizing`; the pilot's outputs go to ``deliver``.
    """
    from .engine import execute

    head: list[int] = []
    rounds: list[tuple[int, float]] = []
    tasks: list[tuple[int, float, float]] = []
    per_task = 1
    while not head or head[-1] < plan.unmasked:
        done = head[-1] if head else 0
        ends = sorted({min(done + per_task * (i + 1), plan.unmasked) for i in range(scheduler.workers)})
        chunks = plan.head_chunks(head + ends)[len(head):]
        outputs: list[ChunkOutput] = []
        execute(plan.source, chunks, execution, scheduler, outputs.append)
        for output in outputs:
            deliver(output)
        if rounds:  # the first round warms up (worker start, imports)
            tasks += _timings(outputs)
        rounds.append((per_task, max(output.seconds for output in outputs)))
        head += ends
        if sizing.measured(rounds):
            break
        per_task *= sizing.PILOT_GROWTH
    remaining = plan.unmasked - head[-1]
    if not remaining:
        return head, plan.unmasked  # the pilot did everything
    per_call, overhead = sizing.fit(tasks or _timings(outputs))
    return head, sizing.auto_chunk_size(per_call, overhead, remaining, scheduler.workers)


def _timings(outputs: list[ChunkOutput]) -> list[tuple[int, float, float]]:
    """``(elements, seconds, loop seconds)`` of each output, as :func:`chunkmap.sizing.fit` takes them."""
    return [(len(output.flat_index), output.seconds, output.evaluation.seconds) for output in outputs]


def _skip_tuple(skip: Any) -> tuple[type[BaseException], ...]:
    if skip is None:
        return ()
    classes = skip if isinstance(skip, tuple) else (skip,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise OptionError(
                f"skip must be an exception class or a tuple of them (e.g. skip=ValueError); "
                f"got {skip!r} with {cls!r} of type {type(cls).__name__}"
            )
    return classes


def _timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    raise OptionError(f"timeout must be a positive number of seconds per call, or None; got {timeout!r}")


def _kwargs_mapping(kwargs: Any) -> dict[str, Any] | None:
    if kwargs is None:
        return None
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise OptionError(
            f"kwargs must be a mapping of argument names to values, passed to every call of "
            f"func; got {type(kwargs).__name__} {kwargs!r:.80}"
        )
    return dict(kwargs)

