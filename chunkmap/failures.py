"""Failure records in columns: positions, exception types and messages without a Python object each.

numpy and zlib only. A run that skips millions of exceptions must not hold millions of tuples and
strings: :class:`FailureRecords` keeps one int64 position per failure, a small code into a table
of exception type names, and the messages as compressed UTF-8 blocks with end offsets (about 20
bytes plus a tenth of the message's length per failure, against ~200 bytes as a tuple of Python
objects). It crosses process boundaries and is checkpointed as a handful of arrays; the strings
are decoded only when asked for.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["FailureRecords"]

#: how messages are encoded: UTF-8, lone surrogates (from odd ``__str__`` methods) kept
_ENCODING, _ERRORS = "utf-8", "surrogatepass"
#: zlib level of the message blocks: 1 compresses 2 MB of messages ~12x in ~8 ms
_LEVEL = 1


@dataclass(frozen=True, eq=False)
class FailureRecords:
    """``(position, type name, message)`` records in columns.

    Attributes
    ----------
    positions : ndarray of int64
        Position of each failure (in its chunk, or a flat index once collected).
    type_codes : ndarray of int32
        Index of each failure's exception type name in ``type_names``.
    type_names : tuple of str
        The distinct exception type names.
    blocks : tuple of bytes
        The messages, UTF-8, one after the other, zlib-compressed in blocks (one per set of
        records made at once; messages of one function compress ~10x).
    block_counts : ndarray of int64
        Records in each block.
    text_ends : ndarray of int64
        End offset of each message in its block's uncompressed text.

    Examples
    --------
    >>> records = FailureRecords.from_tuples([(1, "ValueError", "bad"), (4, "KeyError", "'k'")])
    >>> len(records), list(records)
    (2, [(1, 'ValueError', 'bad'), (4, 'KeyError', "'k'")])
    >>> list(FailureRecords.concat([records, records], [0, 10]))[2:]
    [(11, 'ValueError', 'bad'), (14, 'KeyError', "'k'")]
    >>> list(records.take([1]))
    [(4, 'KeyError', "'k'")]
    """

    positions: np.ndarray
    type_codes: np.ndarray
    type_names: tuple[str, ...]
    blocks: tuple[bytes, ...]
    block_counts: np.ndarray
    text_ends: np.ndarray

    @classmethod
    def empty(cls) -> FailureRecords:
        """No failure."""
        none = np.empty(0, np.int64)
        return cls(none, np.empty(0, np.int32), (), (), none, none)

    @classmethod
    def from_tuples(cls, records: Sequence[tuple[int, str, str]]) -> FailureRecords:
        """Records from ``(position, type name, message)`` tuples, as the per-element loop makes them."""
        if not records:
            return cls.empty()
        positions, names, messages = zip(*records)
        return cls.from_columns(positions, names, messages)

    @classmethod
    def from_columns(cls, positions: Iterable[int], names: Iterable[str], messages: Iterable[str]) -> FailureRecords:
        """Records from a column of positions, one of type names and one of messages."""
        positions = np.fromiter(positions, np.int64)
        table: dict[str, int] = {}
        codes = np.fromiter((table.setdefault(str(name), len(table)) for name in names), np.int32)
        messages = [str(message) for message in messages]
        if not len(positions) == len(codes) == len(messages):
            raise ValueError(f"columns of different lengths: {len(positions)} positions, {len(codes)} types, "
                             f"{len(messages)} messages")
        if not messages:
            return cls.empty()
        joined = "".join(messages)
        text = joined.encode(_ENCODING, _ERRORS)
        if len(text) == len(joined):  # ASCII: one byte per character
            lengths = np.fromiter(map(len, messages), np.int64, len(messages))
        else:
            lengths = np.fromiter((len(m.encode(_ENCODING, _ERRORS)) for m in messages), np.int64, len(messages))
        return cls(positions, codes, tuple(table), (zlib.compress(text, _LEVEL),),
                   np.array([len(messages)], np.int64), np.cumsum(lengths, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Sequence[FailureRecords], offsets: Sequence[int] | None = None) -> FailureRecords:
        """The parts one after the other, each part's positions shifted by its offset (blocks are kept)."""
        offsets = [0] * len(parts) if offsets is None else offsets
        kept = [(part, offset) for part, offset in zip(parts, offsets) if len(part)]
        if not kept:
            return cls.empty()
        if len(kept) == 1 and kept[0][1] == 0:
            return kept[0][0]
        table: dict[str, int] = {}
        codes = []
        for part, _ in kept:
            remap = np.array([table.setdefault(name, len(table)) for name in part.type_names], np.int32)
            codes.append(remap[part.type_codes])
        return cls(
            np.concatenate([part.positions + offset for part, offset in kept]),
            np.concatenate(codes),
            tuple(table),
            tuple(block for part, _ in kept for block in part.blocks),
            np.concatenate([part.block_counts for part, _ in kept]),
            np.concatenate([part.text_ends for part, _ in kept]),
        )

    def __len__(self) -> int:
        return len(self.positions)

    def types(self) -> list[str]:
        """Each failure's exception type name."""
        return [self.type_names[code] for code in self.type_codes.tolist()]

    def messages(self) -> list[str]:
        """Each failure's message (the blocks decompressed one at a time)."""
        messages: list[str] = []
        first = 0
        for block, count in zip(self.blocks, self.block_counts.tolist()):
            ends = self.text_ends[first : first + count].tolist()
            first += count
            raw = zlib.decompress(block)
            text = raw.decode(_ENCODING, _ERRORS)
            if len(text) == len(raw):  # ASCII: byte offsets are character offsets
                messages.extend(text[start:end] for start, end in zip([0, *ends[:-1]], ends))
            else:
                view = memoryview(raw)
                messages.extend(bytes(view[start:end]).decode(_ENCODING, _ERRORS)
                                for start, end in zip([0, *ends[:-1]], ends))
        return messages

    def take(self, indices: Sequence[int] | np.ndarray) -> FailureRecords:
        """The records at ``indices`` (in that order, each in ``range(len(self))``), packed anew.

        Only the blocks holding them are decompressed, so the first rows of millions of failures
        cost one block, not every message.
        """
        indices = np.asarray(indices, np.int64).reshape(-1)
        block_starts = np.concatenate([[0], np.cumsum(self.block_counts)]).astype(np.int64)
        texts: dict[int, bytes] = {}
        messages = []
        for index, block in zip(indices.tolist(), (np.searchsorted(block_starts, indices, "right") - 1).tolist()):
            if block not in texts:
                texts[block] = zlib.decompress(self.blocks[block])
            start = int(self.text_ends[index - 1]) if index > block_starts[block] else 0
            messages.append(texts[block][start : int(self.text_ends[index])].decode(_ENCODING, _ERRORS))
        names = [self.type_names[code] for code in self.type_codes[indices].tolist()]
        return FailureRecords.from_columns(self.positions[indices], names, messages)

    def __iter__(self) -> Iterator[tuple[int, str, str]]:
        return iter(zip(self.positions.tolist(), self.types(), self.messages()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FailureRecords):
            return NotImplemented
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"FailureRecords({list(self)!r})" if len(self) <= 5 else f"FailureRecords(<{len(self)} records>)"

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        arrays = (self.positions, self.type_codes, self.block_counts, self.text_ends)
        return sum(array.nbytes for array in arrays) + sum(len(block) for block in self.blocks)
