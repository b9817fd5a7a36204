"""Positional reads for :mod:`chunkmap.npy`: the C extension ``_pread`` or its Python twin.

The functions, with one contract in both implementations:

``pread_path(path: bytes, buf, offset: int) -> int``
    Open ``path`` read-only (``O_CLOEXEC``, and ``O_NOATIME`` where the caller owns the file), read
    ``len(buf)`` bytes at ``offset`` into the writable C-contiguous buffer ``buf``, close; return the
    number of bytes read, fewer than ``len(buf)`` only at end of file. No descriptor outlives the
    call.
``pread_fd(fd: int, buf, offset: int) -> int``
    The same on a descriptor the caller holds.
``open_ro(path: bytes) -> int``
    Open ``path`` with the flags of ``pread_path``; the caller closes the descriptor.
``pool_read(table, path: bytes, buf, offset: int) -> int | None`` and ``entry_evict(entry)``
    The hit path and the eviction of :class:`~chunkmap.npy.fdpool.FdPool` (see there).

Errors are ``OSError`` subclasses carrying errno and the file name (``FileNotFoundError`` for a
missing file), a ``TypeError`` for a path that is not ``bytes``, a ``ValueError`` for a negative
offset; a read-only or strided ``buf`` gets its exporter's error (numpy: ``ValueError``).

The compiled functions (``chunkmap/npy/_pread.c``) do open + pread + close in one call with the GIL
released, which saves about 3 us per row against ``os.open`` + ``os.preadv`` + ``os.close``
(measured in ``benchmarks/bench_npy.py``); their twins are in :mod:`chunkmap.npy._pread_py`. Which
one is used follows chunkmap's convention for C extensions (:mod:`chunkmap._extensions`): the twin
when the extension is not built or when ``CHUNKMAP_PURE_PYTHON=1``; :data:`EXTENSION` says which.
"""

from __future__ import annotations

from .._extensions import load

__all__ = ["EXTENSION", "entry_evict", "open_ro", "pool_read", "pread_fd", "pread_path"]

#: ``chunkmap.npy._pread`` and its twin, and which of them is used.
EXTENSION = load("chunkmap.npy._pread")

pread_path = EXTENSION.active.pread_path
pread_fd = EXTENSION.active.pread_fd
open_ro = EXTENSION.active.open_ro
pool_read = EXTENSION.active.pool_read
entry_evict = EXTENSION.active.entry_evict
