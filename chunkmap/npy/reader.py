"""Positional reads of rows and flat slices of one ``.npy`` file, holding no file descriptor.

Every read opens the file, reads with ``pread`` straight into the destination array and closes
the file again, in one C call (``chunkmap/npy/_pread.c``; :mod:`chunkmap.npy._io` has the Python
twin): a reader is a path plus a parsed header (about 300 bytes), so a program can hold readers
for any number of files without meeting the open-files limit (``ulimit -n``) or the address-space
limit that a dict of ``np.load(mmap_mode="r")`` memmaps meets. On Linux the three system calls
cost about 5 us when the page cache is hot, ``open`` and ``close`` most of it. A reader given a
:class:`~chunkmap.npy.fdpool.FdPool` (``NpyLibrary(..., max_open_files=N)``) reads through a
bounded LRU pool of held descriptors instead: about 2 us for a file read recently (measured in
``benchmarks/bench_npy.py``).

What a "row" is
---------------
A row is always ``arr[i]`` of the *logical* array that ``np.load`` returns, and rows are returned
C-contiguous, whatever the file's order. In a C-order file a row is one contiguous byte range (one
read). In a Fortran-order file the elements of ``arr[i]`` are ``shape[0]`` elements apart, so a row
is gathered: the reader reads the byte span covering the wanted elements in blocks of at most
``_BLOCK`` bytes (or, when the gaps are large, one read per contiguous run) and copies them out.
Reading a single row of a Fortran file therefore costs about a read of the whole file; read ranges
of rows, or convert the file to C order, when rows are the access pattern.
"""

from __future__ import annotations

import operator
import os
from math import prod

import numpy as np

from ..errors import MissingArrayError, NpyFormatError, OptionError
from . import _io
from .fdpool import FdPool
from .header import NpyHeader, read_header

__all__ = ["NpyReader"]

_BLOCK = 1 << 22  # bytes read at once when gathering Fortran-order rows
_GAP = 1 << 16  # above this many bytes between runs, read each run on its own


def _bytes(arr: np.ndarray):
    """A writeable buffer over the bytes of a contiguous array (datetimes export no buffer)."""
    return arr if arr.dtype.kind in "biufc" else arr.reshape(-1).view(np.uint8)


def _missing(path: str) -> MissingArrayError:
    return MissingArrayError(f"no .npy file at {path!r} (was it moved or deleted?)")


def _truncated(path: str, offset: int) -> NpyFormatError:
    return NpyFormatError(
        f"{path!r} is truncated: the read at byte {offset} found end of file; "
        f"the file shrank after its header was read"
    )


def _pread_exact(fd: int, buf, want: int, offset: int, path: str) -> None:
    """Fill the ``want`` bytes of ``buf`` from ``offset`` of ``fd``; a short file is a format error."""
    got = _io.pread_fd(fd, buf, offset)
    if got != want:
        raise _truncated(path, offset + got)


class NpyReader:
    """Read rows, row ranges or flat slices of a ``.npy`` file with positional reads.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file.
    header : NpyHeader, optional
        An already parsed header (the library and unpickling pass it); read from the file otherwise.
    pool : FdPool, optional
        Read through this pool of held descriptors (``NpyLibrary(..., max_open_files=N)`` passes
        its own); by default every read opens and closes the file, holding nothing.

    Raises
    ------
    MissingArrayError
        The file does not exist, here or at a later read (a ``FileNotFoundError``).
    NpyFormatError
        The file is not a ``.npy`` file, is truncated, or holds objects.

    Notes
    -----
    Without a pool no file descriptor is held between calls; readers pickle as ``(path, header)``
    (never with their pool) and can be sent to worker processes. Results have the file's dtype (byte order included), like
    ``np.load``. ``out=`` may also have the opposite byte order; the bytes are then swapped in place.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp(); path = os.path.join(d, "a.npy")
    >>> np.save(path, np.arange(24.0).reshape(4, 3, 2))
    >>> r = NpyReader(path)
    >>> r.shape, len(r)
    ((4, 3, 2), 4)
    >>> r.read_row(1)[0]
    array([6., 7.])
    >>> r.read_rows(2, 4).shape
    (2, 3, 2)
    >>> r.read_flat(5, 8)
    array([5., 6., 7.])
    >>> os.remove(path); os.rmdir(d)
    """

    __slots__ = (
        "path", "header", "_row_shape", "_row_nbytes", "_c_layout", "_n", "_fast", "_data_offset",
        "_bpath", "_pread", "_dtype", "pool",
    )  # fmt: skip

    def __init__(
        self, path: str | os.PathLike[str], header: NpyHeader | None = None, *, pool: FdPool | None = None
    ) -> None:
        self.path: str = os.fspath(path)
        self.header: NpyHeader = read_header(self.path) if header is None else header
        if pool is not None and not isinstance(pool, FdPool):
            raise OptionError(f"pool= must be an FdPool or None, got {type(pool).__name__}")
        self.pool: FdPool | None = pool
        self._bpath = os.fsencode(self.path)
        # pread(path: bytes, buf, offset) -> bytes read: open + pread + close, or the pool's
        self._pread = _io.pread_path if pool is None else pool.pread
        h = self.header
        self._dtype = h.dtype
        self._c_layout = h.c_layout
        self._data_offset = h.data_offset
        self._fast = h.c_layout and h.dtype.kind in "biufc"  # these dtypes export a buffer
        if h.shape:
            self._n = h.shape[0]
            self._row_shape = h.shape[1:]
            self._row_nbytes = prod(self._row_shape) * h.dtype.itemsize
        else:
            self._n = -1  # no rows
            self._row_shape = None
            self._row_nbytes = 0

    def __reduce__(self):
        return (NpyReader, (self.path, self.header))

    def __repr__(self) -> str:
        h = self.header
        order = "F" if h.fortran_order else "C"
        return f"NpyReader({self.path!r}, shape={h.shape}, dtype={h.dtype}, order={order!r})"

    # -- what the file holds -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the logical array."""
        return self.header.shape

    @property
    def dtype(self) -> np.dtype:
        """Element dtype as stored in the file."""
        return self.header.dtype

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.header.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return self.header.size

    @property
    def nbytes(self) -> int:
        """Number of data bytes."""
        return self.header.nbytes

    @property
    def fortran_order(self) -> bool:
        """True when the file stores the array in Fortran order."""
        return self.header.fortran_order

    def __len__(self) -> int:
        if not self.header.shape:
            raise TypeError("len() of a 0-d array")
        return self.header.shape[0]

    # -- reads ---------------------------------------------------------------------------------
    def _out(self, out: np.ndarray | None, shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
        """Return the destination array and whether its bytes must be swapped after the read."""
        dt = self.header.dtype
        if out is None:
            return np.empty(shape, dt), False
        if not isinstance(out, np.ndarray):
            raise OptionError(f"out= must be a numpy array, got {type(out).__name__}")
        if out.shape != shape:
            raise OptionError(f"out= has shape {out.shape}; this read needs shape {shape}")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise OptionError("out= must be a writeable C-contiguous array; pass np.empty(...)")
        if out.dtype == dt:
            return out, False
        if out.dtype == dt.newbyteorder():
            return out, True
        raise OptionError(
            f"out= has dtype {out.dtype}; the file holds {dt} (out= may use either byte order)"
        )

    def _read_c(self, out: np.ndarray, offset: int, swap: bool) -> np.ndarray:
        if out.nbytes:
            offset += self._data_offset
            try:
                got = self._pread(self._bpath, _bytes(out), offset)
            except FileNotFoundError:
                raise _missing(self.path) from None
            if got != out.nbytes:
                raise _truncated(self.path, offset + got)
            if swap:
                out.byteswap(inplace=True)
        return out

    def _gather_fortran(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy logical rows [start, stop) of a Fortran-order file into C-contiguous ``out``."""
        h = self.header
        dt, isz, n = h.dtype, h.dtype.itemsize, h.shape[0]
        runs, length = prod(self._row_shape), stop - start
        tmp = np.empty((runs, length), dt)  # tmp[m] = elements start..stop of run m
        if tmp.size:
            base = h.data_offset + start * isz
            try:
                fd = _io.open_ro(self._bpath)
            except FileNotFoundError:
                raise _missing(self.path) from None
            try:
                if (n - length) * isz > _GAP:
                    for m in range(runs):
                        _pread_exact(fd, _bytes(tmp[m]), length * isz, base + m * n * isz, self.path)
                else:
                    per = max(1, _BLOCK // (n * isz))
                    buf = bytearray(((min(per, runs) - 1) * n + length) * isz)
                    for m0 in range(0, runs, per):
                        k = min(per, runs - m0)
                        span = memoryview(buf)[: ((k - 1) * n + length) * isz]
                        _pread_exact(fd, span, len(span), base + m0 * n * isz, self.path)
                        tmp[m0 : m0 + k] = np.ndarray((k, length), dt, span, 0, (n * isz, isz))
            finally:
                os.close(fd)
        # run m enumerates the row axes in reversed (Fortran) order
        out[...] = tmp.reshape(self._row_shape[::-1] + (length,)).T

    def _check_range(self, start: int, stop: int, n: int, what: str) -> None:
        if not 0 <= start <= stop <= n:
            raise IndexError(f"{what} [{start}, {stop}) is outside [0, {n}) of {self.path!r}")

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read rows ``arr[start:stop]`` of the logical array.

        Parameters
        ----------
        start, stop : int
            Row range, ``0 <= start <= stop <= len(self)``.
        out : numpy.ndarray, optional
            Writeable C-contiguous destination of shape ``(stop - start,) + shape[1:]``.

        Returns
        -------
        numpy.ndarray
            C-contiguous rows (``out`` when given).
        """
        if self._row_shape is None:
            raise IndexError("a 0-d array has no rows; use read() or read_flat(0, 1)")
        start, stop = operator.index(start), operator.index(stop)
        self._check_range(start, stop, self.header.shape[0], "rows")
        out, swap = self._out(out, (stop - start,) + self._row_shape)
        if self._c_layout:
            return self._read_c(out, start * self._row_nbytes, swap)
        self._gather_fortran(start, stop, out)
        return out

    def read_row(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read row ``arr[i]`` (negative ``i`` counts from the end).

        Parameters
        ----------
        i : int
            Row index.
        out : numpy.ndarray, optional
            Writeable C-contiguous destination of shape ``shape[1:]``.

        Returns
        -------
        numpy.ndarray
            The row, C-contiguous (``out`` when given).
        """
        n = self._n
        if type(i) is not int:
            i = operator.index(i)
        if not -n <= i < n:
            if n < 0:
                raise IndexError("a 0-d array has no rows; use read() or read_flat(0, 1)")
            raise IndexError(f"row {i} is out of range for {n} rows in {self.path!r}")
        if i < 0:
            i += n
        if self._fast:  # the hot path: C layout, plain dtype, no out=
            if out is None:
                out = np.empty(self._row_shape, self._dtype)
                nbytes = self._row_nbytes
                if nbytes:
                    offset = self._data_offset + i * nbytes
                    try:
                        got = self._pread(self._bpath, out, offset)
                    except FileNotFoundError:
                        raise _missing(self.path) from None
                    if got != nbytes:
                        raise _truncated(self.path, offset + got)
                return out
        if self._c_layout:
            out, swap = self._out(out, self._row_shape)
            return self._read_c(out, i * self._row_nbytes, swap)
        if out is None:
            return self.read_rows(i, i + 1)[0]
        out, _ = self._out(out, self._row_shape)  # a copy converts the byte order
        self.read_rows(i, i + 1, out[np.newaxis])
        return out

    def read_flat(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read elements ``[start, stop)`` of the C-order flattened logical array.

        This is ``np.load(path).ravel()[start:stop]`` without loading the rest, for C- and
        Fortran-order files alike; it is how :func:`chunkmap.run` reads one chunk of a ``.npy``
        input.

        Parameters
        ----------
        start, stop : int
            Flat element range, ``0 <= start <= stop <= size``.
        out : numpy.ndarray, optional
            Writeable 1-d destination of length ``stop - start``.

        Returns
        -------
        numpy.ndarray
            1-d array (``out`` when given).
        """
        start, stop = operator.index(start), operator.index(stop)
        self._check_range(start, stop, self.header.size, "elements")
        out, swap = self._out(out, (stop - start,))
        if self._c_layout:
            return self._read_c(out, start * self.header.dtype.itemsize, swap)
        if stop > start:
            m = prod(self._row_shape)
            r0, r1 = start // m, (stop - 1) // m + 1
            rows = np.empty((r1 - r0,) + self._row_shape, self.header.dtype)
            self._gather_fortran(r0, r1, rows)
            out[...] = rows.reshape(-1)[start - r0 * m : stop - r0 * m]
        return out

    def read(self) -> np.ndarray:
        """Read the whole array, in the file's order, as ``np.load`` would.

        Returns
        -------
        numpy.ndarray
        """
        h = self.header
        out = np.empty(h.shape, h.dtype, order="F" if h.fortran_order else "C")
        flat = out.reshape(-1, order="F" if h.fortran_order else "C")  # a view of out
        return self._read_c(flat, 0, False).reshape(h.shape, order="F" if h.fortran_order else "C")

    def __getitem__(self, key: int | slice) -> np.ndarray:
        """``reader[i]`` reads a row, ``reader[a:b]`` a range of rows (any step)."""
        if isinstance(key, slice):
            if self._row_shape is None:
                raise IndexError("a 0-d array has no rows")
            start, stop, step = key.indices(self.header.shape[0])
            if step == 1:
                return self.read_rows(start, max(start, stop))
            idx = range(start, stop, step)
            out = np.empty((len(idx),) + self._row_shape, self.header.dtype)
            for j, i in enumerate(idx):
                self.read_rows(i, i + 1, out[j : j + 1])
            return out
        return self.read_row(key)
