"""The worker process: ``python -m chunkmap.local.child REQUESTS_FD RESPONSES_FD HEARTBEAT_FD SLOT``.

Started by :mod:`chunkmap.local.pool`. It reads evaluation requests from one pipe (the function and
where its slot's input columns lie, :mod:`chunkmap.local.transport`), runs the kernel,
and writes the evaluation to the other. Before each call of ``func`` the kernel writes
the element's position into this worker's slot of the shared heartbeat file, so that when the
process dies (a segmentation fault in a C library) or hangs, the parent knows which element did
it. It imports numpy and the kernel only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection

import numpy as np

from ..kernel import ElementFailure, evaluate_columns
from ..system import die_with_parent, release_free_memory

HEARTBEAT_BYTES = 8
#: elements of a chunk after which the worker returns its freed heap to the system (~0.4 ms,
#: worth it when the chunk's arrays take megabytes: 64M elements, 75 -> 37 MB per worker)
TRIM_AFTER = 1 << 18


def serve(requests: Connection, responses: Connection, heartbeat: np.ndarray) -> None:
    """Answer requests until the parent closes the pipe or asks to stop."""
    while True:
        try:
            message = requests.recv_bytes()
        except EOFError:
            return
        func, skip, kwargs, shared = pickle.loads(message)
        columns = shared.columns()
        length = len(columns[0]) if columns else 0
        try:
            response = ("done", evaluate_columns(func, columns, skip, kwargs, heartbeat))
        except ElementFailure as failure:
            response = ("raised", failure, _picklable(failure.__cause__))
        responses.send_bytes(_dumps(response))
        del response, columns
        if length >= TRIM_AFTER:
            release_free_memory()  # a large chunk's arrays: keep the footprint to one chunk


def _dumps(obj: object) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # values that pickle cannot carry (object results): cloudpickle can
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _picklable(exc: BaseException | None) -> BaseException | None:
    """The exception itself if it survives a pickle round trip, else None."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    return exc


def main(argv: list[str]) -> None:
    die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides what stops, and kills us if needed
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests_fd, responses_fd, heartbeat_fd, slot = argv
    sys.path[:] = json.loads(os.environ.pop("CHUNKMAP_WORKER_SYS_PATH", "[]")) or sys.path
    mapping = mmap.mmap(int(heartbeat_fd), 0)
    start = int(slot) * HEARTBEAT_BYTES
    heartbeat = np.frombuffer(mapping, np.int64, count=1, offset=start)
    serve(Connection(int(requests_fd), writable=False), Connection(int(responses_fd), readable=False), heartbeat)


if __name__ == "__main__":
    main(sys.argv[1:])
