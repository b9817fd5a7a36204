"""Iterate over the rows of one or many ``.npy`` files, read ahead by a background thread.

A producer thread reads blocks of rows with :class:`~chunkmap.npy.reader.NpyReader` into a bounded
queue; the consumer takes rows from the current block. The first block is one row, and blocks
double up to the prefetch budget, so the first row is ready after one small read while the steady
state reads in large blocks. The thread holds no reference to the iterator: when the consumer
breaks out of its loop, calls :meth:`RowIterator.close`, leaves the ``with`` block, or drops the
iterator, the thread is told to stop, the queue is drained and the thread joined.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Union

import numpy as np

from .reader import NpyReader

__all__ = ["RowIterator", "iter_rows"]

Source = Union[str, "os.PathLike[str]", NpyReader]
_BLOCK_BYTES = 1 << 20  # largest block the producer reads at once
_FIRST_ROWS = 16  # rows of the first block, read in the caller's thread
_POLL = 0.05  # seconds between checks of the stop flag while the queue is full
_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            pass
    return False


def _reader(src: Source) -> NpyReader:
    reader = src if isinstance(src, NpyReader) else NpyReader(src)
    if reader.ndim == 0:
        raise IndexError(f"{reader.path!r} holds a 0-d array, which has no rows")
    return reader


def _block_rows(reader: NpyReader, budget_rows: int, budget_bytes: int) -> int:
    row_nbytes = max(1, reader.nbytes // max(1, len(reader)))
    return max(1, min(budget_rows, budget_bytes // row_nbytes))


def _produce(
    sources: list[Source], first_row: int, base: int, q: queue.Queue, stop: threading.Event, prefetch: int
) -> None:
    """Thread body: read blocks of rows of every source in turn and queue them."""
    try:
        size = _FIRST_ROWS * 2
        for k, src in enumerate(sources):
            if stop.is_set():
                return
            reader = _reader(src)
            most = _block_rows(reader, max(1, prefetch // 4), _BLOCK_BYTES)
            i, n = (first_row if k == 0 else 0), len(reader)
            while i < n:
                if stop.is_set():
                    return
                j = min(n, i + min(size, most))
                if not _put(q, (base + k, i, reader.read_rows(i, j)), stop):
                    return
                i, size = j, size * 2
        _put(q, _DONE, stop)
    except BaseException as e:  # handed to the consumer, raised there
        _put(q, _Failure(e), stop)


def _shutdown(stop: threading.Event, q: queue.Queue, holder: list) -> None:
    stop.set()
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    thread = holder[0]
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=10)


class RowIterator(Iterator[Any]):
    """Rows of one or many ``.npy`` files, in order, read ahead in a background thread.

    Parameters
    ----------
    sources : path, NpyReader, or iterable of them
        The files; rows of the first file come first.
    prefetch : int, default 256
        Rows read ahead at most (queued in 4 blocks of up to ``prefetch // 4`` rows and 1 MiB).
    with_index : bool, default False
        Yield ``(source_number, row_number, row)`` instead of ``row``.

    Notes
    -----
    The first ``next()`` reads a small first block (up to 16 rows) itself, so the first row costs
    one header parse and one read, not a thread start; the second ``next()`` starts the prefetch
    thread, which continues after that block. Rows are views of blocks the iterator owns; copy a
    row to keep it without pinning its block. Errors met by the thread (a missing or corrupt
    file) are raised by ``next()`` at the position where they occurred.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp(); paths = [os.path.join(d, f"{k}.npy") for k in range(2)]
    >>> for k, p in enumerate(paths): np.save(p, np.full((3, 2), k))
    >>> with RowIterator(paths) as rows:
    ...     [int(r.sum()) for r in rows]
    [0, 0, 0, 2, 2, 2]
    >>> for p in paths: os.remove(p)
    >>> os.rmdir(d)
    """

    def __init__(
        self,
        sources: Source | Iterable[Source],
        *,
        prefetch: int = 256,
        with_index: bool = False,
    ) -> None:
        if isinstance(sources, (str, bytes, os.PathLike, NpyReader)):
            sources = [sources]
        self._sources: list[Source] | None = list(sources)
        self._prefetch = max(1, int(prefetch))
        self._with_index = with_index
        self._block: np.ndarray | None = None
        self._src = self._row0 = self._pos = 0
        self._rest: tuple[list[Source], int, int] | None = None  # what the thread will read
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._holder: list[threading.Thread | None] = [None]
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._holder)

    def __iter__(self) -> RowIterator:
        return self

    def _first_block(self) -> None:
        """Read the first rows in the caller's thread; remember where the thread must go on."""
        srcs, self._sources = self._sources or [], None
        for k, src in enumerate(srcs):
            try:
                reader = _reader(src)
            except BaseException:
                self.close()
                raise
            n = len(reader)
            if n == 0:
                continue
            j = min(n, _block_rows(reader, _FIRST_ROWS, _BLOCK_BYTES // 16))
            self._src, self._row0, self._block, self._pos = k, 0, reader.read_rows(0, j), 0
            rest = ([reader] if j < n else []) + srcs[k + 1 :]
            self._rest = (rest, j if j < n else 0, k if j < n else k + 1) if rest else None
            return
        self.close()
        raise StopIteration

    def _start(self) -> None:
        rest, first_row, base = self._rest
        self._rest = None
        thread = threading.Thread(
            target=_produce,
            args=(rest, first_row, base, self._queue, self._stop, self._prefetch),
            name="chunkmap-npy-prefetch",
            daemon=True,
        )
        self._holder[0] = thread
        thread.start()

    def _refill(self) -> None:
        if not self._finalizer.alive:
            raise StopIteration
        if self._sources is not None:
            return self._first_block()
        if self._holder[0] is None:
            if self._rest is None:
                self.close()
                raise StopIteration
            self._start()
        item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        self._src, self._row0, self._block = item
        self._pos = 0

    def __next__(self) -> Any:
        block = self._block
        if block is None or self._pos >= len(block):
            self._refill()
            block = self._block
        elif self._rest is not None:  # second row: the prefetch thread starts now
            self._start()
        pos = self._pos
        self._pos = pos + 1
        if self._with_index:
            return self._src, self._row0 + pos, block[pos]
        return block[pos]

    def close(self) -> None:
        """Stop the prefetch thread and wait for it; further ``next()`` raise StopIteration."""
        self._block = None
        self._rest = None
        self._sources = None
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True once the iterator is exhausted or closed."""
        return not self._finalizer.alive

    def __enter__(self) -> RowIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_rows(
    sources: Source | Iterable[Source], *, prefetch: int = 256, with_index: bool = False
) -> RowIterator:
    """Iterate over the rows of one or many ``.npy`` files with background prefetch.

    Shorthand for :class:`RowIterator`; see there for the parameters.

    Returns
    -------
    RowIterator
    """
    return RowIterator(sources, prefetch=prefetch, with_index=with_index)
