"""Errors and warnings of :mod:`chunkmap.shm`.

They derive from :class:`chunkmap.errors.ChunkmapError` and from the builtin a caller would
catch::

    ChunkmapError(Exception)
    ├── SharedMemoryError(OSError)        a segment cannot be created, mapped or unlinked
    ├── ClosedError(ValueError)           use of a closed SharedArray (like I/O on a closed file)
    │   └── PoolClosedError               the SlotPool was closed, or aborted by an exception
    └── PoolTimeoutError(TimeoutError)    no slot became available within ``timeout``

    UserWarning
    └── SharedMemoryFallbackWarning       /dev/shm is missing or too small: files are used instead

Attaching to a segment that no longer exists raises :class:`chunkmap.errors.MissingFileError`
(a ``FileNotFoundError``).
"""

from __future__ import annotations

from ..errors import ChunkmapError

__all__ = [
    "SharedMemoryError",
    "ClosedError",
    "PoolClosedError",
    "PoolTimeoutError",
    "SharedMemoryFallbackWarning",
]


class SharedMemoryError(ChunkmapError, OSError):
    """A shared-memory segment cannot be created, mapped or unlinked."""


class ClosedError(ChunkmapError, ValueError):
    """A closed :class:`~chunkmap.shm.SharedArray` or :class:`~chunkmap.shm.SlotPool` was used."""


class PoolClosedError(ClosedError):
    """The slot pool was closed, or aborted because a producer or consumer failed.

    Attributes
    ----------
    reason : str
        Why the pool was closed (``"closed"``, or the failing party's exception).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the slot pool is closed: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason,))


class PoolTimeoutError(ChunkmapError, TimeoutError):
    """No slot became available within the given timeout."""


class SharedMemoryFallbackWarning(UserWarning):
    """/dev/shm is missing or too small, so shared arrays are memory-mapped files instead.

    A ``UserWarning`` (shown by default, unlike ``ResourceWarning``): the fallback works, but
    it writes through to a disk-backed file system, and the usual fix (``docker run
    --shm-size=...``, or ``CHUNKMAP_SHM_DIR`` pointing to a tmpfs) is the user's to apply.
    """
