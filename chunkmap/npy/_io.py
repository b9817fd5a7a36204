"""Positional reads for :mod:`chunkmap.npy`: the C functions of ``_pread`` or their Python twins.

Two functions, with one contract in both implementations:

``pread_path(path: bytes, buf, offset: int) -> int``
    Open ``path`` read-only (``O_CLOEXEC``, and ``O_NOATIME`` where the caller owns the file), read
    ``len(buf)`` bytes at ``offset`` into the writable C-contiguous buffer ``buf``, close; return the
    number of bytes read, fewer than ``len(buf)`` only at end of file. No descriptor outlives the
    call.
``pread_fd(fd: int, buf, offset: int) -> int``
    The same on a descriptor the caller holds.

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

import numpy as np

__all__ = ["IMPLEMENTATION", "open_ro", "pread_fd", "pread_path", "py_pread_fd", "py_pread_path"]

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


try:
    from ._pread import pread_fd as c_pread_fd
    from ._pread import pread_path as c_pread_path
except ImportError:  # pragma: no cover - the extension is built by setup.py
    c_pread_fd = c_pread_path = None

if c_pread_path is None or os.environ.get("CHUNKMAP_NPY_PYTHON_IO") == "1":
    IMPLEMENTATION = "python"
    pread_path, pread_fd = py_pread_path, py_pread_fd
else:
    IMPLEMENTATION = "c"
    pread_path, pread_fd = c_pread_path, c_pread_fd
