"""The worker process: :func:`work`, forked from the pool's template (:mod:`chunkmap.local.template`).

Where forking is not available it is a fresh interpreter instead,
``python -m chunkmap.local.child REQUESTS_FD RESPONSES_FD HEARTBEAT_FD SLOT``. It reads evaluation
requests from one pipe (the function and where its slot's input columns lie,
:mod:`chunkmap.local.transport`), runs the kernel, and writes the evaluation to the other. Before
each call of ``func`` the kernel writes the element's position into this worker's slot of the
shared heartbeat file, so that when the process dies (a segmentation fault in a C library) or
hangs, the parent knows which element did it. It imports numpy and the kernel only, so it starts
in a fraction of a second.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import signal
import sys
from dataclasses import replace
from multiprocessing.connection import Connection

import numpy as np

from ..errors import SetupError
from ..kernel import COMPUTED, ElementFailure, Evaluation, evaluate_columns
from ..system import die_with_parent, release_free_memory
from ..workers import mark_worker_process, run_setup_once
from .transport import SharedColumns, SourceSlice, send_back

HEARTBEAT_BYTES = 8
#: the environment variable that hands a new worker (or template) the pool's ``sys.path``, as JSON
SYS_PATH_VARIABLE = "CHUNKMAP_WORKER_SYS_PATH"
#: elements of a chunk after which the worker returns its freed heap to the system (~0.4 ms,
#: worth it when the chunk's arrays take megabytes: 64M elements, 75 -> 37 MB per worker)
TRIM_AFTER = 1 << 18


def serve(requests: Connection, responses: Connection, heartbeat: np.ndarray) -> None:
    """Answer requests until the parent closes the pipe.

    Each request is ``(func, skip, kwargs, setup, outputs, inputs)``; each response one of
    ``("done", evaluation)`` (or ``("done", evaluation, layout)``: its status and values were
    written back into the request's shared buffer, where the layout says),
    ``("raised", failure, cause)`` (``func`` raised outside ``skip``, or returned a value that
    cannot be pickled), ``("setup", error)`` (the setup or a per-worker
    factory raised) and ``("interrupt", exception)`` (``func`` raised KeyboardInterrupt or
    SystemExit, which the parent raises in turn, as ``sync`` would).
    """
    mark_worker_process()
    while True:
        try:
            message = requests.recv_bytes()
        except EOFError:
            return
        func, skip, kwargs, setup, outputs, shared = pickle.loads(message)
        columns = shared.columns()
        length = len(columns[0]) if columns else 0
        try:
            run_setup_once(setup)
            response = _done(evaluate_columns(func, columns, skip, kwargs, heartbeat, outputs), shared)
        except ElementFailure as failure:
            response = ("raised", failure, _picklable(failure.__cause__))
        except SetupError as error:
            response = ("setup", error)
        except (KeyboardInterrupt, SystemExit) as exc:
            response = ("interrupt", _picklable(exc) or type(exc)())
        responses.send_bytes(_dumps(response, columns))
        del response, columns
        if length >= TRIM_AFTER:
            release_free_memory()  # a large chunk's arrays: keep the footprint to one chunk


def _done(evaluation: Evaluation, shared: SharedColumns | SourceSlice) -> tuple:
    """The response for a finished evaluation: its status and values written back over the request's
    shared columns when they fit (:func:`~chunkmap.local.transport.send_back`), else in the pipe."""
    layout = send_back(shared, [evaluation.status, evaluation.values])
    if layout is None:
        return ("done", evaluation)
    return ("done", replace(evaluation, status=_NOTHING, values=_NOTHING), layout)


_NOTHING = np.empty(0, np.uint8)


def _dumps(response: tuple, columns: list[np.ndarray]) -> bytes:
    """The response's bytes; values that pickle cannot carry go through cloudpickle.

    A value that neither can carry (a SWIG object, a lock, a generator) becomes a ``"raised"``
    response for the first such element, so that the run stops with an error naming it.
    """
    try:
        return pickle.dumps(response, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        try:
            return cloudpickle.dumps(response, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return pickle.dumps(_unpicklable_value(response[1], columns), protocol=pickle.HIGHEST_PROTOCOL)


def _unpicklable_value(evaluation: Evaluation, columns: list[np.ndarray]) -> tuple:
    """The ``"raised"`` response for the first computed value of ``evaluation`` that cannot be pickled."""
    import cloudpickle

    computed = np.flatnonzero(evaluation.status == COMPUTED)
    for number, value in enumerate(evaluation.values):
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            position = int(computed[number])
            inputs = tuple(column[position].item() for column in columns)
            return ("raised", ElementFailure(position, inputs, type(value).__qualname__, f"{type(exc).__name__}: {exc}",
                                             returned=True), None)
    raise AssertionError("the evaluation did not pickle, yet each of its values does")  # pragma: no cover


def _picklable(exc: BaseException | None) -> BaseException | None:
    """The exception itself if it survives a pickle round trip, else None."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    return exc


def work(requests_fd: int, responses_fd: int, heartbeat_fd: int, slot: int) -> None:
    """Be the worker of pool slot ``slot`` until the parent closes the request pipe.

    The caller has armed the parent-death signal: a fork of the template, or :func:`main`.
    """
    # Ctrl-C reaches the whole process group; the parent decides what stops, and kills us if needed
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mapping = mmap.mmap(heartbeat_fd, 0)
    heartbeat = np.frombuffer(mapping, np.int64, count=1, offset=slot * HEARTBEAT_BYTES)
    serve(Connection(requests_fd, writable=False), Connection(responses_fd, readable=False), heartbeat)


def main(argv: list[str]) -> None:
    die_with_parent()
    sys.path[:] = json.loads(os.environ.pop(SYS_PATH_VARIABLE, "[]")) or sys.path
    requests_fd, responses_fd, heartbeat_fd, slot = map(int, argv)
    work(requests_fd, responses_fd, heartbeat_fd, slot)


if __name__ == "__main__":
    main(sys.argv[1:])
