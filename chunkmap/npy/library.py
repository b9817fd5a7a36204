"""A library of many ``.npy`` arrays: lazy headers, positional row reads, an optional LRU cache.

The library is a mapping from names to :class:`~chunkmap.npy.reader.NpyReader`. It stores one path
per array; the header is read on the first access and kept (a few hundred bytes). No file
descriptor and no memory mapping is held between calls, so the number of arrays is limited neither
by ``ulimit -n`` nor by the address space, unlike a dict of ``np.load(mmap_mode="r")``.

With ``cache_bytes > 0`` whole arrays are kept in memory, least recently used first out, up to that
many bytes: the first access to an array reads it whole (one read), later rows are views of it.

With ``max_open_files=N > 0`` the library keeps up to N descriptors open between calls, the most
recently used ones (an :class:`~chunkmap.npy.fdpool.FdPool`): a row of a file read recently then
costs one ``pread`` (~2 us) instead of open + pread + close (~5 us). The pool is bounded (at most
half of ``ulimit -n``), thread- and fork-safe, and released by :meth:`NpyLibrary.close`, by leaving
a ``with`` block, or when the library is garbage collected. The default, 0, holds no descriptor.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ClosedError, MissingFileError, MissingKeyError, OptionError
from .fdpool import FdPool
from .header import NpyHeader
from .reader import NpyReader
from .rows import RowIterator

__all__ = ["NpyLibrary"]


def _list_folder(folder: str, pattern: str) -> dict[str, str]:
    names = sorted(fnmatch.filter(os.listdir(folder), pattern))
    return {os.path.splitext(n)[0]: f"{folder}{os.sep}{n}" for n in names}


def _paths(source: Any) -> dict[str, str]:
    if isinstance(source, Mapping):
        return {str(k): os.fspath(p) for k, p in source.items()}
    if isinstance(source, Iterable):
        return {os.fspath(p): os.fspath(p) for p in source}
    raise OptionError(
        f"source must be a folder, a list of .npy paths or a mapping name -> path; got {type(source).__name__}"
    )


class NpyLibrary(Mapping[str, NpyReader]):
    """Many ``.npy`` arrays by name, read row by row from disk with bounded memory.

    Parameters
    ----------
    source : folder, iterable of paths, or mapping of name to path
        A folder gives the files matching ``pattern``, named by file name without extension; a
        list of paths is named by the paths as given; a mapping by its keys. Files are not opened
        here, and a folder is listed only when the library is iterated, measured or searched
        (``len``, ``in``): with the default pattern, ``lib[name]`` goes straight to
        ``folder/name.npy``, so the first row costs the same for ten files or a million.
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
    :meth:`close` (or leaving a ``with`` block) releases the descriptors and the cache; the library
    cannot be used afterwards (:class:`~chunkmap.errors.ClosedError`).

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
    >>> with NpyLibrary(d, max_open_files=2) as pooled:
    ...     int(pooled.row("img0", 0)[0, 0]), int(pooled.row("img2", 0)[0, 0]), pooled.open_files
    (0, 2, 2)
    >>> pooled.open_files
    0
    >>> for k in range(3): os.remove(os.path.join(d, f"img{k}.npy"))
    >>> os.rmdir(d)
    """

    def __init__(
        self, source: Any, *, cache_bytes: int = 0, pattern: str = "*.npy", max_open_files: int = 0
    ) -> None:
        if int(cache_bytes) < 0:
            raise OptionError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if isinstance(max_open_files, bool) or not isinstance(max_open_files, int) or max_open_files < 0:
            raise OptionError(f"max_open_files must be an int >= 0 (0: no descriptor held), got {max_open_files!r}")
        self._pool: FdPool | None = FdPool(max_open_files) if max_open_files else None
        self.max_open_files = max_open_files
        self._closed = False
        self._folder: str | None = None
        self._pattern = pattern
        self._listed: dict[str, str] | None = None
        if isinstance(source, (str, os.PathLike)):
            folder = os.fspath(source)
            if not os.path.isdir(folder):
                raise MissingFileError(f"no folder at {folder!r}; pass a folder of .npy files or a list of paths")
            self._folder = folder
        else:
            self._listed = _paths(source)
        self._readers: dict[str, NpyReader] = {}  # created on first access, header included
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    def __reduce__(self):
        headers = {k: (r.path, r.header) for k, r in self._readers.items()}
        source = self._folder if self._folder is not None else self._listed
        return (_rebuild, (source, self.cache_bytes, self._pattern, headers, self.max_open_files))

    @property
    def _paths(self) -> dict[str, str]:
        if self._listed is None:
            self._listed = _list_folder(self._folder, self._pattern)
        return self._listed

    def __repr__(self) -> str:
        what = f"{len(self._listed)} arrays" if self._listed is not None else f"folder {self._folder!r}"
        pool = f", max_open_files={self.max_open_files}" if self.max_open_files else ""
        closed = ", closed" if self._closed else ""
        return f"NpyLibrary({what}, cache_bytes={self.cache_bytes}{pool}{closed})"

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
        if self._pool is not None:
            self._pool.close()
        self.clear_cache()

    def __enter__(self) -> NpyLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- mapping -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __contains__(self, key: object) -> bool:
        return key in self._paths

    def _missing(self, key: object) -> MissingKeyError:
        where = f"in {self._folder!r}" if self._folder is not None else f"among {len(self._paths)} arrays"
        return MissingKeyError(
            f"no array named {key!r} {where}; names are file names without .npy (see list(library))"
        )

    def _direct(self, key: object) -> bool:
        """True when ``key`` resolves to folder/key.npy without listing the folder."""
        return (
            self._listed is None
            and self._pattern == "*.npy"
            and isinstance(key, str)
            and key not in ("", ".", "..")
            and os.sep not in key
            and (os.altsep is None or os.altsep not in key)
        )

    def path(self, key: str) -> str:
        """Path of the array named ``key``."""
        if self._direct(key):
            return f"{self._folder}{os.sep}{key}.npy"
        try:
            return self._paths[key]
        except (KeyError, TypeError):
            raise self._missing(key) from None

    def header(self, key: str) -> NpyHeader:
        """Header of the array ``key``, read from the file on first use."""
        return self[key].header

    def __getitem__(self, key: str) -> NpyReader:
        r = self._readers.get(key)
        if r is None:
            if self._closed:
                raise ClosedError("this NpyLibrary is closed; open a new one")
            direct = self._direct(key)
            try:
                r = NpyReader(self.path(key), pool=self._pool)
            except MissingFileError:
                if direct:
                    raise self._missing(key) from None
                raise
            self._readers[key] = r
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
        r = self._readers.get(key)
        return (r if r is not None else self[key]).read_row(i)

    def rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of array ``key``.

        Returns
        -------
        numpy.ndarray
        """
        arr = self._cached(key)
        if arr is not None:
            return arr[start:stop]
        return self[key].read_rows(start, stop)

    def load(self, key: str) -> np.ndarray:
        """The whole array ``key`` (read-only when it comes from the cache).

        Returns
        -------
        numpy.ndarray
        """
        arr = self._cached(key)
        return arr if arr is not None else self[key].read()

    def iter_rows(self, keys: Iterable[str] | None = None, *, prefetch: int = 256) -> RowIterator:
        """Rows of the arrays ``keys`` (all of them by default) one after the other, prefetched.

        Returns
        -------
        RowIterator
        """
        keys = list(self._paths) if keys is None else list(keys)
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
    headers: dict[str, tuple[str, NpyHeader]],
    max_open_files: int = 0,
) -> NpyLibrary:
    lib = NpyLibrary(source, cache_bytes=cache_bytes, pattern=pattern, max_open_files=max_open_files)
    lib._readers.update({k: NpyReader(p, h, pool=lib._pool) for k, (p, h) in headers.items()})
    return lib
