"""``chunkmap.run``: call a scalar function on every unmasked element of numpy arrays, in parallel.

The wiring of a run, in order: check the options (:mod:`~chunkmap.options`), choose the backend
(:mod:`~chunkmap.backends`), plan the inputs and mask (:mod:`~chunkmap.plan`), open the
checkpoint (:mod:`~chunkmap.checkpoint`), lay out the chunks (a stored layout, ``chunks=``, or
:func:`~chunkmap.sizing.pilot`), execute the rest, and assemble the
:class:`~chunkmap.result.Result` (:mod:`~chunkmap.outputs`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import replace
import warnings
from collections.abc import Mapping
from typing import Any, Callable

from . import backends, options, sizing
from .backends import Backend
from .blocks import BlockOutputs, BlockPlan
from .stored import OutputStore, StoredOutputs
from .checkpoint import Checkpoint, RunCheckpoint
from .errors import CheckpointWarning, IdentityError, RunCancelledError
from .kernel import Cancellation, ChunkOutput, Execution
from .outputs import Delivery, Outputs
from .plan import Plan, make_plan
from .progress import Progress, bar_name, make_progress
from .result import Result, Stats
from .system import one_interrupt
from .workers import Workers

__all__ = ["run"]

CANCELLED = "the run was cancelled (its cancel= event was set)"
LAZY_CHECKPOINT = ("checkpoint= keeps runs over numpy arrays and .npy files; with lazy inputs (dask, zarr, xarray "
                   "data not in memory) the output= store is the checkpoint: pass output='results.zarr' instead, and "
                   "rerun the same call to resume")


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
    progress: bool | Mapping[str, Any] | Callable[[int, int, int], None] | None = None,
    checkpoint: Any = None,
    workers: int | Workers | None = None,
    cancel: Any = None,
    outputs: int | tuple[str, ...] | None = None,
    output: Any = None,
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
        complex, in any byte order. Inputs are never stacked or copied whole: chunks read them
        in place. ``.npy`` paths are read by range. dask arrays, zarr arrays and xarray objects
        whose data is not in memory (dask-backed, or opened lazily from a file) are *lazy*:
        the work is cut into boxes following their storage chunks, and each task reads its
        box of every input (a dask array's blocks computed there, a zarr region read through
        zarr) and of the mask, so the client's plan holds O(boxes), about 500 bytes per box
        (5 MB for 10^10 elements in 10^4 boxes), and no worker more than a box per task;
        results come back to the client or go to ``output=`` (``result.stats.masked`` is
        known at the end; progress counts every element, masked ones as their box is read).
        xarray objects
        broadcast by dimension name as in ``xarray.apply_ufunc`` (all array inputs must then be
        xarray), a ``Dataset`` stands for its data variables (``ds[["a", "b"]]``), and the
        result keeps their dims and coordinates (``result.to_xarray()``).
    mask : None, array_like of bool, or callable, optional
        ``True`` means "do not compute" (the numpy.ma convention). An array must broadcast to
        the inputs' shape. A callable is vectorised: it receives consecutive 1-D slices of the
        broadcast, C-order flattened inputs (one array per input) and returns a boolean array
        of the same length; it is evaluated in the calling process before any work is sent
        (with lazy inputs: in each task, on its box). A mask that is a dask, zarr or xarray
        array is read box by box like an input. Masked elements are never passed to ``func``
        and never sent to worker processes.
    skip : exception class or tuple of them, optional
        A call raising one of these is recorded in ``result.failures`` (coordinates, exception
        type, message) and the run goes on. Any other exception stops the run with an
        :class:`~chunkmap.errors.ElementError` naming the element's coordinates and inputs.
    chunks : "auto" or int, optional
        Unmasked elements per chunk, the unit of scheduling (with lazy inputs: elements per box,
        masked ones included; ``"auto"`` follows the storage chunks, merged up to 65,536
        elements, see :mod:`chunkmap.blocks`). ``"auto"`` sizes chunks from a
        timed pilot on the first elements (kept, not wasted; every worker takes part):
        generations of one chunk per worker with 1, 8, 64, ... elements each, streamed (each
        finished chunk hands out the next), until a generation takes 20 ms, which gives the time
        per call ``t`` and the overhead per task ``o``. The rest is cut into equal chunks
        lasting at least ``100 o`` (overhead under 1%) and the scheduler's dispatch floor, about
        1/32 of each worker's share (the last chunks end together), at most half of it and at
        most 30 s (:mod:`chunkmap.sizing`).
    scheduler : str, callable, distributed.Client or None, optional
        ``"processes"`` (a local process pool, one per core), ``"threads"`` (for functions that
        release the GIL), ``"sync"`` (in the calling thread, for debugging), ``"distributed"``
        (the current ``distributed.Client``), a ``distributed.Client``, or a scheduler address
        such as ``"tcp://127.0.0.1:8786"`` (chunkmap connects, waiting dask's
        ``distributed.comm.timeouts.connect``, and disconnects at the end). dask's names
        (``"threading"``, ``"synchronous"``, ...) and scheduler functions (``dask.threaded.get``)
        work too. ``None`` follows dask's precedence: dask's ``"scheduler"`` setting
        (``dask.config.set(scheduler="threads")``), then the active ``distributed.Client``, then
        ``"processes"`` (see :mod:`chunkmap.backends`).
    client : distributed.Client, optional
        Run on this client's cluster; the same as ``scheduler=client``.
    kwargs : mapping, optional
        Keyword arguments passed to every call of ``func``.
    outputs : int or tuple of str, optional
        ``func`` returns a tuple (any sequence) of this many values, or of one value per name
        (distinct identifiers, e.g. ``outputs=("price", "vega")``); an int ``n`` names them
        ``"out0"`` to ``"out{n-1}"``. Then ``result.values`` is a dict of name to values (each
        output with its own dtype, by the rule of a single output), ``result.outputs`` the
        names, the result unpacks as the coordinates followed by each output
        (``xs, ys, price, vega = run(...)``) and ``to_dense()`` returns one array per output.
        A call returning anything else stops the run with
        :class:`~chunkmap.errors.OutputCountError`.
    progress : bool, dict, tqdm bar, callable or None, optional
        A live count of elements (done/total, rate, ETA, failures). ``None`` (the default)
        shows a tqdm bar named after ``func`` when interactive (Jupyter, IPython, a terminal)
        and tqdm is installed; ``True`` always (it needs the ``progress`` extra); a dict too,
        with these tqdm options over chunkmap's (``{"desc": "fit", "leave": False}``); a tqdm
        bar is reset to the run's total, updated and left open; ``False`` never; a callable is
        called with ``(done, total, failed)`` after every change. Counts are unmasked elements;
        they only grow, also when a range is re-run after a crash. Elements resumed from a
        checkpoint are the bar's starting point, not part of its rate: the rate and ETA are
        this run's, and the final rate is ``result.stats.rate``.
    checkpoint : str, path, store or chunkmap.Checkpoint, optional
        Persist every finished chunk there (a directory, or a ``redis://`` URL) and reuse
        finished chunks when the same call runs again: after a crash, a kill or Ctrl-C, the
        rerun computes only the rest and returns the same result as an uninterrupted run.
        Runs are told apart by their identity: the function's code and bound state, ``kwargs``,
        ``skip``, ``timeout``, an explicit ``chunks``, ``outputs``, the inputs' contents and the mask (see
        :mod:`chunkmap.checkpoint.identity`; ``chunkmap.Checkpoint(location, name=...)`` names
        the function yourself). A different call starts a fresh run beside the old one, with a
        :class:`~chunkmap.errors.CheckpointWarning` saying what differs; stored records that do
        not prove they belong to this run are computed again (``result.stats.rejected``). The
        same call running elsewhere at the moment raises
        :class:`~chunkmap.errors.CheckpointBusyError`. With lazy inputs ``output=`` is the
        checkpoint (``checkpoint=`` raises :class:`~chunkmap.errors.IdentityError` saying so).
    workers : int or chunkmap.Workers, optional
        How many local worker processes (or threads) call ``func``: an int, or
        ``chunkmap.Workers(count=, setup=, max_calls=, max_memory=)`` to also run a setup once in
        every process that calls ``func`` (each worker, each replacement, each dask worker's
        workers, the calling process on ``sync`` and ``threads``) and to recycle workers after
        ``max_calls`` calls or above ``max_memory`` resident bytes. Default: dask's
        ``num_workers`` setting, else one per usable CPU. For objects that cannot be pickled
        (SWIG handles), pass ``func=chunkmap.per_worker(factory, ...)``.
    cancel : threading.Event, optional
        Set it (from another thread) to stop the run within about a second: busy worker
        processes are killed, in-process evaluations stop between two blocks of elements, and
        ``run`` raises :class:`~chunkmap.errors.RunCancelledError`. With a checkpoint, finished
        chunks are kept (Ctrl-C does the same and raises ``KeyboardInterrupt``).
    output : str, path or zarr store, optional
        Write the results into this zarr group instead of returning them through the client
        (:mod:`chunkmap.stored`): each task writes its box (one float64 array per output,
        NaN where nothing was computed, an int8 ``status`` array: 0 computed, 1 masked,
        2 exception, 3 crash, 4 timeout; failures per box), the client keeps counts only,
        and the result reads the store when asked (``to_xarray()`` opens it with dask). The
        store doubles as the checkpoint: the same call with the same ``output=`` resumes from
        the finished boxes; a store of another call raises
        :class:`~chunkmap.errors.OutputStoreError` and is left untouched. Inputs are laid out
        in boxes whatever they are.
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
        ``chunks``, ``skip``, ``kwargs`` or ``outputs`` out of their domain.
    chunkmap.errors.SchedulerError
        An unknown scheduler, or no scheduler at the address (``SchedulerUnreachableError``).
    chunkmap.errors.ElementError
        ``func`` raised an exception not listed in ``skip``.
    chunkmap.errors.OutputCountError
        With ``outputs=``, ``func`` returned something other than a sequence of one value per
        output (also an ``ElementError`` and a ``ValueError``); it names the element's
        coordinates and inputs, what ``func`` returned and how many values were expected.
    chunkmap.errors.CheckpointError
        The checkpoint cannot be written or trusted (a full disk, a corrupt manifest), another
        live run holds it (``CheckpointBusyError``), or ``func`` cannot be fingerprinted
        (``IdentityError``).
    chunkmap.errors.NotPicklableError
        ``func``, ``kwargs`` or the setup cannot be sent to the worker processes of
        ``processes`` or a cluster (before any work).
    chunkmap.errors.SetupError
        The ``Workers`` setup or a ``per_worker`` factory raised.
    chunkmap.errors.UnpicklableResultError
        ``func`` returned a value that cannot be sent back from a worker process.
    chunkmap.errors.RunCancelledError
        The ``cancel=`` event was set. Ctrl-C raises ``KeyboardInterrupt`` with the same one-line
        account of what was done and kept.

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
    spec = Workers.of(workers)
    execution = Execution(options.function(func), options.skip_classes(skip), options.call_kwargs(kwargs),
                          options.call_timeout(timeout), spec.setup, spec.max_calls, spec.max_memory,
                          options.output_names(outputs), cancelled=Cancellation(options.cancel_event(cancel)))
    chunks = options.chunk_option(chunks)
    location = Checkpoint.of(checkpoint) if checkpoint is not None else None
    backends.prewarm(scheduler, client, spec.count, execution)  # workers start while dask is imported
    # a Checkpoint made of a path or URL for this run closes its connections when the run ends
    with one_interrupt(), backends.resolve(scheduler, client, spec.count) as backend, \
            contextlib.closing(location) if location is not checkpoint else contextlib.nullcontext():
        backend.prepare(execution)
        plan = make_plan(arrays, mask=mask, boxes=output is not None)
        if isinstance(plan, BlockPlan) and location is not None:
            raise IdentityError(LAZY_CHECKPOINT)
        total = plan.elements if isinstance(plan, BlockPlan) else plan.unmasked
        saved = location.open_run(plan, execution, chunks) if location is not None else None
        reporter = None
        deliveries: list[Delivery] = []  # the run's, once laid out (what an interrupt reports)
        try:
            reporter = make_progress(progress, total, desc=bar_name(func), started=started)
            execution.progress = reporter.advance if reporter is not None else None
            if output is not None:
                outputs, resumed = _compute_stored(plan.with_chunks(chunks).regular(), output, chunks, execution,
                                                   backend, reporter, deliveries)
            elif isinstance(plan, BlockPlan):
                outputs, resumed = _compute_blocks(plan.with_chunks(chunks), execution, backend, reporter,
                                                   deliveries)
            else:
                outputs, resumed = _compute(plan, chunks, execution, backend, saved, reporter, deliveries)
            if execution.cancelled.by_caller():
                raise RunCancelledError(CANCELLED)
        except BaseException as error:
            if not isinstance(error, KeyboardInterrupt) and not execution.cancelled.by_caller():
                raise
            # Ctrl-C or the caller's cancel: one line saying what is kept, without the frames of dask
            done = deliveries[0].done() if deliveries else 0
            kept = (f"finished chunks are kept in {location.store.location}; run the same call again to resume"
                    if saved is not None else f"finished boxes are kept in output={str(output)!r}; run the same call "
                    f"again to resume" if output is not None else "nothing was kept: pass checkpoint= to keep work")
            if isinstance(error, KeyboardInterrupt):
                raise KeyboardInterrupt(f"interrupted after {done:,} of {total:,} elements; {kept}") from None
            raise RunCancelledError(f"{CANCELLED} after {done:,} of {total:,} elements; {kept}") from None
        finally:
            if reporter is not None:
                reporter.close()
            if saved is not None:
                saved.close()
                _show(saved)
    result = outputs.result()
    result.labels = plan.labels
    wall_time = time.perf_counter() - started
    failed = result.failed_count
    calls = len(result) + failed - resumed
    result.stats = Stats(
        elements=plan.elements,
        masked=plan.elements - len(result) - failed,
        computed=len(result),
        failed=failed,
        wall_time=wall_time,
        rate=calls / wall_time if wall_time > 0 else float(calls),
        resumed=resumed,
        rejected=saved.rejected if saved is not None else 0,
        scheduler=backend.name,
        workers=backend.workers,
    )
    return result


def _compute(plan: Plan, chunks: int | str, execution: Execution, backend: Backend, saved: RunCheckpoint | None,
             reporter: Progress | None, deliveries: list[Delivery]) -> tuple[Outputs, int]:
    """Lay out the chunks, take the checkpoint's finished ones, compute the rest: the outputs and resumed count.

    The run's :class:`Delivery` is appended to ``deliveries`` as soon as it exists.
    """
    layout = saved.stored_layout() if saved is not None else None
    pilot_outputs: list[ChunkOutput] = []
    if layout is None and chunks != "auto":
        layout = ((), chunks, 0)
    elif layout is None and plan.unmasked:
        execute = functools.partial(backend.execute, plan.source, execution)
        layout = (*sizing.pilot(plan, backend.workers, execute, pilot_outputs.append), backend.workers)
    plan = plan.with_layout(*(layout or ((), 1, 0)))
    deliver = Delivery(plan.chunks, Outputs(plan.shape, plan.chunks, execution.outputs), saved, reporter)
    deliveries.append(deliver)
    resumed = 0
    if saved is not None:
        saved.begin(plan)
        resumed = deliver.resume(saved.resume(plan, lambda chunk: plan.source.flat_index(chunk.start, chunk.stop)))
        _show(saved, depth=1)
    for output in pilot_outputs:
        deliver(output)
    backend.execute(plan.source, execution, deliver.remaining(), deliver)
    if saved is not None:
        saved.finish()
    return deliver.outputs, resumed


def _compute_blocks(plan: BlockPlan, execution: Execution, backend: Backend, reporter: Progress | None,
                    deliveries: list[Delivery]) -> tuple[BlockOutputs, int]:
    """Compute the boxes of a run over lazy inputs: the outputs, and 0 resumed."""
    deliver = Delivery(plan.chunks, BlockOutputs(plan.shape, plan.chunks, execution.outputs), None, reporter)
    deliveries.append(deliver)
    backend.execute(plan.source, execution, plan.chunks, deliver)
    return deliver.outputs, 0


def _compute_stored(plan: BlockPlan, output: Any, chunks: int | str, execution: Execution, backend: Backend,
                    reporter: Progress | None, deliveries: list[Delivery]) -> tuple[StoredOutputs, int]:
    """Compute the boxes into the ``output=`` store, resuming from the boxes it holds: the outputs and resumed count."""
    store = OutputStore.open(output, plan, execution, chunks, backend.name)
    plan = replace(plan, source=replace(plan.source, writer=store.writer()))
    deliver = Delivery(plan.chunks, StoredOutputs(store, plan), None, reporter)
    deliveries.append(deliver)
    try:
        resumed = deliver.resume(store.finished())
        backend.execute(plan.source, execution, deliver.remaining(), deliver)
    finally:
        store.close()  # the finished boxes are kept and the store released, also on Ctrl-C or an error
    return deliver.outputs, resumed


def _show(saved: RunCheckpoint, depth: int = 0) -> None:
    """Warn with the checkpoint's notices so far, once each, from the line that called ``run``.

    ``depth``: the calls between ``run`` and this function's caller.
    """
    while saved.notices:
        warnings.warn(saved.notices.pop(0), CheckpointWarning, stacklevel=3 + depth)
