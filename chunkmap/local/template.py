"""The template process: imports once, then forks a worker per request of its pool.

A fresh interpreter takes ~0.5 s to become a worker on this machine (start-up, then numpy, the
kernel and the function's module); a C library that segfaults on 5% of 10,000 elements paid that a
thousand times. A pool therefore starts one template, ``python -m chunkmap.local.template
SOCKET_FD OWNER_PID [MODULE ...]`` (:mod:`chunkmap.local.starter` is the pool's side), which
imports numpy, cloudpickle, the worker's modules and the modules the pool asks it to preload (the
function's), then only forks: each worker is a copy of it, serving at once. A preload that fails
to import is skipped: the worker imports it again and reports the real error.

The pool and its template talk over a ``SOCK_SEQPACKET`` socket pair, one packet per message:

- pool -> template: *fork* (the slot), with the worker's descriptors (its request pipe's read end,
  its response pipe's write end, the heartbeat memfd) as ``SCM_RIGHTS``;
- template -> pool, in the order of the requests: *forked* (the pid) with a pidfd of the new
  worker, opened before the template could reap it; or *failed* (fork failed; the template prints why);
- template -> pool, whenever a worker ends: *exited* (pid, exit code as ``Popen.returncode`` has
  it). Only a parent can learn a child's exit status, so the template reaps its workers and reports.

The template arms its parent-death signal and checks that its parent is still there; so does each
worker, whose parent is the template. A worker restores what the template changed (it only ignores
SIGINT, as workers do anyway), closes the template's descriptors, and exits as a fresh interpreter
would (``SystemExit``'s code, a traceback and 1 for an uncaught exception). When the pool closes
the socket, the template kills and reaps any worker left, and exits.

As with ``multiprocessing``'s forkserver, a preloaded module's top level runs once, in the
template: a module that starts threads at import should not be preloaded. A worker reseeds
numpy's global random state after the fork, as Python's ``random`` does by itself: forked workers
would otherwise draw the same numbers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import traceback
from typing import Callable

from ..system import die_with_parent
from .child import SYS_PATH_VARIABLE

__all__ = ["MESSAGE", "FORK", "FORKED", "FAILED", "EXITED", "main"]

#: what every template imports before the modules its pool asks for (all a worker's first request needs)
STANDARD_PRELOAD = ("numpy", "cloudpickle", "chunkmap.local.child", "chunkmap.local.transport")
#: every message: a kind, then two integers (slot; pid; pid and exit code; errno)
MESSAGE = struct.Struct("<cii")
FORK, FORKED, FAILED, EXITED = b"F", b"P", b"E", b"X"


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
                    data, fds, _, _ = socket.recv_fds(channel, MESSAGE.size, 3)
                    if not data:
                        return  # the pool has closed
                    _, slot, _ = MESSAGE.unpack(data)
                    try:
                        pid, pidfd = fork_worker(tuple(fds), slot, forget)
                    except OSError as error:
                        print(f"chunkmap's worker template could not fork a worker: {error}", file=sys.stderr)
                        channel.send(MESSAGE.pack(FAILED, error.errno or 0, 0))
                        continue
                    children[pidfd] = pid
                    selector.register(pidfd, selectors.EVENT_READ)
                    socket.send_fds(channel, [MESSAGE.pack(FORKED, pid, 0)], [pidfd])
                else:
                    pid = children.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, status = os.waitpid(pid, 0)
                    channel.send(MESSAGE.pack(EXITED, pid, os.waitstatus_to_exitcode(status)))
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
