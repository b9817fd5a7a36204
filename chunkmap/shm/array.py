"""SharedArray: a numpy array in shared memory that pickles as a reference.

The creating side owns the segment (:meth:`SharedArray.create`, :meth:`SharedArray.from_array`);
a pickled SharedArray is ``(name, shape, dtype, offset)`` -- O(1) whatever its size -- and
unpickling attaches, once per process (see :mod:`chunkmap.shm.segment`). The attaching process
may have been started before the segment existed (a long-lived worker pool), under fork or spawn.

>>> import pickle, numpy as np
>>> with SharedArray.from_array(np.arange(6.0).reshape(2, 3)) as sa:
...     ref = pickle.dumps(sa)                       # ~200 bytes, whatever the size
...     other = pickle.loads(ref)                    # what a worker process would do
...     other.array[1, 2] = -1.0                     # writes go to the same memory
...     sa.array.tolist()
[[0.0, 1.0, 2.0], [3.0, 4.0, -1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ClosedError, DtypeError, InputError, SharedMemoryError
from . import segment as _segment

__all__ = ["SharedArray"]


_DTYPES: dict[Any, np.dtype] = {}  # dtype-like -> checked dtype (unpickling is a hot path)


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        pass
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise DtypeError(f"dtype {dtype!r} is not a numpy dtype; pass e.g. 'float32' or np.int64") from exc
    if dt.hasobject or dt.itemsize == 0:
        raise DtypeError(
            f"dtype {dt} cannot live in shared memory (it holds Python objects or has no size); "
            f"use a numeric, bool, datetime or fixed-size structured dtype"
        )
    if isinstance(dtype, (str, np.dtype)) and len(_DTYPES) < 1024:
        _DTYPES[dtype] = dt
    return dt


def _check_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if type(shape) is tuple and all(type(n) is int and n >= 0 for n in shape):
        return shape
    try:
        dims = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"shape must be an int or a sequence of ints, got {shape!r}") from exc
    if any(n < 0 for n in dims):
        raise InputError(f"shape must not have negative dimensions, got {dims}")
    return dims


class SharedArray:
    """A C-contiguous numpy array in a shared-memory segment.

    Do not call the constructor: use :meth:`create`, :meth:`from_array` or :meth:`attach`, or
    unpickle one.

    The object returned by :meth:`create` / :meth:`from_array` *owns* the segment: it is unlinked by
    :meth:`unlink`, at the end of a ``with`` block, when the owner (and every SharedArray derived
    from it in the creating process) is garbage collected, or at exit. Numpy views obtained from
    :attr:`array` keep the memory mapped, not the segment alive: keep the owner while other
    processes still have to attach.

    Parameters
    ----------
    segment : chunkmap.shm.segment.Segment
        The mapped segment.
    shape : tuple of int
        Shape of the array.
    dtype : numpy.dtype
        Its dtype.
    offset : int
        Byte offset of the array in the segment.
    owner : bool
        Whether this object owns (unlinks) the segment.
    """

    __slots__ = ("_segment", "_shape", "_dtype", "_offset", "_owner", "_array", "__weakref__")

    def __init__(
        self, segment: _segment.Segment, shape: tuple[int, ...], dtype: np.dtype, offset: int = 0, owner: bool = False
    ) -> None:
        self._segment: _segment.Segment | None = segment
        self._shape = shape
        self._dtype = dtype
        self._offset = offset
        self._owner = owner
        nbytes = math.prod(shape) * dtype.itemsize
        if offset < 0 or offset + nbytes > segment.size:
            raise InputError(
                f"an array of shape {shape} and dtype {dtype} at offset {offset} needs {offset + nbytes} bytes; "
                f"segment {segment.name!r} has {segment.size}"
            )
        self._array: np.ndarray | None = np.ndarray(shape, dtype, buffer=segment.mmap, offset=offset)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, shape: int | Sequence[int], dtype: Any = np.float64) -> SharedArray:
        """A new zero-filled shared array, owned by this process.

        Parameters
        ----------
        shape : int or sequence of int
            Shape; dimensions may be 0.
        dtype : numpy dtype-like
            Any dtype without Python objects (default float64).

        Returns
        -------
        SharedArray

        Raises
        ------
        chunkmap.errors.DtypeError
            For object dtypes.
        chunkmap.shm.SharedMemoryError
            If there is no room for it.

        Examples
        --------
        >>> with SharedArray.create((2, 3), "int16") as sa:
        ...     sa.array.sum(), sa.array.shape, sa.array.dtype
        (np.int64(0), (2, 3), dtype('int16'))
        """
        dims = _check_shape(shape)
        dt = _check_dtype(dtype)
        seg = _segment.create(math.prod(dims) * dt.itemsize)
        return cls(seg, dims, dt, 0, owner=True)

    @classmethod
    def from_array(cls, a: Any) -> SharedArray:
        """A new shared array holding a copy of ``a`` (one copy, C order), owned by this process.

        Examples
        --------
        >>> import numpy as np
        >>> with SharedArray.from_array(np.eye(2, dtype=np.float32)) as sa:
        ...     sa.array.tolist()
        [[1.0, 0.0], [0.0, 1.0]]
        """
        a = np.asarray(a)
        sa = cls.create(a.shape, a.dtype)
        np.copyto(sa.array, a, casting="no")
        return sa

    @classmethod
    def attach(cls, name: str, shape: int | Sequence[int], dtype: Any, offset: int = 0) -> SharedArray:
        """Attach to the existing segment ``name`` (what unpickling does).

        The mapping is shared by every attachment of ``name`` in this process; in the creating
        process it is the creator's own mapping.

        Raises
        ------
        chunkmap.errors.MissingFileError
            If the segment does not exist (any more).
        """
        return cls(_segment.attach(name), _check_shape(shape), _check_dtype(dtype), int(offset))

    def __reduce__(self):
        self._check_open()
        dt = self._dtype.str if np.dtype(self._dtype.str) == self._dtype else self._dtype
        return (_attach, (self.name, self._shape, dt, self._offset))

    # -- views -----------------------------------------------------------------------------------
    def rows(self, start: int, stop: int) -> SharedArray:
        """Rows ``start:stop`` (first axis) as a SharedArray that pickles with an offset.

        The result does not own the segment (it keeps it alive in the creating process).

        Examples
        --------
        >>> import numpy as np, pickle
        >>> with SharedArray.from_array(np.arange(10)) as sa:
        ...     part = pickle.loads(pickle.dumps(sa.rows(3, 6)))
        ...     part.array.tolist(), part.offset
        ([3, 4, 5], 24)
        """
        self._check_open()
        if not self._shape:
            raise InputError("a 0-d SharedArray has no rows")
        start, stop, _ = slice(start, stop).indices(self._shape[0])
        stop = max(stop, start)
        row_bytes = math.prod(self._shape[1:]) * self._dtype.itemsize
        return SharedArray(
            self._segment, (stop - start,) + self._shape[1:], self._dtype, self._offset + start * row_bytes
        )

    # -- properties ------------------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray:
        """The numpy view of the shared memory (writable, C-contiguous)."""
        self._check_open()
        return self._array  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The segment's name: ``chunkmap_...`` in /dev/shm, or the path of the fallback file."""
        return self._segment_name()

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def offset(self) -> int:
        """Byte offset of the array in its segment."""
        return self._offset

    @property
    def nbytes(self) -> int:
        return math.prod(self._shape) * self._dtype.itemsize

    @property
    def owner(self) -> bool:
        """True for the object that created the segment, in the creating process, until unlinked."""
        return self._owner and self._segment is not None and self._segment.owner

    @property
    def closed(self) -> bool:
        return self._array is None

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self.array
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d SharedArray")
        return self._shape[0]

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop this object's view. The memory is unmapped once no numpy view of it is left.

        Closing the owner does not unlink the segment (see :meth:`unlink`); calling it again
        does nothing.
        """
        self._array = None
        if not self._owner:
            self._segment = None

    def unlink(self) -> None:
        """Remove the segment (owner only); attached processes keep their mappings until dropped.

        Raises
        ------
        chunkmap.shm.SharedMemoryError
            When called on an attachment, or in a process other than the creator.
        """
        if self._segment is None:
            raise ClosedError("this SharedArray attachment is closed")
        if not self._owner:
            raise SharedMemoryError(
                f"this SharedArray is an attachment to {self._segment.name!r}; only the object that "
                f"created the segment unlinks it"
            )
        self._segment.unlink()

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owner:
            self._segment.unlink()  # type: ignore[union-attr]
        self.close()

    def _check_open(self) -> None:
        if self._array is None:
            raise ClosedError(f"SharedArray {self._segment_name()!r} is closed")

    def _segment_name(self) -> str:
        return self._segment.name if self._segment is not None else "<closed>"

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("owner" if self.owner else "attached")
        return f"SharedArray(name={self.name!r}, shape={self._shape}, dtype={self._dtype}, {state})"


def _attach(name: str, shape: tuple[int, ...], dtype: Any, offset: int) -> SharedArray:
    return SharedArray.attach(name, shape, dtype, offset)
