"""chunkmap's own process pool: worker processes that may crash or hang without ending the run.

numpy, the standard library, cloudpickle and :mod:`chunkmap.shm`; never dask. The engine uses
three names:

- :func:`evaluate_chunk` evaluates one chunk on a pool's workers (on a local ``processes`` run,
  and inside every dask worker of a cluster);
- :func:`shared_pool` is the process-wide pool of a given size, started on first use and reused
  across runs; :func:`shutdown` stops it.

Inside, one module per concept: :mod:`~chunkmap.local.pool` (the processes, their pipes and
heartbeats), :mod:`~chunkmap.local.starter` and :mod:`~chunkmap.local.template` (workers forked
from a template process that imported everything once: a restart costs a fork),
:mod:`~chunkmap.local.child` (the worker's entry point), :mod:`~chunkmap.local.isolation` (how a
crash or a hang costs one element), :mod:`~chunkmap.local.transport` (how a chunk's inputs reach a
worker) and :mod:`~chunkmap.local.freshness` (when the user's code changed: fresh workers).

The names load on first use: a worker process imports ``chunkmap.local.child`` without the pool.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .isolation import evaluate_chunk, evaluate_isolated
    from .pool import WorkerPool, shared_pool, shutdown

__all__ = ["evaluate_chunk", "evaluate_isolated", "WorkerPool", "shared_pool", "shutdown"]

_HOMES = {"evaluate_chunk": "isolation", "evaluate_isolated": "isolation",
          "WorkerPool": "pool", "shared_pool": "pool", "shutdown": "pool"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'chunkmap.local' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
