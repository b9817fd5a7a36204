"""What chunkmap asks of the system: CPUs to use, heap trimming, dying with the parent, a free port, installed files.

Standard library only (every layer may import it, worker processes too). Linux gives each its
best answer; elsewhere each degrades to a safe default.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import signal
import socket
import sysconfig
import threading
import time
from typing import Callable, Iterator

__all__ = ["cpu_count", "release_free_memory", "die_with_parent", "free_port", "is_installed_file",
           "one_interrupt"]


@functools.cache
def cpu_count() -> int:
    """CPUs this process may run on: its affinity, bounded by a cgroup (v2) CPU quota, as dask counts.

    The default number of local workers, known without importing dask.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    A run allocates and frees many chunk-sized arrays, from several threads in the caller and
    chunk after chunk in each worker; glibc keeps much of that in its arenas (measured on 64M
    elements: ~170 MB in the caller), where it adds to the next phase's peak.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies, even stuck in a C call (Linux).

    Linux's parent-death signal follows the *thread* that started the process, see
    ``chunkmap.local.starter._SPAWNER``. Elsewhere nothing: EOF on the worker's pipe still ends it.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers chunkmap or its tests start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.lru_cache(maxsize=None)
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths}
    return tuple(os.path.realpath(root) + os.sep for root in roots)


def is_installed_file(path: str | None) -> bool:
    """Whether ``path`` belongs to the standard library or an installed package (not the user's code)."""
    return path is not None and os.path.isabs(path) and os.path.realpath(path).startswith(_installed_roots())


@contextlib.contextmanager
def one_interrupt() -> Iterator[None]:
    """Within: the first Ctrl-C raises ``KeyboardInterrupt`` as usual, the ones after it are ignored.

    A run that was interrupted unwinds (workers killed, the checkpoint closed) in well under a
    second; a second Ctrl-C meanwhile would only add another traceback from wherever it lands.
    After an interrupt, Ctrl-C stays ignored for :data:`INTERRUPT_GRACE` seconds more: the
    ``KeyboardInterrupt`` is then on its way to the caller, and in a script the interpreter is
    joining its threads on the way out, where a second one would print "Exception ignored in
    threading". Only in the main thread, and only over Python's own handler (never over one the
    caller installed); Python's handler is back on the way out, or once the grace period ends.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, _after_interrupt):
        yield
        return
    interrupted = []

    def first(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted.append(True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        if interrupted:
            _grace_ends[0] = time.monotonic() + INTERRUPT_GRACE
            signal.signal(signal.SIGINT, _after_interrupt)
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)


#: seconds during which Ctrl-C is ignored after one interrupted a run
INTERRUPT_GRACE = 2.0
_grace_ends = [0.0]


def _after_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C after an interrupted run: ignored during the grace period, then Python's own behaviour again."""
    if time.monotonic() < _grace_ends[0]:
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise KeyboardInterrupt
