"""Give the C heap's free memory back to the system between large phases of work.

A run allocates and frees many chunk-sized arrays, from several threads in the caller and
chunk after chunk in each worker; glibc keeps much of that in its arenas (measured on 64M
elements: ~170 MB in the caller), where it adds to the next phase's peak.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Callable

__all__ = ["release_free_memory"]


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
