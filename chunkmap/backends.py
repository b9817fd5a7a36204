"""Where a run's chunks execute: the registry of backends and the choice among them.

A backend is an object with a ``name``, its number of ``workers``, whether it ``isolates``
calls in worker processes (so that a crash or a hang costs one element), and
:meth:`~Backend.execute`, which evaluates chunks and delivers their outputs. Four are
registered in :data:`BACKENDS`:

======================  ==============================================================  ========
name                    where ``func`` runs                                             isolates
======================  ==============================================================  ========
``sync``                in the calling thread (for debugging)                           no
``threads``             in threads of the calling process (functions releasing the GIL) no
``processes``           in chunkmap's own worker processes (:mod:`chunkmap.local`)      yes
``distributed``         in worker processes under each dask worker of a cluster         yes
======================  ==============================================================  ========

:func:`resolve` follows dask's precedence (``dask.base.get_scheduler``): the ``scheduler=``
argument, then dask's ``"scheduler"`` setting (``dask.config.set(scheduler="threads")``; a
``distributed.Client`` made the default sets it to ``"dask.distributed"``), then the active
``distributed.Client``, then ``processes``. dask's own names (``"synchronous"``,
``"threading"``, ``"multiprocessing"``, ...) and scheduler functions (``dask.threaded.get``)
are understood. This module imports dask only when it must read dask's settings; distributed
only once the caller has imported it (a Client cannot exist before).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, ClassVar

from .errors import NotPicklableError, OptionError, SchedulerError, SchedulerUnreachableError
from .kernel import ChunkOutput, Execution, evaluate
from .plan import Chunk
from .source import Source
from .system import cpu_count

__all__ = ["Backend", "BACKENDS", "ALIASES", "resolve", "prewarm", "default_count"]

#: "host:port", "tcp://host:port", "tls://...", "inproc://...", "ws://...", ...
ADDRESS = re.compile(r"^([a-z]+://.+|[\w.\-]+:\d+)$")


class Backend:
    """Where chunks execute. Subclasses set ``name`` and ``isolates`` and implement :meth:`execute`."""

    name: ClassVar[str]
    isolates: ClassVar[bool]

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_count()

    def prepare(self, execution: Execution) -> None:
        """Check, before any work, that this backend can run ``execution``; get the calling process ready.

        Raises
        ------
        OptionError
            An option this backend cannot honour (``timeout`` without isolation).
        NotPicklableError
            ``func``, ``kwargs`` or the setup cannot be sent to worker processes.
        SetupError
            The setup raised in the calling process (``sync``, ``threads``).
        """
        if not self.isolates:
            if execution.timeout is not None:
                raise OptionError(
                    f"timeout= needs calls isolated in worker processes, which scheduler={self.name!r} "
                    f"does not do (a hung call cannot be stopped inside this process); use "
                    f"scheduler='processes' or a distributed cluster"
                )
            if execution.setup is not None:
                execution.setup.run("the calling process")
            return
        for what, value in (("func", execution.func), ("kwargs", execution.kwargs), ("setup", execution.setup)):
            _check_picklable(what, value, self.name)

    def execute(self, source: Source, execution: Execution, chunks: list[Chunk],
                deliver: Callable[[ChunkOutput], None]) -> None:
        """Evaluate ``chunks`` of ``source`` as ``execution`` says, each output to ``deliver`` as it completes.

        ``deliver`` may be called from any thread.

        Raises
        ------
        ElementError
            ``func`` raised an exception ``skip`` does not list.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend acquired for the run (nothing, unless said otherwise)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} workers={self.workers}>"


class SyncBackend(Backend):
    """Every chunk in the calling thread, one after the other."""

    name = "sync"
    isolates = False
    threaded = False

    def execute(self, source: Source, execution: Execution, chunks: list[Chunk],
                deliver: Callable[[ChunkOutput], None]) -> None:
        from .engine import compute_local

        def evaluate_here(chunk: Chunk) -> ChunkOutput | None:
            output = evaluate(chunk.index, chunk.start, chunk.stop, source, execution.func, execution.skip,
                              execution.kwargs, execution.cancelled, execution.outputs)
            if output is None:
                return None
            if execution.progress is not None:
                execution.progress(output.unmasked)
            return source.finish(chunk, output)

        if chunks:
            compute_local(chunks, evaluate_here, deliver, execution, self.workers, self.threaded)


class ThreadsBackend(SyncBackend):
    """Chunks on ``workers`` threads of the calling process, reading the inputs in place."""

    name = "threads"
    threaded = True


class ProcessesBackend(Backend):
    """Chunks on ``workers`` threads, each driving one worker process of the shared pool."""

    name = "processes"
    isolates = True

    def execute(self, source: Source, execution: Execution, chunks: list[Chunk],
                deliver: Callable[[ChunkOutput], None]) -> None:
        from .engine import compute_local
        from .local import evaluate_chunk, shared_pool

        if chunks:
            pool = shared_pool(self.workers, *execution.pool_key())
            compute_local(chunks, lambda chunk: source.finish(chunk, evaluate_chunk(chunk, source, execution, pool)),
                          deliver, execution, self.workers)


class DistributedBackend(Backend):
    """Chunks on a dask.distributed cluster; a client chunkmap connected itself is closed by :meth:`close`.

    The run's source and execution are scattered once for the pilot and the rest of the run
    (:class:`chunkmap.engine.RemoteRun`), and :meth:`execute` runs the chunks a ``deliver``
    returns at once: the pilot streams (:class:`chunkmap.sizing.Pilot`).
    """

    name = "distributed"
    isolates = True

    def __init__(self, client: Any, owns: bool = False) -> None:
        super().__init__(sum(client.nthreads().values()) or 1)
        self.client = client
        self.owns = owns
        self._run: Any = None  # the engine's RemoteRun of the source and execution last executed

    @classmethod
    def current(cls, workers: int | None = None) -> DistributedBackend:
        """On the current ``distributed.Client``.

        ``workers`` is there for the registry's signature: a cluster's size is its own.
        """
        client = _current_client()
        if client is None:
            raise SchedulerError(
                "scheduler='distributed' runs on the current distributed.Client, and there is none; "
                "create one first (client = distributed.Client(...)) or pass client= or an address"
            )
        return cls(client)

    def execute(self, source: Source, execution: Execution, chunks: list[Chunk],
                deliver: Callable[[ChunkOutput], None]) -> None:
        from .engine import RemoteRun

        if not chunks:
            return
        if self._run is None or self._run.source_object is not source or self._run.execution is not execution:
            self._close_run()
            self._run = RemoteRun(self.client, source, execution)
        self._run.execute(chunks, deliver)

    def _close_run(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.close()

    def close(self) -> None:
        try:
            self._close_run()
        finally:
            if self.owns:
                self.client.close()


#: the backends by name, each made with the worker count (None: the default; a cluster has its own)
BACKENDS: dict[str, Callable[..., Backend]] = {
    "sync": SyncBackend,
    "threads": ThreadsBackend,
    "processes": ProcessesBackend,
    "distributed": DistributedBackend.current,
}
#: dask's names for the same schedulers
ALIASES = {
    "synchronous": "sync",
    "single-threaded": "sync",
    "threading": "threads",
    "multiprocessing": "processes",
    "dask.distributed": "distributed",
}


def resolve(scheduler: Any = None, client: Any = None, count: int | None = None) -> Backend:
    """The backend for the ``scheduler=``, ``client=`` and ``workers=`` options of :func:`chunkmap.run`.

    ``count``: local worker processes or threads (default :func:`default_count`); a cluster's
    size is its own.

    Examples
    --------
    >>> resolve("threads").name, resolve("multiprocessing", count=3).workers
    ('threads', 3)
    """
    backend = _resolve(scheduler, client, count)
    if count is not None and isinstance(backend, DistributedBackend):
        backend.close()
        raise OptionError(
            f"workers={count} sets how many local processes or threads call func; on a cluster each "
            f"dask worker's pool follows its thread count: start the workers with "
            f"`dask worker --nthreads N`, or leave workers= out (Workers(setup=...) works on clusters)"
        )
    return backend


def _resolve(scheduler: Any, client: Any, count: int | None) -> Backend:
    if client is not None:
        if not _is_client(client):
            raise SchedulerError(f"client must be a distributed.Client; got {type(client).__name__}")
        if scheduler not in (None, "distributed", client):
            raise SchedulerError(
                f"scheduler={scheduler!r} contradicts client={client!r}; pass client= alone to run "
                f"on that cluster, or scheduler= alone"
            )
        return DistributedBackend(client)
    origin = "passed as scheduler="
    if scheduler is None:
        scheduler, origin = _default()
    if isinstance(scheduler, str):
        name = ALIASES.get(scheduler.lower(), scheduler.lower())
        if name in BACKENDS:
            return BACKENDS[name](count)
        if ADDRESS.match(scheduler):
            return DistributedBackend(_connect(scheduler), owns=True)
    elif _is_client(scheduler):
        return DistributedBackend(scheduler)
    elif callable(scheduler) and _function_name(scheduler) is not None:
        return BACKENDS[_function_name(scheduler)](count)
    names = ", ".join(repr(name) for name in BACKENDS)
    raise SchedulerError(
        f"unknown scheduler {scheduler!r} {origin}; expected one of {names} (dask's names "
        f"such as 'threading' too), a distributed.Client, or a scheduler address such as "
        f"'tcp://127.0.0.1:8786'"
    )


def prewarm(scheduler: Any = None, client: Any = None, count: int | None = None,
            execution: Execution | None = None) -> None:
    """Start the local worker processes now when the run will use them, before dask is imported.

    Only when that is known without importing dask: ``scheduler="processes"``, or no choice at
    all in a process that has not imported dask (so no setting or Client can say otherwise).
    """
    if client is None and ((scheduler is None and not _dask_may_be_configured()) or scheduler in ("processes", "multiprocessing")):
        from .local import shared_pool

        shared_pool(count or default_count(), *(execution.pool_key() if execution is not None else ()))


def default_count() -> int:
    """Local workers when ``workers=`` does not say: dask's ``num_workers`` setting, else the usable CPUs."""
    if _dask_may_be_configured():
        import dask.config

        configured = dask.config.get("num_workers", None)
        if configured:
            return int(configured)
    return cpu_count()


def _dask_may_be_configured() -> bool:
    """Whether dask's settings may say something: dask is imported, or a ``DASK_*`` variable is set."""
    return "dask" in sys.modules or any(name.startswith("DASK_") for name in os.environ)


def _check_picklable(what: str, value: Any, scheduler: str) -> None:
    """Raise :class:`NotPicklableError` if ``value`` cannot be sent to worker processes."""
    if value is None:
        return
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception as exc:
        raise NotPicklableError(
            f"{what} {value!r:.100} cannot be pickled ({type(exc).__name__}: {exc}), and "
            f"scheduler={scheduler!r} sends it to worker processes. Build what cannot be pickled in "
            f"each worker with chunkmap.per_worker(factory, ...) (e.g. per_worker(lambda: "
            f"Model(2.0).predict) for a SWIG object), use a module-level function, or run on "
            f"scheduler='threads', which calls it in this process"
        ) from None


def _default() -> tuple[Any, str]:
    """dask's ``"scheduler"`` setting, else the active Client, else ``"processes"``; and where it came from."""
    import dask.config

    configured = dask.config.get("scheduler", None)
    if configured is not None:
        return configured, "in dask.config 'scheduler'"
    client = _current_client()
    if client is not None:
        return client, "(the active distributed.Client)"
    return "processes", "(the default)"


def _current_client() -> Any:
    """The active ``distributed.Client``, or None (without importing distributed)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import Client

    try:
        return Client.current()
    except ValueError:
        return None


def _is_client(obj: Any) -> bool:
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(obj, distributed.Client)


def _function_name(get: Callable[..., Any]) -> str | None:
    """The backend name of one of dask's scheduler functions (``dask.threaded.get``), else None."""
    import dask.local
    import dask.multiprocessing
    import dask.threaded

    functions = {dask.local.get_sync: "sync", dask.threaded.get: "threads", dask.multiprocessing.get: "processes"}
    return functions.get(get)


def _connect(address: str) -> Any:
    import dask.config
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
