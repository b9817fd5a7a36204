"""A bounded least-recently-used pool of read-only file descriptors, for repeated row reads.

Reading a row of a ``.npy`` file with nothing held costs open + pread + close; ``open`` and
``close`` are most of it (on the benchmark VM about 5-6 us of the ~6 us, against 1.5-2 us for a
``pread`` on a held descriptor). :class:`FdPool` keeps up to ``max_open`` descriptors open between
calls, the most recently used ones, so that reads of files read recently cost one ``pread``.

Guarantees
----------
- **Bounded.** Between calls the pool holds at most ``min(max_open, limit)`` descriptors, where
  ``limit`` is half the soft ``RLIMIT_NOFILE`` at the time a descriptor is opened (so lowering
  ``ulimit -n`` later shrinks the pool, and the rest of the program keeps half the limit). If the
  process runs out of descriptors anyway (``EMFILE``), the pool gives up its idle descriptors and
  reads without one.
- **Closes.** The least recently used descriptor is closed when a new one pushes the pool past its
  bound, every descriptor on :meth:`close`, and on garbage collection (a finaliser).
- **Thread-safe.** A lock guards the table; a descriptor in use by a read is never closed under it:
  evicting a busy descriptor only marks it, and the last reader closes it. While reads are in
  flight the process may therefore hold up to (bound + reads in flight) descriptors, as many as the
  pool-less path holds transiently.
- **Fork-safe.** In a child made by ``os.fork`` (and so ``multiprocessing``), an at-fork hook gives
  every pool a new lock and an empty table and closes the child's copies of the inherited
  descriptors; the parent's pool is untouched. The pool records the pid it belongs to and never
  closes descriptors from another process. (``pread`` does not use the shared file offset, so even
  a child forked without Python's hooks reads correct bytes through inherited descriptors.)
"""

from __future__ import annotations

import errno
import os
import resource
import threading
import weakref
from collections import OrderedDict

from ..errors import ClosedError, OptionError
from . import _io

__all__ = ["FdPool", "fd_limit"]

_LIMIT_CAP = 1 << 16  # the most descriptors a pool may hold, whatever the limit


def fd_limit() -> int:
    """The most descriptors a pool may hold now: half the soft ``RLIMIT_NOFILE``, at most 65536.

    Returns
    -------
    int
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft < 0:
        return _LIMIT_CAP
    return min(_LIMIT_CAP, soft // 2)


_POOLS: weakref.WeakSet[FdPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._reset_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all(table: OrderedDict, pid: int, evict) -> None:
    """Empty ``table`` and close its idle descriptors (busy ones close when their read ends)."""
    if os.getpid() != pid:  # an inherited table: not ours to close (the at-fork hook resets it)
        return
    entries = list(table.values())
    table.clear()  # first out of the table, so that no new read finds them
    for entry in entries:
        evict(entry)


class FdPool:
    """A bounded LRU pool of read-only descriptors keyed by path, with positional reads.

    Parameters
    ----------
    max_open : int
        The most descriptors held between calls, ``1 <= max_open <= fd_limit()``.

    Raises
    ------
    OptionError
        ``max_open`` is not a positive integer or is above half the open-files limit.

    Notes
    -----
    :meth:`pread` has the contract of :func:`chunkmap.npy._io.pread_path`, so a reader can use
    either. The table is an ``OrderedDict`` path -> ``[fd, readers in flight, evicted]``, least
    recently used first. A hit is one C call (``_pread.pool_read``: look up, move to the end, count
    the reader, ``pread`` without the GIL, uncount, close if evicted meanwhile), atomic under the
    GIL; a miss opens the file under the pool's lock and evicts beyond the bound.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "f")
    >>> with open(p, "wb") as f: _ = f.write(b"abcdef")
    >>> with FdPool(2) as pool:
    ...     buf = bytearray(3)
    ...     pool.pread(os.fsencode(p), buf, 2), bytes(buf), pool.open_count
    (3, b'cde', 1)
    >>> pool.open_count
    0
    >>> os.remove(p); os.rmdir(d)
    """

    def __init__(self, max_open: int) -> None:
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise OptionError(f"max_open_files must be a positive int, got {max_open!r}")
        limit = fd_limit()
        if max_open > limit:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            raise OptionError(
                f"max_open_files={max_open} is above half the open-files limit (ulimit -n {soft}): "
                f"at most {limit}; pass a smaller pool, or raise the limit first"
            )
        self.max_open = max_open
        self._bound = min(max_open, limit)
        self._pread_path = _io.pread_path
        self._pool_read = _io.pool_read
        self._evict = _io.entry_evict
        self._open = _io.open_ro
        self._lock = threading.Lock()  # serialises misses and close; hits go without it
        self._fds: OrderedDict[bytes, list] | None = OrderedDict()  # path -> [fd, users, evicted]
        self._pid = os.getpid()
        self.misses = 0  # descriptors opened
        self._finalizer = weakref.finalize(self, _close_all, self._fds, self._pid, self._evict)
        _POOLS.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._fds is None else f"{len(self._fds)} open"
        return f"FdPool(max_open={self.max_open}, {state})"

    def __enter__(self) -> FdPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def open_count(self) -> int:
        """Descriptors the pool holds now (idle or in use)."""
        fds = self._fds
        return 0 if fds is None else len(fds)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._fds is None

    def _insert(self, path: bytes) -> bool:
        """Open ``path`` into the table (evicting the least recently used descriptors beyond the
        bound); False: read without a pooled descriptor."""
        with self._lock:
            fds = self._fds
            if fds is None:
                raise ClosedError("this NpyLibrary (or FdPool) is closed; its descriptors were released")
            if path in fds:  # another thread opened it meanwhile
                return True
            if len(fds) < self._bound or self._bound < self.max_open:
                # growing: re-derive the bound (ulimit -n may have changed since)
                self._bound = min(self.max_open, fd_limit())
            if self._bound < 1:
                return False
            try:
                fd = self._open(path)
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                _close_all(fds, self._pid, self._evict)  # out of descriptors: give ours back
                return False
            self.misses += 1
            fds[path] = [fd, 0, False]
            while len(fds) > self._bound:
                _, old = fds.popitem(last=False)
                self._evict(old)  # closed now, or by its last reader if a read uses it
            return True

    def pread(self, path: bytes, buf, offset: int) -> int:
        """Read ``len(buf)`` bytes at ``offset`` of ``path`` into ``buf`` through a pooled descriptor.

        Parameters
        ----------
        path : bytes
            File name (``os.fsencode``); the pool key.
        buf : writable C-contiguous buffer
            Destination.
        offset : int
            Byte offset in the file.

        Returns
        -------
        int
            Bytes read; fewer than ``len(buf)`` only at end of file.

        Raises
        ------
        ClosedError
            The pool is closed.
        OSError
            As ``open`` or ``pread`` raise it (``FileNotFoundError`` for a missing file).
        """
        fds = self._fds
        if fds is not None:
            got = self._pool_read(fds, path, buf, offset)  # the hit path: one call
            if got is not None:
                return got
        for _ in range(3):  # a miss: open into the pool, then read through it
            if not self._insert(path):
                break
            fds = self._fds
            if fds is None:
                raise ClosedError("this NpyLibrary (or FdPool) is closed; its descriptors were released")
            got = self._pool_read(fds, path, buf, offset)
            if got is not None:
                return got  # (None: other threads evicted it already; a tiny pool under load)
        return self._pread_path(path, buf, offset)

    def discard(self, path: bytes) -> None:
        """Close the descriptor held for ``path``, if any (one in use closes when its read ends),
        so that the next read opens ``path`` again: the file there now, not one removed or replaced."""
        with self._lock:
            entry = None if self._fds is None else self._fds.pop(path, None)
            if entry is not None:
                self._evict(entry)

    def close(self) -> None:
        """Close every descriptor (one in use closes when its read ends); later reads raise
        :class:`~chunkmap.errors.ClosedError`. Idempotent."""
        with self._lock:
            fds, self._fds = self._fds, None
            if fds is not None:
                _close_all(fds, self._pid, self._evict)
        self._finalizer.detach()

    def _reset_in_child(self) -> None:
        """After ``fork``, in the child: a new lock, an empty table, our copies closed."""
        self._lock = threading.Lock()
        fds = self._fds
        if fds is not None:
            for entry in fds.values():
                if entry[0] >= 0:
                    try:
                        os.close(entry[0])  # the child's copy; the parent's stays open
                    except OSError:
                        pass
                    entry[0] = -1
            fds.clear()  # the finaliser holds this same table
        self._pid = os.getpid()
        self._finalizer.detach()
        if fds is not None:
            self._finalizer = weakref.finalize(self, _close_all, fds, self._pid, self._evict)
