"""Failure records in columns: positions, exception types, messages and inputs without a Python object each.

numpy and zstandard only. A run that skips millions of exceptions must not hold millions of tuples
and strings: :class:`FailureRecords` keeps one int64 position per failure, a small code into a
table of exception type names, the messages as compressed UTF-8 blocks with end offsets, and the
failing elements' input values as one array per input (about 20 bytes plus a tenth of the
message's length plus the inputs' itemsizes per failure, against ~200 bytes as a tuple of
Python objects). It crosses process boundaries and is checkpointed as a handful of arrays; the
strings are decoded only when asked for.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from operator import itemgetter
from typing import Iterable, Iterator, Sequence

import numpy as np
import zstandard

__all__ = ["FailureRecords", "input_columns"]

#: how messages are encoded: UTF-8, lone surrogates (from odd ``__str__`` methods) kept
_ENCODING, _ERRORS = "utf-8", "surrogatepass"
#: zstd level of the message blocks: 1 compresses 5.5 MB of messages (55k failures of the stub,
#: each naming its inputs) 5.7x in ~10 ms, where zlib's level 1 took 47 ms for 4.6x
_LEVEL = 1
#: the first bytes of a zstd frame; blocks without them are zlib streams (records made before 2026-12-02)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _compress(text: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_LEVEL).compress(text)


def _decompress(block: bytes) -> bytes:
    """A message block's text: zstd, or zlib for blocks written by older versions (checkpoints)."""
    if block[:4] == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().decompress(block)
    return zlib.decompress(block)


def input_columns(columns: Sequence[np.ndarray], positions: np.ndarray | Sequence[int]) -> tuple[np.ndarray, ...]:
    """The values of ``columns`` (one 1-D array per input) at ``positions``: one new array per input.

    Each keeps its input's dtype, in native byte order (``.item()`` gives the scalar ``func``
    was called with).

    >>> input_columns([np.array([1.5, 2.5, 3.5], ">f8"), np.array([True, False, True])], [0, 2])
    (array([1.5, 3.5]), array([ True,  True]))
    """
    positions = np.asarray(positions, np.int64)
    return tuple(np.asarray(column)[positions].astype(column.dtype.newbyteorder("="), copy=False)
                 for column in columns)


@dataclass(frozen=True, eq=False)
class FailureRecords:
    """``(position, type name, message)`` records in columns, with the failing elements' inputs.

    Attributes
    ----------
    positions : ndarray of int64
        Position of each failure (in its chunk, or a flat index once collected).
    type_codes : ndarray of int32
        Index of each failure's exception type name in ``type_names``.
    type_names : tuple of str
        The distinct exception type names.
    blocks : tuple of bytes
        The messages, UTF-8, one after the other, zstd-compressed in blocks (one per set of
        records made at once; messages of one function compress ~10x).
    block_counts : ndarray of int64
        Records in each block.
    text_ends : ndarray of int64
        End offset of each message in its block's uncompressed text.
    inputs : tuple of ndarray
        The input values ``func`` failed on: one 1-D array per input (its dtype), a value per
        record; empty when the records were made without them.

    Examples
    --------
    >>> records = FailureRecords.from_tuples([(1, "ValueError", "bad"), (4, "KeyError", "'k'")])
    >>> len(records), list(records)
    (2, [(1, 'ValueError', 'bad'), (4, 'KeyError', "'k'")])
    >>> list(FailureRecords.concat([records, records], [0, 10]))[2:]
    [(11, 'ValueError', 'bad'), (14, 'KeyError', "'k'")]
    >>> list(records.take([1]))
    [(4, 'KeyError', "'k'")]
    >>> with_inputs = FailureRecords.from_tuples([(1, "ValueError", "bad")], (np.array([0.5]), np.array([3])))
    >>> FailureRecords.concat([with_inputs, with_inputs]).inputs
    (array([0.5, 0.5]), array([3, 3]))
    """

    positions: np.ndarray
    type_codes: np.ndarray
    type_names: tuple[str, ...]
    blocks: tuple[bytes, ...]
    block_counts: np.ndarray
    text_ends: np.ndarray
    inputs: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        lengths = {len(column) for column in self.inputs}
        if lengths - {len(self.positions)}:
            raise ValueError(f"{len(self.positions)} failures but input columns of lengths {sorted(lengths)}; "
                             f"expected one input value per failure in each column")

    @classmethod
    def empty(cls) -> FailureRecords:
        """No failure."""
        none = np.empty(0, np.int64)
        return cls(none, np.empty(0, np.int32), (), (), none, none)

    @classmethod
    def from_tuples(cls, records: Sequence[tuple[int, str, str]],
                    inputs: Sequence[np.ndarray] = ()) -> FailureRecords:
        """Records from ``(position, type name, message)`` tuples, as the per-element loop makes them,
        and the input columns of the failing elements (one value per record in each)."""
        if not records:
            return cls.empty()
        count = len(records)
        positions = np.fromiter(map(itemgetter(0), records), np.int64, count)
        return cls.from_columns(positions, map(itemgetter(1), records), map(itemgetter(2), records), inputs)

    @classmethod
    def from_columns(cls, positions: Iterable[int], names: Iterable[str], messages: Iterable[str],
                     inputs: Sequence[np.ndarray] = ()) -> FailureRecords:
        """Records from a column of positions, one of type names, one of messages and one per input."""
        positions = positions if isinstance(positions, np.ndarray) else np.fromiter(positions, np.int64)
        positions = positions.astype(np.int64, copy=False)
        names = list(map(str, names))
        table = {name: code for code, name in enumerate(dict.fromkeys(names))}
        if len(table) == 1:  # the usual case, one exception type: no lookup per failure
            codes = np.zeros(len(names), np.int32)
        else:
            codes = np.fromiter(map(table.__getitem__, names), np.int32, len(names))
        messages = list(map(str, messages))
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
        return cls(positions, codes, tuple(table), (_compress(text),),
                   np.array([len(messages)], np.int64), np.cumsum(lengths, dtype=np.int64),
                   tuple(np.asarray(column) for column in inputs))

    @classmethod
    def concat(cls, parts: Sequence[FailureRecords], offsets: Sequence[int] | None = None) -> FailureRecords:
        """The parts one after the other, each part's positions shifted by its offset (blocks are kept).

        Raises
        ------
        ValueError
            The parts (those with records) hold different numbers of input columns.
        """
        offsets = [0] * len(parts) if offsets is None else offsets
        kept = [(part, offset) for part, offset in zip(parts, offsets) if len(part)]
        if not kept:
            return cls.empty()
        if len(kept) == 1 and kept[0][1] == 0:
            return kept[0][0]
        widths = {len(part.inputs) for part, _ in kept}
        if len(widths) > 1:
            raise ValueError(f"cannot join failure records with {sorted(widths)} input columns; expected the "
                             f"same inputs in every part")
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
            tuple(np.concatenate(columns) for columns in zip(*(part.inputs for part, _ in kept))),
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
            raw = _decompress(block)
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
                texts[block] = _decompress(self.blocks[block])
            start = int(self.text_ends[index - 1]) if index > block_starts[block] else 0
            messages.append(texts[block][start : int(self.text_ends[index])].decode(_ENCODING, _ERRORS))
        names = [self.type_names[code] for code in self.type_codes[indices].tolist()]
        return FailureRecords.from_columns(self.positions[indices], names, messages,
                                           [column[indices] for column in self.inputs])

    def __iter__(self) -> Iterator[tuple[int, str, str]]:
        return iter(zip(self.positions.tolist(), self.types(), self.messages()))

    def input_tuples(self) -> Iterator[tuple]:
        """Each failure's inputs as the tuple of Python scalars ``func`` was called with (``()`` without inputs)."""
        if not self.inputs:
            return itertools.repeat((), len(self))
        return zip(*(column.tolist() for column in self.inputs))

    def __eq__(self, other: object) -> bool:
        """Same positions, types and messages (inputs are not compared: a NaN input never equals itself)."""
        if not isinstance(other, FailureRecords):
            return NotImplemented
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"FailureRecords({list(self)!r})" if len(self) <= 5 else f"FailureRecords(<{len(self)} records>)"

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        arrays = (self.positions, self.type_codes, self.block_counts, self.text_ends, *self.inputs)
        return sum(array.nbytes for array in arrays) + sum(len(block) for block in self.blocks)
