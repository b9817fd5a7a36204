"""Worker processes that can die or hang without taking the run with them.

A :class:`WorkerPool` keeps one process (:mod:`chunkmap.local.child`) per parallel slot, forked from
the pool's template process (:mod:`~chunkmap.local.starter`, :mod:`~chunkmap.local.template`: a
start or a restart costs a fork,
not a Python start-up; it also works inside daemonic dask workers) and reused across runs. Each
worker has a slot in a shared heartbeat mapping where it writes the position of the element it is
about to evaluate. The parent thread that sent a request watches the pipe, the process and the
heartbeat: a dead process raises :class:`WorkerDied` and a position that stops moving for longer
than the timeout raises :class:`WorkerHung`, both naming the element; the pool then replaces the
worker. :mod:`chunkmap.local.isolation` turns those into per-element failures. The three exceptions
are internal signals between the two modules, never raised to users.
"""

from __future__ import annotations

import atexit
import mmap
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

import numpy as np

from .freshness import CodeState
from .starter import WorkerStarter
from .transport import InputBuffer

__all__ = ["WorkerDied", "WorkerHung", "WorkerOverMemory", "Cancelled", "WorkerPool", "shared_pool", "shutdown"]

#: seconds between two looks at a busy worker's pipe, process and heartbeat
POLL_INTERVAL = 0.05
#: seconds between two looks at a busy worker's resident memory (with ``max_memory``)
MEMORY_INTERVAL = 1.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: before its first element a worker may import modules; it is not timed out during that
SETUP_GRACE = 60.0
NOT_STARTED = -1


class WorkerDied(Exception):
    """A worker process ended while evaluating; ``position`` is the element it was on (-1: none yet)."""

    def __init__(self, position: int, returncode: int) -> None:
        self.position = position
        self.returncode = returncode
        super().__init__(f"worker process {describe_exit(returncode)} at element {position}")


class WorkerOverMemory(Exception):
    """A worker's resident memory exceeded ``max_memory`` while evaluating; it was killed."""

    def __init__(self, position: int, resident: int) -> None:
        self.position = position
        self.resident = resident
        super().__init__(f"worker process at element {position} held {resident:,} bytes")


class WorkerHung(Exception):
    """An element ran longer than the timeout; its worker process was killed."""

    def __init__(self, position: int, seconds: float) -> None:
        self.position = position
        self.seconds = seconds
        super().__init__(f"element {position} did not return within {seconds:g} s")


class Cancelled(Exception):
    """The run was cancelled (e.g. Ctrl-C) while a worker was busy; the worker was killed."""


def describe_exit(returncode: int) -> str:
    """'killed by signal SIGSEGV (Segmentation fault)' or 'exited with code 3'.

    Examples
    --------
    >>> describe_exit(-11), describe_exit(3)
    ('killed by signal SIGSEGV (Segmentation fault)', 'exited with code 3')
    """
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by signal {name} ({signal.strsignal(number)})"
    return f"exited with code {returncode}"


def exit_name(returncode: int) -> str:
    """A short name of how a process ended: 'SIGSEGV' or 'exit 3'."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


class Heartbeats:
    """One int64 per worker slot in an anonymous shared file (``memfd``) that workers inherit."""

    def __init__(self, slots: int) -> None:
        size = max(slots, 1) * 8
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("chunkmap-heartbeats")
        else:  # pragma: no cover - not Linux
            self.fd, path = tempfile.mkstemp(prefix="chunkmap-heartbeats-")
            os.unlink(path)  # no name left behind, whatever happens to this process
        os.ftruncate(self.fd, size)
        self._mapping = mmap.mmap(self.fd, size)
        self.positions = np.frombuffer(self._mapping, np.int64)

    def close(self) -> None:
        self.positions = None
        self._mapping.close()
        os.close(self.fd)


class WorkerProcess:
    """One worker process, its two pipes and its heartbeat slot."""

    def __init__(self, slot: int, heartbeats: Heartbeats, starter: WorkerStarter) -> None:
        self.slot = slot
        self.calls = 0  #: elements this process was sent and answered (for ``max_calls``)
        self.heartbeats = heartbeats
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        try:
            self.process = starter.start((request_read, response_write, heartbeats.fd), slot)
        finally:
            os.close(request_read)
            os.close(response_write)
        self.requests = Connection(request_write, readable=False)
        self.responses = Connection(response_read, writable=False)

    @property
    def position(self) -> int:
        return int(self.heartbeats.positions[self.slot])

    def evaluate(
        self,
        payload: bytes,
        timeout: float | None = None,
        cancelled: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        max_memory: int | None = None,
    ) -> Any:
        """Send one request and wait for its response, watching the worker meanwhile.

        ``progress(position)`` is called whenever the worker moves on to a new element; its
        resident memory is compared with ``max_memory`` every :data:`MEMORY_INTERVAL` seconds.

        Raises
        ------
        WorkerDied, WorkerHung, WorkerOverMemory, Cancelled
        """
        self.heartbeats.positions[self.slot] = NOT_STARTED
        try:
            self.requests.send_bytes(payload)
        except OSError:
            raise WorkerDied(NOT_STARTED, self._wait_exit()) from None
        seen, since = NOT_STARTED, time.monotonic()
        measured = since
        while True:
            if self.responses.poll(POLL_INTERVAL):
                try:
                    return self.responses.recv_bytes()
                except (EOFError, OSError):
                    raise WorkerDied(self.position, self._wait_exit()) from None
            if self.process.poll() is not None:
                raise WorkerDied(self.position, self.process.returncode)
            if cancelled is not None and cancelled.is_set():
                self.kill()
                raise Cancelled("the run was cancelled")
            position, now = self.position, time.monotonic()
            if position != seen:
                seen, since = position, now
                if progress is not None and position >= 0:
                    progress(position)
            elif timeout is not None and now - since > (timeout if seen >= 0 else SETUP_GRACE + timeout):
                self.kill()
                raise WorkerHung(max(seen, 0), timeout)
            if max_memory is not None and now - measured >= MEMORY_INTERVAL:
                measured = now
                resident = self.resident_bytes()
                if resident > max_memory:
                    self.kill()
                    raise WorkerOverMemory(max(self.position, 0), resident)

    def resident_bytes(self) -> int:
        """The process's resident memory now (0 once it has ended, or where /proc is missing)."""
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            return 0

    def _wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """Ask the worker to stop; kill it if it does not within a few seconds."""
        try:
            self.requests.close()  # EOF: the worker's loop ends
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self.responses.close()


class WorkerPool:
    """``size`` worker processes, each used by one thread at a time.

    Examples
    --------
    >>> with WorkerPool(1) as pool:
    ...     worker = pool.acquire()
    ...     worker.process.poll() is None
    True
    """

    def __init__(self, size: int, preload: tuple[str, ...] = ()) -> None:
        self.size = size
        #: starts the workers: forks of a template that imported ``preload`` (module names) beforehand
        self.starter = WorkerStarter(preload)
        self._closed = False
        self.restarts = 0  #: workers replaced after a crash, a hang or a cancel
        self.heartbeats = Heartbeats(size)
        self.buffers = [InputBuffer() for _ in range(size)]  #: each slot's shared input buffer
        self._idle: queue.LifoQueue[WorkerProcess] = queue.LifoQueue()
        self._all: dict[int, WorkerProcess] = {}
        self._lock = threading.Lock()
        with self._lock:
            for slot in range(size):
                self._idle.put(self._start(slot))

    def _start(self, slot: int) -> WorkerProcess:
        """Start a worker in ``slot`` (the caller holds ``self._lock``)."""
        worker = WorkerProcess(slot, self.heartbeats, self.starter)
        self._all[slot] = worker
        return worker

    def acquire(self) -> WorkerProcess:
        """A live worker for the calling thread's exclusive use (waits while all are busy).

        Raises
        ------
        Cancelled
            The pool was closed (e.g. replaced by a newer one while a cancelled run's
            threads were still finishing).
        """
        if self._closed:
            raise Cancelled("the worker pool was closed")
        worker = self._idle.get()
        if worker.process.poll() is not None:  # died while idle: replace it
            worker = self.replace(worker)
        return worker

    def release(self, worker: WorkerProcess) -> None:
        """Give a worker back after use."""
        self._idle.put(worker)

    def replace(self, worker: WorkerProcess, gently: bool = False) -> WorkerProcess:
        """Kill ``worker`` (or, ``gently``, ask it to stop) and start a fresh one in its slot (none once closed)."""
        if gently:
            worker.close()
        else:
            worker.kill()
            worker.responses.close()
        with self._lock:  # atomic with close(): a closed pool starts nothing that nobody would stop
            if self._closed:
                return worker
            self.restarts += 1
            return self._start(worker.slot)

    def alive(self) -> bool:
        return all(worker.process.poll() is None for worker in self._all.values())

    def close(self) -> None:
        """Stop every worker and free the heartbeats."""
        with self._lock:
            self._closed = True
            workers = list(self._all.values())
        for worker in workers:
            worker.close()
        self.starter.close()
        self._all.clear()
        for buffer in self.buffers:
            buffer.close()
        self.heartbeats.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[str, Any] = {"pool": None, "key": None, "code": None, "run": None}
_shared_lock = threading.Lock()


def shared_pool(size: int, setup: str | None = None, preload: tuple[str, ...] = (), run: str | None = None) -> WorkerPool:
    """The process-wide pool of ``size`` workers, started on first use and reused across runs.

    Workers inherit the environment of the moment they start: when ``os.environ`` or
    ``sys.path`` has changed since (for example a library's cost setting read from the
    environment), the pool is restarted so that the workers see it; so it is when the user's
    code was reloaded or edited since (:mod:`chunkmap.local.freshness`). ``setup`` is the key of
    the run's :class:`~chunkmap.workers.Setup`: a run with another setup (or none, after one) gets
    fresh workers, so that no state from an earlier setup leaks into its calls. ``preload`` names
    the modules the workers' template imports before forking them (the function's); another
    preload gets another pool. ``run`` names a run whose chunks ask one by one (on a dask worker):
    the checks, a scan of ``sys.modules`` and the environment, are made on its first call only,
    and its later calls get that pool while it is open.
    """
    with _shared_lock:
        pool = _shared["pool"]
        if run is not None and pool is not None and _shared["run"] == run and not pool._closed:
            return pool
        key = (size, setup, tuple(preload), tuple(sorted(os.environ.items())), tuple(sys.path))
        if pool is not None and (_shared["key"] != key or _shared["code"].changed()):
            pool.close()
            pool = None
        if pool is None:
            pool = WorkerPool(size, tuple(preload))
            _shared.update(pool=pool, key=key, code=CodeState.now())
        _shared["run"] = run
        return pool


def shutdown() -> None:
    """Stop the shared worker processes (they restart on the next run that needs them)."""
    with _shared_lock:
        if _shared["pool"] is not None:
            _shared["pool"].close()
        _shared.update(pool=None, key=None, run=None)


atexit.register(shutdown)
