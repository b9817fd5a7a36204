"""A library of many ``.npy`` arrays: lazy headers, positional row reads, an optional LRU cache.

The library is a mapping from names to :class:`~chunkmap.npy.reader.NpyReader`. Names come from
the source as it is now (:mod:`chunkmap.npy.names`): for a folder, ``lib[name]`` goes straight to
``folder/name.npy`` and ``in``, ``len`` and iteration see the files there at the time of the call.
The header of an array is read on its first lookup and kept (a few hundred bytes) with the file's
identity (device, inode, size, modification time); no file descriptor and no memory mapping is
held between calls, so the number of arrays is limited neither by ``ulimit -n`` nor by the address
space, unlike a dict of ``np.load(mmap_mode="r")``.

When files change
-----------------
- ``name in lib``, ``len(lib)``, ``list(lib)``: the folder now (a ``stat``; a listing).
- ``lib[name]``, ``lib.header(name)``, ``lib.rows``, ``lib.load``: one ``stat`` each. A removed file
  raises :class:`~chunkmap.errors.MissingArrayError`; a file replaced under the same name (another
  inode, size or time) has its header read again, its cached array and held descriptor dropped.
- ``lib.row(name, i)``, the hot path, adds no ``stat`` for an array already looked up: the read
  opens the file by its path, so a removed file raises ``MissingArrayError`` and the name is
  forgotten. Two cases need a ``lib[name]`` first to be seen: a file rewritten with another shape or
  dtype (the row would be read with the old header), and, with ``max_open_files``, a file removed or
  replaced while its descriptor is held (the row comes from the old file); with ``cache_bytes``,
  rows of a cached array come from memory.

With ``cache_bytes > 0`` whole arrays are kept in memory, least recently used first out, up to that
many bytes: the first access to an array reads it whole (one read), later rows are views of it.

With ``max_open_files=N > 0`` the library keeps up to N descriptors open between calls, the most
recently used ones (an :class:`~chunkmap.npy.fdpool.FdPool`): a row of a file read recently then
costs one ``pread`` (~2 us) instead of open + pread + close (~5 us). The pool is bounded (at most
half of ``ulimit -n``), thread- and fork-safe, and released by :meth:`NpyLibrary.close`, by leaving
a ``with`` block, or when the library is garbage collected. The default, 0, holds no descriptor.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ClosedError, MissingArrayError, OptionError
from .fdpool import FdPool
from .header import NpyHeader
from .names import missing, names_of
from .reader import NpyReader
from .rows import RowIterator

__all__ = ["NpyLibrary"]

Identity = int  # a hash of st_dev, st_ino, st_size, st_mtime_ns: 32 bytes per array, not 200


def _identity(st: os.stat_result) -> Identity:
    return hash((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


class NpyLibrary(Mapping[str, NpyReader]):
    """Many ``.npy`` arrays by name, read row by row from disk with bounded memory.

    Parameters
    ----------
    source : folder, iterable of paths, or mapping of name to path
        A folder gives the files matching ``pattern``, named by file name without extension, as
        the folder is at each call (files added or removed later are seen); a list of paths is
        named by the paths as given; a mapping by its keys. Files are not opened here. With a
        pattern ending in ``.npy`` (the default), ``lib[name]`` goes straight to
        ``folder/name.npy`` without listing the folder, so the first row costs the same for ten
        files or a million; ``len`` and iteration list the folder (about 1 ms per 10,000 files).
    cache_bytes : int, default 0
        Budget of the least-recently-used cache of whole arrays; 0 disables the cache and every
        row is read from disk (a few microseconds from the page cache).
    pattern : str, default "*.npy"
        File-name pattern used for a folder.
    max_open_files : int, default 0
        Size of a least-recently-used pool of file descriptors kept open between calls; 0 (the
        default) keeps none, and every row read opens and closes its file. A pool pays when the
        same files are read again and again: a row then costs one ``pread``. At most half of the
        soft open-files limit (``ulimit -n``).

    Raises
    ------
    MissingFileError
        ``source`` is a path that is not a folder.
    OptionError
        A negative ``cache_bytes``, or ``max_open_files`` negative or above half ``ulimit -n``.

    Notes
    -----
    A name without a file raises :class:`~chunkmap.errors.MissingArrayError`, a ``KeyError`` and
    a ``FileNotFoundError``. What is checked at each call when files change is in the module's
    docstring (:mod:`chunkmap.npy.library`). :meth:`close` (or leaving a ``with`` block) releases
    the descriptors and the cache; the library cannot be used afterwards
    (:class:`~chunkmap.errors.ClosedError`).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for k in range(3): np.save(os.path.join(d, f"img{k}.npy"), np.full((500, 30, 3), k, "u1"))
    >>> lib = NpyLibrary(d)
    >>> sorted(lib), lib["img2"].shape
    (['img0', 'img1', 'img2'], (500, 30, 3))
    >>> lib.row("img1", 499)[0]
    array([1, 1, 1], dtype=uint8)
    >>> [int(r[0, 0]) for r in lib.iter_rows(["img0", "img2"])][::500]
    [0, 2]
    >>> np.save(os.path.join(d, "img3.npy"), np.full((2, 30, 3), 3, "u1"))
    >>> len(lib), int(lib.row("img3", 1)[0, 0])
    (4, 3)
    >>> with NpyLibrary(d, max_open_files=2) as pooled:
    ...     int(pooled.row("img0", 0)[0, 0]), int(pooled.row("img2", 0)[0, 0]), pooled.open_files
    (0, 2, 2)
    >>> pooled.open_files
    0
    >>> for k in range(4): os.remove(os.path.join(d, f"img{k}.npy"))
    >>> "img3" in lib, os.rmdir(d)
    (False, None)
    """

    def __init__(
        self, source: Any, *, cache_bytes: int = 0, pattern: str = "*.npy", max_open_files: int = 0
    ) -> None:
        if int(cache_bytes) < 0:
            raise OptionError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if isinstance(max_open_files, bool) or not isinstance(max_open_files, int) or max_open_files < 0:
            raise OptionError(f"max_open_files must be an int >= 0 (0: no descriptor held), got {max_open_files!r}")
        self._names = names_of(source, pattern)
        self._pool: FdPool | None = FdPool(max_open_files) if max_open_files else None
        self.max_open_files = max_open_files
        self._closed = False
        self._pattern = pattern
        self._readers: dict[str, NpyReader] = {}  # created on first access, header included
        self._identities: dict[str, Identity] = {}  # of each reader's file when its header was read
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def __reduce__(self):
        headers = {k: (r.path, r.header, self._identities.get(k)) for k, r in self._readers.items()}
        return (_rebuild, (self._names.source, self.cache_bytes, self._pattern, headers, self.max_open_files))

    def __repr__(self) -> str:
        pool = f", max_open_files={self.max_open_files}" if self.max_open_files else ""
        closed = ", closed" if self._closed else ""
        return f"NpyLibrary({self._names!r}, cache_bytes={self.cache_bytes}{pool}{closed})"

    # -- descriptors -----------------------------------------------------------------------------
    @property
    def open_files(self) -> int:
        """Descriptors the library holds now (0 without ``max_open_files``)."""
        return 0 if self._pool is None else self._pool.open_count

    def close(self) -> None:
        """Release the held descriptors and the cache; later reads raise ``ClosedError``.

        Readers obtained from the library before keep working when the library holds no pool;
        with a pool they raise ``ClosedError`` too. Idempotent.
        """
        self._closed = True
        self._readers = {}
        self._identities = {}
        if self._pool is not None:
            self._pool.close()
        self.clear_cache()

    def __enter__(self) -> NpyLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- mapping -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names.listing())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.listing())

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def path(self, key: str) -> str:
        """Path of the file of the array named ``key`` (for a folder, where it is looked for)."""
        path = self._names.path(key)
        if path is None:
            raise missing(key, self._names, None)
        return path

    def header(self, key: str) -> NpyHeader:
        """Header of the array ``key``, read from the file on first use (and when it was replaced)."""
        return self[key].header

    def _forget(self, key: str) -> None:
        """Drop what is kept of ``key``: its reader, its cached array, its held descriptor."""
        reader = self._readers.pop(key, None)
        self._identities.pop(key, None)
        with self._lock:
            arr = self._cache.pop(key, None)
            if arr is not None:
                self._cached_bytes -= arr.nbytes
        if reader is not None and self._pool is not None:
            self._pool.discard(os.fsencode(reader.path))

    def _gone(self, key: str, path: str | None) -> MissingArrayError:
        self._forget(key)
        return missing(key, self._names, path)

    def __getitem__(self, key: str) -> NpyReader:
        if self._closed:
            raise ClosedError("this NpyLibrary is closed; open a new one")
        r = self._readers.get(key)
        path = r.path if r is not None else self.path(key)  # (any pattern: no listing again)
        try:
            identity = _identity(os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            raise self._gone(key, path) from None
        if r is not None:
            if self._identities.get(key) == identity:
                return r
            self._forget(key)  # replaced: read its header again
        try:
            r = NpyReader(path, pool=self._pool)
        except MissingArrayError:
            raise self._gone(key, path) from None
        self._readers[key] = r
        self._identities[key] = identity
        return r

    # -- reads ---------------------------------------------------------------------------------
    def _cached(self, key: str) -> np.ndarray | None:
        """The whole array from the cache (loading it there), or None without a cache."""
        if not self.cache_bytes:
            return None
        with self._lock:
            arr = self._cache.get(key)
            if arr is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return arr
        reader = self[key]
        if reader.nbytes > self.cache_bytes:
            return None
        arr = reader.read()
        arr.flags.writeable = False
        with self._lock:
            self._misses += 1
            if key not in self._cache:
                self._cache[key] = arr
                self._cached_bytes += arr.nbytes
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return arr

    def row(self, key: str, i: int) -> np.ndarray:
        """Row ``i`` of array ``key`` (a read-only view when the array is cached).

        Parameters
        ----------
        key : str
            Array name.
        i : int
            Row index (negative counts from the end).

        Returns
        -------
        numpy.ndarray
        """
        if self.cache_bytes:
            arr = self._cached(key)
            if arr is not None:
                return arr[i]
        r = self._readers.get(key)  # the hot path: no stat for an array already looked up
        if r is None:
            r = self[key]
        try:
            return r.read_row(i)
        except MissingArrayError:
            raise self._gone(key, r.path) from None

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of array ``key``.

        Returns
        -------
        numpy.ndarray
        """
        arr = self._cached(key)
        if arr is not None:
            return arr[start:stop]
        r = self[key]
        try:
            return r.read_rows(start, stop)
        except MissingArrayError:  # removed between the stat and the read
            raise self._gone(key, r.path) from None

    def load(self, key: str) -> np.ndarray:
        """The whole array ``key`` (read-only when it comes from the cache).

        Returns
        -------
        numpy.ndarray
        """
        arr = self._cached(key)
        if arr is not None:
            return arr
        r = self[key]
        try:
            return r.read()
        except MissingArrayError:  # removed between the stat and the read
            raise self._gone(key, r.path) from None

    def iter_rows(self, keys: Iterable[str] | None = None, *, prefetch: int = 256) -> RowIterator:
        """Rows of the arrays ``keys`` (all of them now by default) one after the other, prefetched.

        Returns
        -------
        RowIterator
        """
        if keys is None:
            return RowIterator(list(self._names.listing().values()), prefetch=prefetch)
        return RowIterator([self.path(k) for k in keys], prefetch=prefetch)

    # -- cache ---------------------------------------------------------------------------------
    def cache_info(self) -> dict[str, int]:
        """Counters of the cache: hits, misses, arrays, bytes, budget, headers read."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "arrays": len(self._cache),
                "bytes": self._cached_bytes,
                "budget": self.cache_bytes,
                "headers": len(self._readers),
                "open_files": self.open_files,
            }

    def clear_cache(self) -> None:
        """Drop every cached array (headers are kept)."""
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0


def _rebuild(
    source: Any,
    cache_bytes: int,
    pattern: str,
    headers: dict[str, tuple[str, NpyHeader, Identity | None]],
    max_open_files: int = 0,
) -> NpyLibrary:
    lib = NpyLibrary(source, cache_bytes=cache_bytes, pattern=pattern, max_open_files=max_open_files)
    for key, (path, header, identity) in headers.items():
        lib._readers[key] = NpyReader(path, header, pool=lib._pool)
        if identity is not None:  # (another machine's file has another identity: read again)
            lib._identities[key] = identity
    return lib
