"""numpy arrays shared between processes without copies, and a slot pool for pipelines.

- :class:`SharedArray` -- an array in shared memory (/dev/shm, or a memory-mapped file when
  /dev/shm is too small) that pickles as ``(name, shape, dtype, offset)`` and attaches once per
  process; the creating side owns and unlinks the segment.
- :class:`SlotPool` -- N pre-allocated shared arrays passed between any number of producer and
  consumer processes as free/filled tokens, with a shutdown that cannot hang.
- Errors (from :mod:`chunkmap.errors`): :class:`SharedMemoryError`, :class:`ClosedError`,
  :class:`PoolClosedError`, :class:`PeerDiedError` (a party's process ended without leaving the
  pool), :class:`PoolTimeoutError`; warning: :class:`SharedMemoryFallbackWarning`.

Cleanup guarantees and the choice of ``shm_open`` + ``mmap`` over
:class:`multiprocessing.shared_memory.SharedMemory` are explained in :mod:`chunkmap.shm.segment`.

>>> import numpy as np
>>> from chunkmap.shm import SharedArray
>>> with SharedArray.from_array(np.arange(4, dtype=np.int32)) as sa:
...     sa.array.sum()
np.int64(6)
"""

from __future__ import annotations

from .array import SharedArray
from ..errors import (
    ClosedError,
    PeerDiedError,
    PoolClosedError,
    PoolTimeoutError,
    SharedMemoryError,
    SharedMemoryFallbackWarning,
)
from .pool import Slot, SlotPool

__all__ = [
    "SharedArray",
    "SlotPool",
    "Slot",
    "SharedMemoryError",
    "ClosedError",
    "PoolClosedError",
    "PeerDiedError",
    "PoolTimeoutError",
    "SharedMemoryFallbackWarning",
]
