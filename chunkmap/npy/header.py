"""Parse the header of a ``.npy`` file (format versions 1.0, 2.0 and 3.0), never through pickle.

A ``.npy`` file is a 6-byte magic string ``\\x93NUMPY``, a 2-byte version, a little-endian header
length (2 bytes in version 1, 4 bytes in versions 2 and 3), a Python-literal dict with the keys
``descr``, ``fortran_order`` and ``shape`` (latin-1 in versions 1 and 2, UTF-8 in version 3), then
the raw array bytes. The dict is read with :func:`ast.literal_eval`, which evaluates literals only.
Arrays whose dtype holds Python objects would need pickle to load and are refused.
"""

from __future__ import annotations

import ast
import os
import struct
from dataclasses import dataclass
from math import prod

import numpy as np
from numpy.lib.format import descr_to_dtype

from ..errors import MissingArrayError, NpyFormatError

__all__ = ["NpyHeader", "parse_header", "read_header"]

MAGIC = b"\x93NUMPY"
_FIRST_READ = 4096  # one page: holds every ordinary header, so one pread parses most files
_MAX_HEADER = 1 << 24  # a header longer than 16 MiB is corrupt, not ambitious
_DTYPES: dict[object, np.dtype] = {}  # descr -> dtype, so that 10,000 headers share one dtype


@dataclass(frozen=True, slots=True)
class NpyHeader:
    """What the header of a ``.npy`` file says, and where the data starts.

    Attributes
    ----------
    version : tuple of int
        Format version, ``(1, 0)``, ``(2, 0)`` or ``(3, 0)``.
    dtype : numpy.dtype
        Element type as stored, byte order included (``np.load`` returns the same).
    shape : tuple of int
        Shape of the logical array.
    fortran_order : bool
        True when the data is stored in Fortran (column-major) order.
    data_offset : int
        Byte offset of the first element in the file.

    Examples
    --------
    >>> import numpy as np
    >>> h = NpyHeader((1, 0), np.dtype("<f8"), (500, 30, 3), False, 128)
    >>> h.row_shape, h.row_size, h.nbytes
    ((30, 3), 90, 360000)
    """

    version: tuple[int, int]
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    data_offset: int

    @property
    def size(self) -> int:
        """Number of elements."""
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Number of data bytes."""
        return self.size * self.dtype.itemsize

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row ``arr[i]`` (raises ``IndexError`` for a 0-d array)."""
        if not self.shape:
            raise IndexError("a 0-d array has no rows; read it whole with read() or read_flat(0, 1)")
        return self.shape[1:]

    @property
    def row_size(self) -> int:
        """Number of elements in one row."""
        return prod(self.row_shape)

    @property
    def c_layout(self) -> bool:
        """True when the bytes are laid out in C order (Fortran order with at most one axis
        longer than 1 is the same layout)."""
        return not self.fortran_order or sum(n > 1 for n in self.shape) <= 1


def _fail(path: str | None, what: str) -> NpyFormatError:
    where = f"{path!r}" if path is not None else "the data"
    return NpyFormatError(
        f"{where} is not a readable .npy file: {what}; expected a file written by numpy.save "
        f"(format 1.0, 2.0 or 3.0) holding a non-object dtype"
    )


def _prefix_length(data: bytes, path: str | None) -> tuple[tuple[int, int], int, int]:
    """Return (version, header length, prefix length) from the first bytes."""
    if data[:6] != MAGIC:
        raise _fail(path, f"it starts with {bytes(data[:8])!r} instead of the magic {MAGIC!r}")
    if len(data) < 10:
        raise _fail(path, "the file ends inside its header")
    version = (data[6], data[7])
    if version == (1, 0):
        return version, struct.unpack_from("<H", data, 8)[0], 10
    if version in ((2, 0), (3, 0)):
        if len(data) < 12:
            raise _fail(path, "the file ends inside its header")
        return version, struct.unpack_from("<I", data, 8)[0], 12
    raise _fail(path, f"format version {version[0]}.{version[1]} is unknown")


def _dtype(descr: object, path: str | None) -> np.dtype:
    key = descr if isinstance(descr, str) else repr(descr)
    dt = _DTYPES.get(key)
    if dt is None:
        try:
            dt = descr_to_dtype(descr)
        except (TypeError, ValueError) as e:
            raise _fail(path, f"descr {descr!r} is not a numpy dtype ({e})") from None
        if dt.hasobject:
            raise _fail(path, f"its dtype {dt} holds Python objects, which only pickle can load")
        if len(_DTYPES) < 1024:
            _DTYPES[key] = dt
    return dt


def parse_header(data: bytes, path: str | None = None) -> NpyHeader | int:
    """Parse a header from the first bytes of a ``.npy`` file.

    Parameters
    ----------
    data : bytes
        The start of the file; 4096 bytes hold nearly every header.
    path : str, optional
        Named in error messages.

    Returns
    -------
    NpyHeader or int
        The header, or, when ``data`` is too short to hold it, the number of bytes needed.

    Raises
    ------
    NpyFormatError
        Not a ``.npy`` header, or an object dtype.

    Examples
    --------
    >>> import io, numpy as np
    >>> buf = io.BytesIO(); np.save(buf, np.zeros((4, 2), ">i2"))
    >>> parse_header(buf.getvalue())
    NpyHeader(version=(1, 0), dtype=dtype('>i2'), shape=(4, 2), fortran_order=False, data_offset=128)
    """
    version, hlen, plen = _prefix_length(data, path)
    if hlen > _MAX_HEADER:
        raise _fail(path, f"its header claims {hlen} bytes")
    end = plen + hlen
    if len(data) < end:
        return end
    raw = bytes(data[plen:end])
    try:
        text = raw.decode("utf-8" if version == (3, 0) else "latin-1")
        d = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise _fail(path, f"its header {raw[:60]!r}... is not a Python literal ({type(e).__name__})") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise _fail(path, f"its header {text[:80]!r} lacks the keys descr, fortran_order, shape")
    shape, fortran = d["shape"], d["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise _fail(path, f"shape {shape!r} is not a tuple of non-negative ints")
    if not isinstance(fortran, bool):
        raise _fail(path, f"fortran_order {fortran!r} is not a bool")
    return NpyHeader(version, _dtype(d["descr"], path), shape, fortran, end)


def read_header(path: str | os.PathLike[str]) -> NpyHeader:
    """Read and check the header of a ``.npy`` file; no file descriptor is kept.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    NpyHeader

    Raises
    ------
    MissingArrayError
        The file does not exist (a ``FileNotFoundError``).
    NpyFormatError
        Not a ``.npy`` file, an object dtype, or fewer data bytes than the header announces.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingArrayError(f"no .npy file at {path!r}; check the path or the folder") from None
    try:
        data = os.pread(fd, _FIRST_READ, 0)
        header = parse_header(data, path)
        if isinstance(header, int):
            data = os.pread(fd, header, 0)
            header = parse_header(data, path)
            if isinstance(header, int):
                raise _fail(path, "the file ends inside its header")
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size < header.data_offset + header.nbytes:
        raise _fail(
            path,
            f"it is truncated: {size} bytes, but shape {header.shape} of {header.dtype} needs "
            f"{header.data_offset + header.nbytes}",
        )
    return header
