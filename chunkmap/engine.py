"""Run a plan's chunks on dask: the only module that knows dask.

The work is a ``dask.bag`` with one chunk per partition, mapped through a per-chunk task. Where
the task evaluates ``func`` depends on the scheduler:

- ``sync`` and ``threads``: in the calling process, reading the caller's arrays in place;
- ``processes``: dask's threaded scheduler runs one task per worker process of a
  :class:`~chunkmap.workers.WorkerPool`; each task sends its chunk's unmasked values to its
  worker and waits, so a worker that crashes or hangs costs one element
  (:mod:`chunkmap.isolation`), and the pool lives on for the next run;
- distributed: the inputs are scattered once, every task refers to them, and each dask worker
  evaluates its chunks in a worker pool of its own, with the same isolation.

Every chunk's output is handed to a ``deliver`` callback as it completes (the run's outputs,
progress and checkpoint).
"""

from __future__ import annotations

import re
import time
import uuid
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import dask
import dask.bag as db
import dask.local
import dask.threaded

from .errors import OptionError, SchedulerError, SchedulerUnreachableError
from .isolation import evaluate_isolated
from .kernel import ChunkOutput, ElementFailure, evaluate
from .plan import Chunk
from .source import ArraySource, Source
from .transport import GatheredInputs, SourceInputs
from .workers import cpu_count, shared_pool

__all__ = ["Scheduler", "Execution", "resolve_scheduler", "execute"]

LOCAL = {
    "sync": "sync",
    "synchronous": "sync",
    "single-threaded": "sync",
    "threads": "threads",
    "threading": "threads",
    "processes": "processes",
    "multiprocessing": "processes",
}
#: "host:port", "tcp://host:port", "tls://...", "inproc://...", "ws://...", ...
ADDRESS = re.compile(r"^([a-z]+://.+|[\w.\-]+:\d+)$")


@dataclass
class Scheduler:
    """Where a run executes: a local dask scheduler or a distributed client.

    A client that chunkmap connected to itself (from an address) is closed by :meth:`close`.
    """

    name: str
    workers: int
    client: Any = None
    owns_client: bool = False

    @property
    def isolates(self) -> bool:
        """Whether ``func`` runs in worker processes that may crash without ending the run."""
        return self.name in ("processes", "distributed")

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_scheduler(scheduler: Any = None, client: Any = None) -> Scheduler:
    """Turn the ``scheduler=`` and ``client=`` options of :func:`chunkmap.run` into a Scheduler.

    Examples
    --------
    >>> resolve_scheduler("threads").name, resolve_scheduler().name
    ('threads', 'processes')
    """
    if client is not None:
        _check_client(client, "client")
        if scheduler not in (None, "distributed", client):
            raise SchedulerError(
                f"scheduler={scheduler!r} contradicts client={client!r}; pass client= alone to run "
                f"on that cluster, or scheduler= alone"
            )
        return _distributed(client, owns=False)
    if scheduler is None:
        scheduler = "processes"
    if isinstance(scheduler, str):
        if scheduler in LOCAL:
            return Scheduler(LOCAL[scheduler], cpu_count())
        if scheduler == "distributed":
            return _distributed(_current_client(), owns=False)
        if ADDRESS.match(scheduler):
            return _distributed(_connect(scheduler), owns=True)
    elif _is_client(scheduler):
        return _distributed(scheduler, owns=False)
    raise SchedulerError(
        f"unknown scheduler {scheduler!r}; expected 'sync', 'threads', 'processes' (the default), "
        f"'distributed' (the current distributed.Client), a distributed.Client, or a scheduler "
        f"address such as 'tcp://127.0.0.1:8786'"
    )


def _is_client(obj: Any) -> bool:
    from distributed import Client

    return isinstance(obj, Client)


def _check_client(client: Any, what: str) -> None:
    if not _is_client(client):
        raise SchedulerError(f"{what} must be a distributed.Client; got {type(client).__name__}")


def _current_client() -> Any:
    from distributed import Client

    try:
        return Client.current()
    except ValueError:
        raise SchedulerError(
            "scheduler='distributed' runs on the current distributed.Client, and there is none; "
            "create one first (client = distributed.Client(...)) or pass client= or an address"
        ) from None


def _connect(address: str) -> Any:
    from distributed import Client

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachableError(
            f"no dask scheduler answered at {address!r} within {timeout} ({exc}); expected a "
            f"running scheduler there: start one with `dask scheduler`, or check the address. "
            f"The wait is dask's distributed.comm.timeouts.connect setting"
        ) from None


def _distributed(client: Any, owns: bool) -> Scheduler:
    workers = sum(client.nthreads().values()) or 1
    return Scheduler("distributed", workers, client, owns)


@dataclass
class Execution:
    """What a run executes: the function and how each element's call is guarded."""

    func: Callable[..., Any]
    skip: tuple[type[BaseException], ...] = ()
    kwargs: Mapping[str, Any] | None = None
    timeout: float | None = None
    progress: Callable[[int], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __reduce__(self):
        # what a dask worker needs; the progress hook and the cancel event stay here
        return (Execution, (self.func, self.skip, self.kwargs, self.timeout))


def execute(
    source: Source,
    chunks: list[Chunk],
    execution: Execution,
    scheduler: Scheduler,
    deliver: Callable[[ChunkOutput], None],
) -> None:
    """Evaluate ``chunks`` of ``source`` on ``scheduler``, handing each output to ``deliver`` as it completes.

    ``deliver`` may be called from several threads at once.

    Raises
    ------
    OptionError
        ``timeout`` on a scheduler that cannot isolate calls (sync, threads).
    ElementError
        ``func`` raised an exception ``skip`` does not list.
    """
    if execution.timeout is not None and not scheduler.isolates:
        raise OptionError(
            f"timeout= needs calls isolated in worker processes, which scheduler={scheduler.name!r} "
            f"does not do (a hung call cannot be stopped inside this process); use "
            f"scheduler='processes' or a distributed cluster"
        )
    if not chunks:
        return
    if scheduler.name == "distributed":
        _execute_distributed(source, chunks, execution, scheduler.client, deliver)
        return
    task = LocalTask(source, execution, deliver, scheduler.workers if scheduler.name == "processes" else 0)
    bag = db.from_sequence(chunks, npartitions=len(chunks)).map(task)
    try:
        # the scheduler functions themselves: named ones make dask import distributed (~0.4 s)
        bag.compute(scheduler=dask.local.get_sync if scheduler.name == "sync" else dask.threaded.get,
                    num_workers=scheduler.workers)
    except BaseException:
        execution.cancelled.set()  # busy workers stop at once instead of finishing their chunk
        raise


class LocalTask:
    """The bag's task on a local scheduler: evaluate one chunk and deliver its output.

    It names itself for dask (``__dask_tokenize__``): hashing its inputs to name the graph would
    read every byte of them on each compute.
    """

    def __init__(self, source: Source, execution: Execution, deliver: Callable, pool_size: int) -> None:
        self.source = source
        self.execution = execution
        self.deliver = deliver
        self.pool_size = pool_size
        self.token = uuid.uuid4().hex

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, chunk: Chunk) -> None:
        execution = self.execution
        if execution.cancelled.is_set():
            return
        if self.pool_size:
            output = _evaluate_isolated(chunk, self.source, execution, shared_pool(self.pool_size))
        else:
            output = evaluate(chunk.index, chunk.start, chunk.stop, self.source, execution.func,
                              execution.skip, execution.kwargs)
            if execution.progress is not None:
                execution.progress(chunk.size)
        self.deliver(output)


def _evaluate_isolated(chunk: Chunk, source: ArraySource, execution: Execution, pool: Any) -> ChunkOutput:
    started = time.perf_counter()
    if source.readable_elsewhere():  # files (and small arrays): each worker reads its own slice
        flat_index = source.flat_index(chunk.start, chunk.stop)
        inputs = SourceInputs(source, chunk.start, chunk.stop)
    else:  # in-memory arrays: the chunk's values travel through the worker's shared buffer
        flat_index, columns = source.gather(chunk.start, chunk.stop)
        inputs = GatheredInputs(columns)
    try:
        evaluation = evaluate_isolated(inputs, execution.func, execution.skip, execution.kwargs, pool,
                                       execution.timeout, execution.cancelled, execution.progress)
    except ElementFailure as failure:
        raise failure.to_element_error(int(flat_index[failure.position]), source.shape) from failure.__cause__
    return ChunkOutput(chunk.index, flat_index, evaluation, time.perf_counter() - started)


def _remote_task(chunk: Chunk, source: Source, execution: Execution) -> ChunkOutput:
    """The bag's task on a dask worker: evaluate one chunk in that worker's own process pool."""
    from distributed import get_worker

    try:
        size = get_worker().state.nthreads
    except ValueError:  # not inside a dask worker (e.g. the client's own process)
        size = 1
    return _evaluate_isolated(chunk, source, execution, shared_pool(size))


def _execute_distributed(source: Source, chunks: list[Chunk], execution: Execution, client: Any, deliver: Callable) -> None:
    from distributed import as_completed

    source = client.scatter(source, hash=False)
    bag = db.from_sequence(chunks, npartitions=len(chunks))
    futures = client.compute(bag.map(_remote_task, source, execution=execution).to_delayed())
    try:
        for future in as_completed(futures, loop=client.loop):
            (output,) = future.result()
            future.release()
            deliver(output)
            if execution.progress is not None:
                execution.progress(len(output.flat_index))
    finally:
        client.cancel(futures)
        source.release()
