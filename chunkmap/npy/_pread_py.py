"""The pure-Python twin of ``chunkmap.npy._pread``: positional reads with ``os.open``/``os.preadv``.

Same names, same contract, same errors as the C functions (the contract is in
:mod:`chunkmap.npy._io`, which picks one of the two; the tests run both). The C versions do open +
pread + close in one call with the GIL released, which saves about 3 us per row.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["entry_evict", "open_ro", "pool_read", "pread_fd", "pread_path"]

_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_noatime = getattr(os, "O_NOATIME", 0)  # dropped for good after the first EPERM, as in C


def _check_path(path: bytes, name: str) -> None:
    if not isinstance(path, bytes):
        raise TypeError(f"{name}(): path must be bytes (os.fsencode), not {type(path).__name__}")


def _check_offset(offset: int, name: str) -> None:
    if offset < 0:
        raise ValueError(f"{name}(): negative offset {offset}")


def _open(path: bytes) -> int:
    global _noatime
    if _noatime:
        try:
            return os.open(path, _FLAGS | _noatime)
        except PermissionError as e:
            if e.errno != errno.EPERM:
                raise
            _noatime = 0  # not the file's owner: plain open from now on
    return os.open(path, _FLAGS)


def open_ro(path: bytes) -> int:
    """Open ``path`` read-only with the flags of ``pread_path``; return the descriptor."""
    _check_path(path, "open_ro")
    return _open(path)


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


def pread_fd(fd: int, buf, offset: int) -> int:
    """Read ``len(buf)`` bytes at ``offset`` of ``fd`` into ``buf``: see :mod:`chunkmap.npy._io`."""
    if not isinstance(fd, int):
        raise TypeError(f"pread_fd(): fd must be an int, not {type(fd).__name__}")
    _check_offset(offset, "pread_fd")
    return _fill(fd, buf, offset)


def pread_path(path: bytes, buf, offset: int) -> int:
    """Open, read ``len(buf)`` bytes at ``offset``, close: see :mod:`chunkmap.npy._io`."""
    _check_path(path, "pread_path")
    _check_offset(offset, "pread_path")
    fd = _open(path)
    try:
        return _fill(fd, buf, offset)
    finally:
        os.close(fd)


# -- the hit path of FdPool: entries are lists [fd, users, evicted] -------------------------------
# In C every change to an entry is one call under the GIL; here a lock makes each one atomic.
_ENTRY_LOCK = threading.Lock()


def pool_read(table: OrderedDict, path: bytes, buf, offset: int) -> int | None:
    """Read through the pooled descriptor of ``path``; None when ``table`` holds none."""
    _check_offset(offset, "pool_read")
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


def entry_evict(entry: list) -> None:
    """Close the entry's descriptor now if idle, else mark it for its last reader."""
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
