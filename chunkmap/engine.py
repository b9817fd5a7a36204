"""Run chunks as a ``dask.bag``, one chunk per partition: the only module that imports dask.

Every backend's work is the same bag, ``from_sequence(chunks).map(task)``, so dask users see
and compose it; :mod:`chunkmap.backends` says where the task evaluates a chunk.

- :func:`compute_local` runs the bag on dask's synchronous or threaded scheduler. Its task
  evaluates a chunk (in this thread, or on a worker of chunkmap's own process pool) and hands
  the output to ``deliver`` itself, returning nothing: a local dask compute holds every task's
  result until the whole graph is done, so returning the outputs would keep all of them alive
  at the end of the run, beside the result they are copied into (twice the result's memory,
  where the measured peak is 1.11x; ``benchmarks/README.md``).
- :func:`compute_distributed` submits the bag to a cluster, its inputs scattered once; each
  dask worker evaluates its chunks in a process pool of its own. Outputs come back as futures,
  each delivered and released as it completes, so the client holds one at a time.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import dask.bag as db
import dask.local
import dask.threaded

from .kernel import ChunkOutput, Execution
from .plan import Chunk
from .source import Source

__all__ = ["compute_local", "compute_distributed"]


def compute_local(
    chunks: list[Chunk],
    evaluate: Callable[[Chunk], ChunkOutput],
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
    bag = db.from_sequence(chunks, npartitions=len(chunks)).map(task)
    try:
        # the scheduler functions themselves: named ones make dask import distributed (~0.4 s)
        bag.compute(scheduler=dask.threaded.get if threaded else dask.local.get_sync, num_workers=workers)
    except BaseException:
        execution.cancelled.set()
        raise


class LocalTask:
    """The bag's task on a local scheduler: evaluate one chunk and deliver its output.

    It names itself for dask (``__dask_tokenize__``): hashing its inputs to name the graph would
    read every byte of them on each compute.
    """

    def __init__(self, evaluate: Callable[[Chunk], ChunkOutput], deliver: Callable[[ChunkOutput], None],
                 execution: Execution) -> None:
        self.evaluate = evaluate
        self.deliver = deliver
        self.cancelled = execution.cancelled
        self.token = uuid.uuid4().hex

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, chunk: Chunk) -> None:
        if not self.cancelled.is_set():
            self.deliver(self.evaluate(chunk))


def compute_distributed(
    client: Any, source: Source, chunks: list[Chunk], execution: Execution, deliver: Callable[[ChunkOutput], None]
) -> None:
    """Evaluate ``chunks`` on ``client``'s cluster, delivering each output as it completes."""
    from distributed import as_completed

    source = client.scatter(source, hash=False)
    bag = db.from_sequence(chunks, npartitions=len(chunks))
    futures = client.compute(bag.map(remote_task, source, execution=execution).to_delayed())
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


def remote_task(chunk: Chunk, source: Source, execution: Execution) -> ChunkOutput:
    """The bag's task on a dask worker: evaluate one chunk in that worker's own process pool."""
    from distributed import get_worker

    from .local import evaluate_chunk, shared_pool

    try:
        size = get_worker().state.nthreads
    except ValueError:  # not inside a dask worker (e.g. the client's own process)
        size = 1
    return evaluate_chunk(chunk, source, execution, shared_pool(size, execution.setup_key))
