"""Read rows of ``.npy`` files from disk with near-zero latency and bounded memory.

- :class:`NpyReader` — one file: rows, row ranges, flat slices by positional reads, no descriptor
  held between calls; pickles as ``(path, header)``.
- :class:`RowIterator` / :func:`iter_rows` — rows of one or many files, prefetched by a thread.
- :class:`NpyLibrary` — many files by name, lazy headers, optional LRU cache with a byte budget,
  optional bounded pool of open descriptors (``max_open_files``). Its names are the folder as it
  is at each call (:mod:`chunkmap.npy.names`); a missing one is a
  :class:`~chunkmap.errors.MissingArrayError`, as is a missing file of :class:`NpyReader`.
- :class:`FdPool` — that pool: an LRU of read-only descriptors, bounded by ``ulimit -n``, thread-
  and fork-safe.
- :func:`read_header` / :class:`NpyHeader` — the parsed header (versions 1.0, 2.0, 3.0).
"""

from .fdpool import FdPool
from .header import NpyHeader, read_header
from .library import NpyLibrary
from .reader import NpyReader
from .rows import RowIterator, iter_rows

__all__ = ["FdPool", "NpyHeader", "NpyLibrary", "NpyReader", "RowIterator", "iter_rows", "read_header"]
