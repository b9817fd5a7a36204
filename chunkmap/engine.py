"""Run a plan's chunks on dask: the only module that knows dask.

The work is a ``dask.bag`` with one chunk per partition, mapped through the kernel. How the
inputs reach the kernel depends on where it runs:

- ``sync`` and ``threads``: the kernel reads the caller's arrays in place;
- ``processes``: each task pickles as its own chunk of unmasked values (:class:`ChunkTask`), cut
  when the task is sent, so nothing but the in-flight chunks is ever copied;
- distributed: the inputs are scattered once and every task refers to them, so each worker
  receives them at most once.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import dask
import dask.bag as db
from dask.system import CPU_COUNT

from .errors import SchedulerError, SchedulerUnreachableError
from .kernel import ChunkResult, evaluate
from .plan import Chunk, Plan
from .source import ChunkTask, Source

__all__ = ["Scheduler", "resolve_scheduler", "execute"]

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
            return Scheduler(LOCAL[scheduler], CPU_COUNT)
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
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
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


def execute(
    plan: Plan,
    func: Callable[..., Any],
    skip: tuple[type[BaseException], ...],
    kwargs: Mapping[str, Any] | None,
    scheduler: Scheduler,
) -> list[ChunkResult]:
    """Evaluate every chunk of ``plan`` on ``scheduler``; the results come back in chunk order."""
    if not plan.chunks:
        return []
    options = {"func": func, "skip": skip, "kwargs": kwargs}
    if scheduler.name == "distributed":
        source = scheduler.client.scatter(plan.source, hash=False)
        try:
            bag = db.from_sequence(plan.chunks, npartitions=len(plan.chunks))
            kernel = functools.partial(run_chunk, **options)
            return bag.map(kernel, source).compute(scheduler=scheduler.client)
        finally:
            source.release()
    tasks = [ChunkTask(chunk, plan.source) for chunk in plan.chunks]
    bag = db.from_sequence(tasks, npartitions=len(tasks))
    kernel = functools.partial(run_task, **options)
    return bag.map(kernel).compute(scheduler=scheduler.name, num_workers=scheduler.workers)


def run_chunk(chunk: Chunk, source: Source, **options: Any) -> ChunkResult:
    """The bag's kernel when the source is a separate argument (a scattered future)."""
    return evaluate(chunk.index, chunk.start, chunk.stop, source, **options)


def run_task(task: ChunkTask, **options: Any) -> ChunkResult:
    """The bag's kernel when each item carries its own source (local schedulers)."""
    return run_chunk(task.chunk, task.source, **options)
