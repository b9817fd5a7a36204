"""Worker processes forked from a template process: a restart costs a fork, not a Python start-up.

A fresh interpreter takes ~0.5 s to become a worker on this machine (start-up, then numpy, the
kernel and the function's module); a C library that segfaults on 5% of 10,000 elements paid that a
thousand times. A pool therefore starts one *template* (``python -m chunkmap.local.template``),
which imports numpy, cloudpickle, the worker's module and the modules the pool asks it to preload
(the function's), then only forks: each worker is a copy of it, serving at once.

The pool and its template talk over a ``SOCK_SEQPACKET`` socket pair, one packet per message:

- pool -> template: *fork* (the slot), with the worker's descriptors (its request pipe's read end,
  its response pipe's write end, the heartbeat memfd) as ``SCM_RIGHTS``;
- template -> pool, in the order of the requests: *forked* (the pid) with a pidfd of the new worker,
  or *failed* (fork itself failed; the template prints why);
- template -> pool, whenever a worker ends: *exited* (pid, exit code as ``Popen.returncode`` has it).
  Only a parent can learn a child's exit status, so the template reaps its workers and reports.

How each part dies with the run's process, and why the pool never kills the wrong process:

- the template is started with ``subprocess`` from one spawner thread, as workers used to be
  (Linux's parent-death signal follows the thread; ``multiprocessing`` cannot start children of
  daemonic dask workers); it arms its parent-death signal and checks its parent is still there;
- each forked worker arms its own (its parent is the template), restores what the template changed
  (it only ignores SIGINT, as workers do) and closes the template's descriptors;
- the pool signals a worker through a pidfd, which names one process for good: a recycled pid is
  never hit. The template opens it before it can reap the child.

The pool reads an answer when it first needs it (a pid, a poll), so starting a pool does not wait
for the template's imports: the run's process imports dask meanwhile. If the template dies, its
workers die with it; the pool starts a new template at the next start. Where forking with pidfds
is not available (not Linux), workers are fresh interpreters, ``python -m chunkmap.local.child``.

As with ``multiprocessing``'s forkserver, a preloaded module's top level runs once, in the
template: a module that starts threads at import should not be preloaded. After the fork a
worker reseeds numpy's global random state, as Python's ``random`` does by itself: workers would
otherwise draw the same numbers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import importlib
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from typing import Callable, Sequence, Union

from ..system import die_with_parent
from .child import SYS_PATH_VARIABLE

__all__ = ["WorkerStarter", "Template", "ForkedProcess", "spawn", "FORKING"]

#: whether this system can fork workers from a template (pidfds and descriptor passing: Linux)
FORKING = all(hasattr(module, name) for module, name in
              ((os, "pidfd_open"), (os, "fork"), (signal, "pidfd_send_signal"), (socket, "send_fds")))
#: what every template imports before the modules its pool asks for
STANDARD_PRELOAD = ("numpy", "cloudpickle", "chunkmap.local.child", "chunkmap.local.transport")
#: seconds to wait for a template's answer (its first comes after its imports) before giving up on it
ANSWER_TIMEOUT = 60.0
#: every message: a kind, then two integers (slot; pid; pid and exit code; errno)
_MESSAGE = struct.Struct("<cii")
_FORK, _FORKED, _FAILED, _EXITED = b"F", b"P", b"E", b"X"

#: Processes die with the thread that started them (:func:`chunkmap.system.die_with_parent`), so
#: every template (or fresh worker) is started from this one thread, which lives as long as the process.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chunkmap-spawner")


def spawn(args: Sequence[str], pass_fds: Sequence[int], env: dict[str, str]) -> subprocess.Popen:
    """Start a process from the spawner thread, stdin closed, passing it ``pass_fds``."""
    return _SPAWNER.submit(subprocess.Popen, list(args), pass_fds=tuple(pass_fds), env=env,
                           stdin=subprocess.DEVNULL).result()


Process = Union["ForkedProcess", subprocess.Popen]


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
            self.process = spawn([sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid()), *preload],
                                 (theirs.fileno(),), environment)
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
                socket.send_fds(self._socket, [_MESSAGE.pack(_FORK, slot, 0)], list(descriptors))
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
            data, fds, _, _ = socket.recv_fds(self._socket, _MESSAGE.size, 1)
        except OSError:
            data, fds = b"", []
        if len(data) != _MESSAGE.size:  # end of file: the template has ended
            self._end()
            return True
        kind, first, second = _MESSAGE.unpack(data)
        if kind == _EXITED:
            handle = self._running.pop(first, None)
            if handle is not None:
                handle.returncode = second
        elif kind == _FORKED:
            handle = self._pending.popleft()
            handle._forked(first, fds[0])
            self._running[first] = handle
        else:  # _FAILED: the fork itself failed (the template printed why)
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
                self.template.wait_for(self._ended, ANSWER_TIMEOUT)
                self._assume_killed()
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
                self.template.wait_for(self._ended, ANSWER_TIMEOUT)
                self._assume_killed()
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"chunkmap worker {self._pid}", timeout or 0)
        return self.returncode

    def _assume_killed(self) -> None:
        """The process has ended but no report came: its template ended first, killing it (SIGKILL)."""
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


def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` is readable within ``timeout`` seconds (None: wait); poll(2) takes any fd number."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


# --- the template process itself ---------------------------------------------------------------


def main(argv: list[str]) -> None:
    """The template process: ``python -m chunkmap.local.template SOCKET_FD OWNER_PID [MODULE ...]``."""
    socket_fd, owner, *preload = argv
    die_with_parent()
    if os.getppid() != int(owner):
        return  # the owner ended before the parent-death signal was armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the owner decides
    sys.path[:] = json.loads(os.environ.pop(SYS_PATH_VARIABLE, "[]")) or sys.path
    for name in (*STANDARD_PRELOAD, *preload):
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the worker imports it again and reports the real error
            pass
    serve_forks(socket.socket(fileno=int(socket_fd)))


def serve_forks(channel: socket.socket) -> None:
    """Fork a worker per request and report each worker's end, until the pool closes the socket."""
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pidfd -> pid

    def forget() -> None:  # in a new worker: the template's descriptors are none of its business
        selector.close()
        channel.close()
        for pidfd in children:
            os.close(pidfd)

    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is channel:
                    data, fds, _, _ = socket.recv_fds(channel, _MESSAGE.size, 3)
                    if not data:
                        return  # the pool has closed
                    _, slot, _ = _MESSAGE.unpack(data)
                    try:
                        pid, pidfd = fork_worker(tuple(fds), slot, forget)
                    except OSError as error:
                        print(f"chunkmap's worker template could not fork a worker: {error}", file=sys.stderr)
                        channel.send(_MESSAGE.pack(_FAILED, error.errno or 0, 0))
                        continue
                    children[pidfd] = pid
                    selector.register(pidfd, selectors.EVENT_READ)
                    socket.send_fds(channel, [_MESSAGE.pack(_FORKED, pid, 0)], [pidfd])
                else:
                    pid = children.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, status = os.waitpid(pid, 0)
                    channel.send(_MESSAGE.pack(_EXITED, pid, os.waitstatus_to_exitcode(status)))
    except OSError:  # the pool's end is gone: so is the pool
        pass
    finally:  # workers still running (none after a pool's close) end with the template, reaped
        for pidfd, pid in children.items():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.waitpid(pid, 0)


def fork_worker(descriptors: tuple[int, ...], slot: int, forget: Callable[[], None]) -> tuple[int, int]:
    """Fork a worker serving ``slot`` on ``descriptors``; here, its pid and a pidfd. The worker never returns."""
    _flush()  # or each worker would write the template's buffered output again
    template = os.getpid()
    try:
        pid = os.fork()
        if pid == 0:
            _be_worker(descriptors, slot, template, forget)
    finally:
        for fd in descriptors:
            os.close(fd)
    return pid, os.pidfd_open(pid)


def _be_worker(descriptors: tuple[int, ...], slot: int, template: int, forget: Callable[[], None]) -> None:
    """The forked worker's life: serve, then exit as a fresh interpreter would (never returns)."""
    code = 1
    try:
        forget()
        die_with_parent()
        if os.getppid() != template:
            return  # the template ended before the parent-death signal was armed
        if "numpy.random" in sys.modules:
            sys.modules["numpy.random"].seed()
        from .child import work

        requests, responses, heartbeat = descriptors
        work(requests, responses, heartbeat, slot)
        code = 0
    except SystemExit as exit:
        code = _exit_code(exit.code)
    except BaseException:  # noqa: BLE001 - printed as the interpreter would, then the exit code 1
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _exit_code(code: object) -> int:
    """The exit status of ``SystemExit(code)``, as the interpreter gives it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
