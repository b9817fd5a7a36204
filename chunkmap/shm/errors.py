"""Errors and warnings of :mod:`chunkmap.shm`, defined with the rest in :mod:`chunkmap.errors`.

Attaching to a segment that no longer exists raises :class:`chunkmap.errors.MissingFileError`
(a ``FileNotFoundError``).
"""

from __future__ import annotations

from ..errors import (
    ClosedError,
    PoolClosedError,
    PoolTimeoutError,
    SharedMemoryError,
    SharedMemoryFallbackWarning,
)

__all__ = [
    "SharedMemoryError",
    "ClosedError",
    "PoolClosedError",
    "PoolTimeoutError",
    "SharedMemoryFallbackWarning",
]
