"""Run chunks as dask tasks, one chunk each: the only module that imports dask.

A run's work is a ``dask.bag`` of chunk tasks on every backend, so dask users see and compose it:
one partition, and one task, per chunk (:func:`chunk_task_bag`);
:mod:`chunkmap.backends` says where the task evaluates a chunk. Its tasks are
named after the run's function, ``chunkmap-<name>-<token>`` (:func:`task_name`), so the dask
dashboard shows what runs. A ``from_sequence(chunks).map(task)`` bag would run as two tasks per
chunk on a cluster, and locally as one fused task whose subgraph dask orders at each call
(240 us per chunk on the threaded scheduler, against 90).

- :func:`compute_local` runs the bag on dask's synchronous or threaded scheduler. Its task
  evaluates a chunk (in this thread, or on a worker of chunkmap's own process pool), the
  layout's next one (:class:`LocalTask`), and hands the output to ``deliver`` itself, returning
  nothing: a local dask compute holds every task's
  result until the whole graph is done, so returning the outputs would keep all of them alive
  at the end of the run, beside the result they are copied into (twice the result's memory,
  where the measured peak is 1.11x; ``benchmarks/README.md``).
- :class:`RemoteRun` computes the bag on a cluster, each task annotated with its chunk's place
  so that the scheduler hands them out in the layout's order (dask's own order put the first,
  biggest chunks last), its inputs
  and its execution scattered once per run (the execution as :mod:`chunkmap.shipping` pickles
  it: the user's own modules that the workers cannot import go by value); each dask worker
  evaluates its chunks in a process
  pool of its own. Outputs come back with their futures, gathered in the background and
  delivered in batches as they complete, each released once delivered; the pilot's last chunks
  run on while the rest of the run is submitted.
"""

from __future__ import annotations

import collections
import re
import uuid
from typing import Any, Callable

import dask
import dask.bag as db
import dask.local
import dask.threaded

from .kernel import ChunkOutput, Execution
from .plan import Chunk
from .source import Source
from .workers import underlying

__all__ = ["compute_local", "RemoteRun", "task_name", "chunk_task_bag"]

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


def chunk_task_bag(chunks: list[Chunk], task: Callable[..., Any], *args: Any) -> db.Bag:
    """The bag of ``[task(chunk, *args)]`` per chunk: one partition, and one task, per chunk.

    Its keys are ``(task.__name__-<token>, i)``; each task is annotated with priority ``-i``, so
    that a cluster's scheduler hands the chunks out in their order (local schedulers ignore it:
    :class:`LocalTask`). ``args`` may be futures.

    >>> bag = chunk_task_bag([Chunk(0, 0, 3, 3), Chunk(1, 3, 5, 2)], lambda chunk, n: chunk.size * n, 10)
    >>> bag.npartitions, bag.compute(scheduler="sync")
    (2, [30, 20])
    """
    key = f"{getattr(task, '__name__', 'chunkmap')}-{uuid.uuid4().hex}"
    graph = {(key, i): (_partition, task, chunk, *args) for i, chunk in enumerate(chunks)}
    with dask.annotate(priority=_layout_priority):
        return db.Bag(graph, key, len(chunks))


def _partition(task: Callable[..., Any], chunk: Chunk, *args: Any) -> list[Any]:
    return [task(chunk, *args)]


def _layout_priority(key: tuple[str, int]) -> int:
    return -key[1]


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
    task = LocalTask(evaluate, deliver, execution, chunks)
    bag = chunk_task_bag(chunks, task)
    try:
        # the scheduler functions themselves: named ones make dask import distributed (~0.4 s)
        bag.compute(scheduler=dask.threaded.get if threaded else dask.local.get_sync, num_workers=workers)
    except BaseException:
        execution.cancelled.set()
        raise


class LocalTask:
    """The bag's task on a local scheduler: evaluate the layout's next chunk and deliver its output.

    Each task evaluates one chunk, and the task dask starts ``k``-th evaluates the layout's chunk
    ``k``, whichever partition it was given: dask's local schedulers start independent tasks in
    ``dask.order``'s order, which breaks ties on the keys, by descending string
    (``9, 8, 7, 6, 59, 58, ..., 10, 1, 0``), and that order ran the layout's first, biggest chunks
    last, after its shrinking tail, which then could not even out the workers' ends.

    It names itself for dask: ``__name__`` is the run's :func:`task_name`, and ``__dask_tokenize__``
    a token of its own (hashing its inputs to name the graph would read every byte of them on each
    compute).
    """

    def __init__(self, evaluate: Callable[[Chunk], ChunkOutput | None], deliver: Callable[[ChunkOutput], None],
                 execution: Execution, chunks: list[Chunk]) -> None:
        self.evaluate = evaluate
        self.deliver = deliver
        self.cancelled = execution.cancelled
        self.pending = collections.deque(chunks)  # popleft is atomic: one chunk per task, in layout order
        self.token = uuid.uuid4().hex
        self.__name__ = task_name(execution.func)

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, partition: Chunk) -> None:
        if not self.cancelled.is_set():
            output = self.evaluate(self.pending.popleft())
            if output is not None:  # None: cancelled while it ran
                self.deliver(output)


#: scatter a run's inputs to every worker when all the copies together are at most this many bytes
#: (each worker's first chunk then starts at once); larger ones go to one worker, and the others
#: fetch them from their peers as their first chunk needs them
BROADCAST_BYTES = 64 << 20


def _nbytes(source: Source) -> int:
    """The bytes of ``source``'s in-memory arrays (0 for inputs it reads from elsewhere)."""
    arrays = [*getattr(source, "arrays", ()), getattr(source, "valid", None)]
    return sum(int(getattr(array, "nbytes", 0) or 0) for array in arrays)


class RemoteRun:
    """One run's work on ``client``'s cluster: its source and execution scattered once, for every ``execute``.

    Chunks still running when a ``deliver`` returned :data:`chunkmap.sizing.RELEASE` (the pilot
    has measured enough) are carried over to the next :meth:`execute` listing them, which waits
    for them instead of submitting them again: the pilot is no barrier across the cluster.

    Raises
    ------
    WorkerImportError
        Before any work: a worker cannot import a module the run needs, and it is not the
        user's own source (:func:`chunkmap.shipping.ship`).
    """

    def __init__(self, client: Any, source: Source, execution: Execution) -> None:
        from .shipping import ship

        self.client, self.execution, self.source_object = client, execution, source
        self.task = RemoteTask(task_name(execution.func))
        shipped = ship(client, execution)
        copies = (_nbytes(source) + len(shipped.payload)) * len(client.nthreads())
        self.source, self.shipped = client.scatter([source, shipped], hash=False, broadcast=copies <= BROADCAST_BYTES)
        self.carried: dict[Chunk, Any] = {}
        self.chunks: dict[Any, Chunk] = {}  # of each future's key

    def execute(self, chunks: list[Chunk], deliver: Callable[[ChunkOutput], Any]) -> None:
        """Evaluate ``chunks``, delivering each output as it completes; ``deliver`` may return more chunks to run."""
        from distributed import as_completed

        from .sizing import RELEASE

        carried = {chunk: self.carried.pop(chunk) for chunk in chunks if chunk in self.carried}
        running = dict(carried)
        running.update(self._submit([chunk for chunk in chunks if chunk not in carried]))
        completed = as_completed(list(running.values()), with_results=True, loop=self.client.loop)
        try:
            for batch in completed.batches():
                more: list[Chunk] = []
                released = False
                for future, result in batch:
                    if future.status != "finished":
                        future.result()  # raises the task's error (or its cancellation)
                    (output,) = result  # the chunk's partition of the bag
                    del running[self.chunks[future.key]]
                    future.release()
                    answer = deliver(output)
                    if self.execution.progress is not None:
                        self.execution.progress(output.unmasked)
                    if answer is RELEASE:
                        released = True
                    elif answer:
                        more += answer
                if self.execution.cancelled.is_set():
                    return  # the caller's cancel=: the run raises; the futures left are cancelled below
                if released:
                    self.carried.update(running)
                    running.clear()
                    return
                if more:
                    submitted = self._submit(more)
                    running.update(submitted)
                    completed.update(list(submitted.values()))
        finally:
            self.client.cancel(list(running.values()))

    def _submit(self, chunks: list[Chunk]) -> dict[Chunk, Any]:
        """Compute the bag of ``chunks`` (:func:`chunk_task_bag`), its tasks handed out in their order."""
        if not chunks:
            return {}
        bag = chunk_task_bag(chunks, self.task, self.source, self.shipped)
        futures = self.client.compute(bag.to_delayed(optimize_graph=False))
        self.chunks.update((future.key, chunk) for future, chunk in zip(futures, chunks))
        return dict(zip(chunks, futures))

    def close(self) -> None:
        """Cancel the chunks carried over and release the scattered source and execution."""
        futures = [*self.carried.values(), self.source, self.shipped]
        self.carried.clear()
        self.client.cancel(futures)  # a round trip: the scheduler has let go of them on return


class RemoteTask:
    """The bag's task on a dask worker, named (``__name__``) after the run's function: :func:`remote_task`."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __dask_tokenize__(self) -> str:
        return self.__name__

    def __call__(self, chunk: Chunk, source: Source, shipped: Any) -> ChunkOutput:
        return remote_task(chunk, source, shipped.load(), shipped.token)

    def __reduce__(self):
        return (RemoteTask, (self.__name__,))


def remote_task(chunk: Chunk, source: Source, execution: Execution, run: str | None = None) -> ChunkOutput:
    """Evaluate one chunk on a dask worker, in that worker's own process pool.

    ``run`` (the token of the run's shipped execution) makes the pool's freshness checks once per
    run on each worker instead of once per chunk (:func:`chunkmap.local.shared_pool`).
    """
    from distributed import get_worker

    from .local import evaluate_chunk, shared_pool

    try:
        size = get_worker().state.nthreads
    except ValueError:  # not inside a dask worker (e.g. the client's own process)
        size = 1
    pool = shared_pool(size, *execution.pool_key(), run=run)
    return source.finish(chunk, evaluate_chunk(chunk, source, execution, pool))
