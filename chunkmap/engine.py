"""Run chunks as a ``dask.bag``, one chunk per partition: the only module that imports dask.

Every backend's work is the same bag, ``from_sequence(chunks).map(task)``, so dask users see
and compose it; :mod:`chunkmap.backends` says where the task evaluates a chunk. Its tasks are
named after the run's function, ``chunkmap-<name>-<token>`` (:func:`task_name`), so the dask
dashboard shows what runs.

- :func:`compute_local` runs the bag on dask's synchronous or threaded scheduler. Its task
  evaluates a chunk (in this thread, or on a worker of chunkmap's own process pool) and hands
  the output to ``deliver`` itself, returning nothing: a local dask compute holds every task's
  result until the whole graph is done, so returning the outputs would keep all of them alive
  at the end of the run, beside the result they are copied into (twice the result's memory,
  where the measured peak is 1.11x; ``benchmarks/README.md``).
- :func:`compute_distributed` submits the bag to a cluster, its inputs and its execution
  scattered once (the execution as :mod:`chunkmap.shipping` pickles it: the user's own modules
  that the workers cannot import go by value); each dask worker evaluates its chunks in a
  process pool of its own. Outputs come back as futures, each delivered and released as it
  completes, so the client holds one at a time.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable

import dask.bag as db
import dask.local
import dask.threaded

from .kernel import ChunkOutput, Execution
from .plan import Chunk
from .source import Source
from .workers import underlying

__all__ = ["compute_local", "compute_distributed", "task_name", "chunk_bag"]

#: dask.utils.funcname keeps 50 characters of a task's name
NAME_LENGTH = 50


def task_name(func: Callable[..., Any]) -> str:
    """The name of a run's dask tasks: ``chunkmap-`` and the words of ``func``'s name, joined by hyphens.

    The dashboard groups tasks by the leading words of their keys made of letters only
    (``dask.utils.key_split``), so the name is spelled that way. A ``functools.partial`` is
    named after its function, a :func:`~chunkmap.per_worker` after its factory.

    Examples
    --------
    >>> from chunkmap.stub import slowlib
    >>> task_name(slowlib.slow_computation), task_name(slowlib.Model.predict), task_name(lambda x: x)
    ('chunkmap-slow-computation', 'chunkmap-Model-predict', 'chunkmap-lambda')
    """
    func = underlying(func)
    qualname = getattr(func, "__qualname__", None) or type(func).__name__
    words = re.findall(r"[A-Za-z]+", qualname.replace("<locals>", "")) or ["func"]
    name = "chunkmap"
    for word in words:
        if len(name) + 1 + len(word) > NAME_LENGTH:
            break
        name += "-" + word
    return name


def chunk_bag(chunks: list[Chunk], name: str) -> db.Bag:
    """``db.from_sequence(chunks, npartitions=len(chunks))`` with its keys named ``name-<token>``.

    Mapped with a task of the same name (as dask names a map after its function), the two
    layers fuse into tasks keeping the name (``dask.optimization.default_fused_keys_renamer``).
    """
    key = f"{name}-{uuid.uuid4().hex}"
    return db.Bag({(key, i): [chunk] for i, chunk in enumerate(chunks)} or {(key, 0): []}, key, max(1, len(chunks)))


def compute_local(
    chunks: list[Chunk],
    evaluate: Callable[[Chunk], ChunkOutput | None],
    deliver: Callable[[ChunkOutput], None],
    execution: Execution,
    workers: int,
    threaded: bool = True,
) -> None:
    """Evaluate ``chunks`` with ``evaluate`` on ``workers`` threads (or in this one), delivering each output.

    ``deliver`` may be called from several threads at once. On an exception (Ctrl-C, an element
    error) ``execution.cancelled`` is set, so that busy workers stop at once.
    """
    task = LocalTask(evaluate, deliver, execution)
    bag = chunk_bag(chunks, task.__name__).map(task)
    try:
        # the scheduler functions themselves: named ones make dask import distributed (~0.4 s)
        bag.compute(scheduler=dask.threaded.get if threaded else dask.local.get_sync, num_workers=workers)
    except BaseException:
        execution.cancelled.set()
        raise


class LocalTask:
    """The bag's task on a local scheduler: evaluate one chunk and deliver its output.

    It names itself for dask: ``__name__`` is the run's :func:`task_name`, and ``__dask_tokenize__``
    a token of its own (hashing its inputs to name the graph would read every byte of them on each
    compute).
    """

    def __init__(self, evaluate: Callable[[Chunk], ChunkOutput | None], deliver: Callable[[ChunkOutput], None],
                 execution: Execution) -> None:
        self.evaluate = evaluate
        self.deliver = deliver
        self.cancelled = execution.cancelled
        self.token = uuid.uuid4().hex
        self.__name__ = task_name(execution.func)

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, chunk: Chunk) -> None:
        if not self.cancelled.is_set():
            output = self.evaluate(chunk)
            if output is not None:  # None: cancelled while it ran
                self.deliver(output)


def compute_distributed(
    client: Any, source: Source, chunks: list[Chunk], execution: Execution, deliver: Callable[[ChunkOutput], None]
) -> None:
    """Evaluate ``chunks`` on ``client``'s cluster, delivering each output as it completes.

    Raises
    ------
    WorkerImportError
        Before any work: a worker cannot import a module the run needs, and it is not the
        user's own source (:func:`chunkmap.shipping.ship`).
    """
    from distributed import as_completed

    from .shipping import ship

    shipped = ship(client, execution)
    source, shipped = client.scatter([source, shipped], hash=False)
    task = RemoteTask(task_name(execution.func))
    futures = client.compute(chunk_bag(chunks, task.__name__).map(task, source, shipped).to_delayed())
    try:
        for future in as_completed(futures, loop=client.loop):
            (output,) = future.result()
            future.release()
            deliver(output)
            if execution.progress is not None:
                execution.progress(output.unmasked)
            if execution.cancelled.is_set():
                return  # the caller's cancel=: the run raises; the futures left are cancelled below
    finally:
        client.cancel(futures)
        source.release()
        shipped.release()


class RemoteTask:
    """The bag's task on a dask worker, named (``__name__``) after the run's function: :func:`remote_task`."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __dask_tokenize__(self) -> str:
        return self.__name__

    def __call__(self, chunk: Chunk, source: Source, shipped: Any) -> ChunkOutput:
        return remote_task(chunk, source, shipped.load())

    def __reduce__(self):
        return (RemoteTask, (self.__name__,))


def remote_task(chunk: Chunk, source: Source, execution: Execution) -> ChunkOutput:
    """Evaluate one chunk on a dask worker, in that worker's own process pool."""
    from distributed import get_worker

    from .local import evaluate_chunk, shared_pool

    try:
        size = get_worker().state.nthreads
    except ValueError:  # not inside a dask worker (e.g. the client's own process)
        size = 1
    return source.finish(chunk, evaluate_chunk(chunk, source, execution, shared_pool(size, *execution.pool_key())))
