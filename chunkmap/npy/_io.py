"""Positional reads for :mod:`chunkmap.npy`: the C functions of ``_pread`` or their Python twins.

Two functions, with one contract in both implementations:

``pread_path(path: bytes, buf, offset: int) -> int``
    Open ``path`` read-only (``O_CLOEXEC``, and ``O_NOATIME`` where the caller owns the file), read
    ``len(buf)`` bytes at ``offset`` into the writable C-contiguous buffer ``buf``, close; return the
    number of bytes read, fewer than ``len(buf)`` only at end of file. No descriptor outlives the
    call.
``pread_fd(fd: int, buf, offset: int) -> int``
    The same on a descriptor the caller holds.
``pool_read(table, path: bytes, buf, offset: int) -> int | None`` and ``entry_evict(entry)``
    The hit path and the eviction of :class:`~chunkmap.npy.fdpool.FdPool` (see there).

Errors are ``OSError`` subclasses carrying errno (``FileNotFoundError`` for a missing file), a
``TypeError`` for a path that is not ``bytes``, a ``ValueError`` for a negative offset; a read-only
or strided ``buf`` gets its exporter's error (numpy: ``ValueError``).

The C versions (``chunkmap/npy/_pread.c``) do open + pread + close in one call with the GIL
released, which saves about 3 us per row against ``os.open`` + ``os.preadv`` + ``os.close``
(measured in ``benchmarks/bench_npy.py``). The Python versions are used when the extension is not
built, or when the environment variable ``CHUNKMAP_NPY_PYTHON_IO`` is set to ``1`` (tests run both).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict

import numpy as np

__all__ = [
    "IMPLEMENTATION", "entry_evict", "open_ro", "pool_read", "pread_fd", "pread_path",
    "py_entry_evict", "py_pool_read", "py_pread_fd", "py_pread_path",
]  # fmt: skip

_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_noatime = getattr(os, "O_NOATIME", 0)  # dropped for good after the first EPERM, as in C


def open_ro(path: bytes) -> int:
    """Open ``path`` read-only with the flags of ``pread_path``; return the descriptor."""
    global _noatime
    if _noatime:
        try:
            return os.open(path, _FLAGS | _noatime)
        except PermissionError as e:
            if e.errno != errno.EPERM:
                raise
            _noatime = 0  # not the file's owner: plain open from now on
    return os.open(path, _FLAGS)


def _check(offset: int, name: str) -> None:
    if offset < 0:
        raise ValueError(f"{name}(): negative offset {offset}")


def _flat_bytes(buf) -> memoryview:
    if isinstance(buf, np.ndarray):  # non-native long doubles export no formatted buffer
        return memoryview(buf.reshape(-1).view(np.uint8))
    return memoryview(buf).cast("B")


def _fill(fd: int, buf, offset: int) -> int:
    done = os.preadv(fd, [buf], offset)  # the exporter refuses read-only or strided buffers
    want = buf.nbytes if isinstance(buf, np.ndarray) else memoryview(buf).nbytes
    if done < want:  # rare: end of file, a signal or a huge read
        flat = _flat_bytes(buf)
        while done < want:
            n = os.preadv(fd, [flat[done:]], offset + done)
            if n == 0:
                break
            done += n
    return done


def py_pread_fd(fd: int, buf, offset: int) -> int:
    """Python twin of the C ``pread_fd``: see the module docstring."""
    if not isinstance(fd, int):
        raise TypeError(f"pread_fd(): fd must be an int, not {type(fd).__name__}")
    _check(offset, "pread_fd")
    return _fill(fd, buf, offset)


def py_pread_path(path: bytes, buf, offset: int) -> int:
    """Python twin of the C ``pread_path``: see the module docstring."""
    if not isinstance(path, bytes):
        raise TypeError(f"pread_path(): path must be bytes (os.fsencode), not {type(path).__name__}")
    _check(offset, "pread_path")
    fd = open_ro(path)
    try:
        return _fill(fd, buf, offset)
    finally:
        os.close(fd)


# -- the hit path of FdPool: entries are lists [fd, users, evicted] -------------------------------
# In C every change to an entry is one call under the GIL; here a lock makes each one atomic.
_ENTRY_LOCK = threading.Lock()


def py_pool_read(table: OrderedDict, path: bytes, buf, offset: int) -> int | None:
    """Python twin of the C ``pool_read``: read through the pooled descriptor of ``path``.

    Returns None when ``table`` holds no descriptor for ``path``.
    """
    _check(offset, "pool_read")
    with _ENTRY_LOCK:
        entry = table.get(path)
        if entry is None or entry[0] < 0:
            return None
        table.move_to_end(path)
        entry[1] += 1
    try:
        return _fill(entry[0], buf, offset)
    finally:
        with _ENTRY_LOCK:
            entry[1] -= 1
            if entry[2] and not entry[1] and entry[0] >= 0:
                os.close(entry[0])
                entry[0] = -1


def py_entry_evict(entry: list) -> None:
    """Python twin of the C ``entry_evict``: close now if idle, else mark for the last reader."""
    with _ENTRY_LOCK:
        if entry[1]:
            entry[2] = True
        elif entry[0] >= 0:
            os.close(entry[0])
            entry[0] = -1


def _new_lock_in_child() -> None:
    global _ENTRY_LOCK
    _ENTRY_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


try:
    from ._pread import entry_evict as c_entry_evict
    from ._pread import pool_read as c_pool_read
    from ._pread import pread_fd as c_pread_fd
    from ._pread import pread_path as c_pread_path
except ImportError:  # pragma: no cover - the extension is built by setup.py
    c_pread_fd = c_pread_path = c_pool_read = c_entry_evict = None

if c_pread_path is None or os.environ.get("CHUNKMAP_NPY_PYTHON_IO") == "1":
    IMPLEMENTATION = "python"
    pread_path, pread_fd, pool_read, entry_evict = py_pread_path, py_pread_fd, py_pool_read, py_entry_evict
else:
    IMPLEMENTATION = "c"
    pread_path, pread_fd, pool_read, entry_evict = c_pread_path, c_pread_fd, c_pool_read, c_entry_evict
