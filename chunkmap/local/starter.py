"""Starting a pool's worker processes: forks of its template, each behind a handle like ``Popen``.

:class:`WorkerStarter` starts a pool's template (:mod:`chunkmap.local.template`, whose docstring
gives the protocol) on its first worker and sends it a fork request per worker;
:class:`ForkedProcess` is the pool's handle on one forked worker, with the part of
``subprocess.Popen``'s interface the pool uses (``pid``, ``poll``, ``wait``, ``kill``,
``returncode``).

- The template is started with ``subprocess`` from one spawner thread, as workers were before
  (Linux's parent-death signal follows the thread; ``multiprocessing`` cannot start children of
  daemonic dask workers). Workers die with the template, which dies with this process.
- A handle signals its worker through a pidfd, which names one process for good: a recycled pid is
  never hit. Whether the worker still runs is asked of the pidfd; its exit status, once it has
  ended, comes from the template.
- A fork's answer is read when the pool first needs it (a pid, a poll), so starting a pool does not
  wait for the template's imports: the run's process imports dask meanwhile.
- If the template dies, its workers die with it (and report as killed by SIGKILL); the next start
  starts a new template, with the environment and ``sys.path`` of the pool's own start.
- Where forking with pidfds is not available (not Linux), workers are fresh interpreters,
  ``python -m chunkmap.local.child``, as before.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Callable, Sequence

from .child import SYS_PATH_VARIABLE
from .template import EXITED, FAILED, FORK, FORKED, MESSAGE

__all__ = ["WorkerStarter", "Template", "ForkedProcess", "spawn", "FORKING"]

#: whether this system can fork workers from a template (pidfds and descriptor passing: Linux)
FORKING = all(hasattr(module, name) for module, name in
              ((os, "pidfd_open"), (os, "fork"), (signal, "pidfd_send_signal"), (socket, "send_fds")))
#: seconds to wait for a template's answer (its first comes after its imports) before giving up on it
ANSWER_TIMEOUT = 60.0

#: Processes die with the thread that started them (:func:`chunkmap.system.die_with_parent`), so
#: every template (or fresh worker) is started from this one thread, which lives as long as the process.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chunkmap-spawner")


def spawn(args: Sequence[str], pass_fds: Sequence[int], env: dict[str, str]) -> subprocess.Popen:
    """Start a process from the spawner thread, stdin closed, passing it ``pass_fds``."""
    return _SPAWNER.submit(subprocess.Popen, list(args), pass_fds=tuple(pass_fds), env=env,
                           stdin=subprocess.DEVNULL).result()


class WorkerStarter:
    """Starts the worker processes of one pool: forks of its template, else fresh interpreters.

    Workers see ``os.environ`` and ``sys.path`` as they were when the starter was made, whether
    they start now or replace a crashed worker later, and whether their template is the first.
    """

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = tuple(preload)
        self.environment = {**os.environ, SYS_PATH_VARIABLE: json.dumps(sys.path)}
        self.template: Template | None = None  #: the current template (None before the first start)
        self._lock = threading.Lock()

    def start(self, descriptors: tuple[int, int, int], slot: int) -> Process:
        """A worker on ``descriptors`` (request read end, response write end, heartbeat fd) for ``slot``.

        The caller may close its copies of the descriptors as soon as this returns.
        """
        if FORKING:
            with self._lock:
                for _ in range(2):  # a template that died since its last fork: start a new one, once
                    if self.template is None or not self.template.alive():
                        if self.template is not None:
                            self.template.close()
                        self.template = Template(self.environment, self.preload)
                    try:
                        return self.template.fork(descriptors, slot)
                    except TemplateGone:
                        continue
        return spawn([sys.executable, "-m", "chunkmap.local.child", *map(str, descriptors), str(slot)],
                     descriptors, self.environment)

    def close(self) -> None:
        """Stop the template (its workers should have stopped first: any left die with it)."""
        with self._lock:
            if self.template is not None:
                self.template.close()


class TemplateGone(Exception):
    """The template process has ended: it forks no more workers."""


class Template:
    """The pool's side of one template process: fork requests, answers, exit reports."""

    def __init__(self, environment: dict[str, str], preload: Sequence[str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = spawn([sys.executable, "-m", "chunkmap.local.template", str(theirs.fileno()),
                                  str(os.getpid()), *preload], (theirs.fileno(),), environment)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self.process.pid
        self._socket = ours
        self._lock = threading.Lock()  # the socket, and the state of the handles below
        self._pending: collections.deque[ForkedProcess] = collections.deque()  # asked for, not answered yet
        self._running: weakref.WeakValueDictionary[int, ForkedProcess] = weakref.WeakValueDictionary()
        self._gone = False

    def alive(self) -> bool:
        return not self._gone and self.process.poll() is None

    def fork(self, descriptors: tuple[int, int, int], slot: int) -> ForkedProcess:
        """Ask for a worker; its handle learns its pid from the answer, read on first need.

        Raises
        ------
        TemplateGone
        """
        handle = ForkedProcess(self)
        with self._lock:
            if self._gone:
                raise TemplateGone
            try:
                socket.send_fds(self._socket, [MESSAGE.pack(FORK, slot, 0)], list(descriptors))
            except OSError:
                self._end()
                raise TemplateGone from None
            self._pending.append(handle)
        return handle

    def wait_for(self, done: Callable[[], bool], timeout: float | None) -> None:
        """Read answers and reports until ``done()``, the template ends, or ``timeout`` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not done() and not self._gone:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._receive(remaining) and remaining is not None and remaining <= 0:
                    return

    def _receive(self, timeout: float | None) -> bool:
        """Read one message (the caller holds the lock); False when none came within ``timeout``."""
        if not _readable(self._socket.fileno(), timeout):
            return False
        try:
            data, fds, _, _ = socket.recv_fds(self._socket, MESSAGE.size, 1)
        except OSError:
            data, fds = b"", []
        if len(data) != MESSAGE.size:  # end of file: the template has ended
            self._end()
            return True
        kind, first, second = MESSAGE.unpack(data)
        if kind == EXITED:
            handle = self._running.pop(first, None)
            if handle is not None:
                handle.returncode = second
        elif kind == FORKED:
            handle = self._pending.popleft()
            handle._forked(first, fds[0])
            self._running[first] = handle
        elif kind == FAILED:  # the fork itself failed (the template printed why)
            self._pending.popleft().returncode = 1
        return True

    def _end(self) -> None:
        """The template has ended (the caller holds the lock): workers never forked end with its status."""
        self._gone = True
        try:
            status = self.process.wait(timeout=5)  # it is exiting: its socket just closed
        except subprocess.TimeoutExpired:
            status = -signal.SIGKILL
        while self._pending:
            self._pending.popleft().returncode = status if status else -signal.SIGKILL

    def close(self) -> None:
        """Stop the template: end of file on its socket ends it; killed if it does not within 5 s."""
        with self._lock:
            self._socket.close()
            if not self._gone:
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                self._end()


class ForkedProcess:
    """A worker forked by a template, with the part of ``subprocess.Popen``'s interface the pool uses.

    Its pid and pidfd arrive with the template's answer; its exit status comes from the template
    once the pidfd says the process has ended. ``pid`` is None for a worker never forked (its
    template ended first: ``returncode`` is then the template's).
    """

    def __init__(self, template: Template) -> None:
        self.template = template
        self.returncode: int | None = None
        self._pid: int | None = None
        self._pidfd: int | None = None  # kept open as long as this handle lives: its number is never reused

    def _forked(self, pid: int, pidfd: int) -> None:
        self._pid, self._pidfd = pid, pidfd
        weakref.finalize(self, os.close, pidfd)

    def _answered(self) -> bool:
        return self._pidfd is not None or self.returncode is not None

    def _ended(self) -> bool:
        return self.returncode is not None

    def _await_answer(self) -> None:
        """Wait for the template's answer; a template that gives none in time is killed."""
        if not self._answered():
            self.template.wait_for(self._answered, ANSWER_TIMEOUT)
            if not self._answered():
                self.template.process.kill()
                self.template.wait_for(self._answered, None)

    @property
    def pid(self) -> int | None:
        self._await_answer()
        return self._pid

    def poll(self) -> int | None:
        """The exit code if the process has ended, else None (also while the fork is being answered)."""
        if self.returncode is None:
            if self._pidfd is None:
                self.template.wait_for(self._answered, 0)
            if self._pidfd is not None and _readable(self._pidfd, 0):
                self._learn_exit_status()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end and return its exit code.

        Raises
        ------
        subprocess.TimeoutExpired
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is None:
            self._await_answer()
        else:
            self.template.wait_for(self._answered, timeout)
        if self.returncode is None and self._pidfd is not None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if _readable(self._pidfd, remaining):
                self._learn_exit_status()
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"chunkmap worker {self._pid}", timeout or 0)
        return self.returncode

    def _learn_exit_status(self) -> None:
        """The process has ended: its exit status from the template's report.

        No report comes when the template ended first, which killed it (SIGKILL).
        """
        self.template.wait_for(self._ended, ANSWER_TIMEOUT)
        if self.returncode is None:
            self.returncode = -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILL through the pidfd (waiting for the fork's answer first)."""
        self._await_answer()
        if self.returncode is None and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:  # it has ended already
                pass


#: what the pool's workers are: forks of a template, or fresh interpreters where forking is not available
Process = ForkedProcess | subprocess.Popen


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (None: wait); poll(2) takes any fd number."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
