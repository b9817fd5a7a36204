"""A flat boolean array kept as one bit per element: the run's mask of elements to compute.

numpy only. 64M elements take 8 MB instead of 64 MB; ranges are unpacked as they are read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BitMask"]

#: bits set in each byte value (np.bitwise_count needs numpy 2)
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)

#: bytes popcounted per step of :meth:`BitMask.count` (bounds its temporary)
_COUNT_BLOCK = 1 << 22


class BitMask:
    """Flags for the flat indices ``0 .. size - 1``, packed (numpy's ``packbits`` bit order).

    Slicing with a unit step gives a boolean array; :meth:`count` counts the set flags.

    Examples
    --------
    >>> mask = BitMask.pack(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 1], bool))
    >>> len(mask), mask.count(), mask[6:10].tolist(), mask.bits.nbytes
    (10, 6, [False, True, True, True], 2)
    """

    def __init__(self, bits: np.ndarray, size: int) -> None:
        if bits.dtype != np.uint8 or bits.ndim != 1 or len(bits) != (size + 7) // 8:
            raise ValueError(f"expected {(size + 7) // 8} packed uint8 bytes for {size} flags, got "
                             f"{bits.dtype} of shape {bits.shape}")
        self.bits = bits
        self.size = size

    @classmethod
    def pack(cls, flags: np.ndarray) -> BitMask:
        """The flags of a boolean array, in C order."""
        flags = np.asarray(flags, dtype=bool).reshape(-1)
        return cls(np.packbits(flags), len(flags))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"a BitMask is read by slices, got {type(key).__name__}")
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise ValueError(f"a BitMask is read by slices of step 1, got step {step}")
        if stop <= start:
            return np.zeros(0, bool)
        first = start >> 3
        flags = np.unpackbits(self.bits[first : (stop + 7) >> 3]).view(bool)
        return flags[start - (first << 3) : stop - (first << 3)]

    def count(self) -> int:
        """How many flags are set."""
        return sum(int(_POPCOUNT[self.bits[i : i + _COUNT_BLOCK]].sum(dtype=np.int64))
                   for i in range(0, len(self.bits), _COUNT_BLOCK))

    def __reduce__(self):
        return (BitMask, (self.bits, self.size))
