"""A finished chunk as bytes that prove where they belong.

numpy only. A record is a header naming its run, its chunk layout and its chunk (index, flat
index range, element count), then the chunk's statuses, values and failures as codec payloads
(:mod:`chunkmap.codec`; never pickle), the failing elements' input values last, one part per
input (format 4; a record of an older format is refused, so computed again). Every part carries a crc32 and the total length is
exact, so a torn, truncated or flipped record never decodes. The flat indices of the computed
elements are not stored: they follow from the run's mask and the chunk's range, which the run
identity and the layout identity pin down. The flat indices of failures are stored, so that
``chunkmap failures`` can list them without the inputs.

:func:`accept` checks a decoded record against the chunk it is filed under; anything that does
not fit is refused (and computed again), never merged.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import codec
from ..errors import CodecError, OptionError
from ..failures import FailureRecords
from ..kernel import COMPUTED, KINDS, ChunkOutput, Evaluation
from ..plan import Chunk

__all__ = ["FORMAT", "MAGIC", "Record", "encode_record", "decode_record", "accept"]

#: the record format: 4 added the failures' input columns
FORMAT = 4
MAGIC = b"chunkmap-chunk-4\n"
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
#: arrays after the header: statuses, values, failure flat indices and the failure columns
#: (positions, type codes, type names as JSON, compressed message blocks, their sizes, records
#: per block, message ends); then one part per input column of the failures (``header["inputs"]``)
PARTS = 10
#: input columns a record may declare (a damaged header must not make the decoder read on and on)
MAX_INPUTS = 4096
_STATUSES = np.array([COMPUTED, *KINDS], np.uint8)


@dataclass(frozen=True)
class Record:
    """A decoded record: its header, and the chunk's evaluation and failures' flat indices."""

    header: dict[str, Any]
    evaluation: Evaluation
    failure_flat_index: np.ndarray

    @property
    def chunk(self) -> int:
        return int(self.header["chunk"])


def encode_record(output: ChunkOutput, chunk: Chunk, run: str, layout: dict[str, Any]) -> bytes:
    """The bytes of ``chunk``'s output in run ``run`` cut by ``layout`` (see :func:`decode_record`)."""
    evaluation = output.evaluation
    if evaluation.values.dtype.hasobject:  # an object array, or an output of objects (outputs=)
        raise OptionError(
            "checkpoint= stores results as numeric arrays, and func returned objects "
            "(str, None, ...) that only pickle could store; return numbers, or run without checkpoint="
        )
    flat = output.flat_index
    header = {"format": FORMAT, "run": run, "layout": layout, "chunk": chunk.index, "start": chunk.start,
              "stop": chunk.stop, "size": chunk.size, "inputs": len(evaluation.failures.inputs)}
    failures = evaluation.failures
    type_names = json.dumps(failures.type_names).encode()
    block_sizes = np.array([len(block) for block in failures.blocks], np.int64)
    parts = [evaluation.status, evaluation.values, flat[failures.positions], failures.positions, failures.type_codes,
             np.frombuffer(type_names, np.uint8), np.frombuffer(b"".join(failures.blocks), np.uint8), block_sizes,
             failures.block_counts, failures.text_ends, *failures.inputs]
    text = json.dumps(header, sort_keys=True).encode()
    pieces = [MAGIC, _LENGTH.pack(len(text)), text, _CRC.pack(zlib.crc32(text))]
    for part in parts:
        payload = codec.encode(np.ascontiguousarray(part), checksum=True)
        pieces += [_LENGTH.pack(len(payload)), payload]
    return b"".join(pieces)


def decode_record(data: bytes) -> Record:
    """The inverse of :func:`encode_record`.

    Raises
    ------
    CodecError
        The bytes are not a whole, intact record (torn, truncated, flipped, another format).
    """
    if not data.startswith(MAGIC):
        if data.startswith(MAGIC[:-2]):  # b"chunkmap-chunk-" and another format number
            other = bytes(data[len(MAGIC) - 2 : data.find(b"\n", 0, 40)]).decode("ascii", "replace")
            raise CodecError(f"a checkpoint record of format {other:.8}, expected format {FORMAT} "
                             f"(written by another version of chunkmap)")
        raise CodecError(f"not a chunkmap checkpoint record (format {FORMAT})")
    view, offset = memoryview(data), len(MAGIC)

    def take(size: int) -> memoryview:
        nonlocal offset
        if offset + size > len(view):
            raise CodecError("truncated checkpoint record")
        piece = view[offset : offset + size]
        offset += size
        return piece

    (length,) = _LENGTH.unpack(take(_LENGTH.size))
    text = bytes(take(length))
    if _CRC.unpack(take(_CRC.size))[0] != zlib.crc32(text):
        raise CodecError("checkpoint record header fails its checksum")
    try:
        header = json.loads(text)
    except ValueError:
        raise CodecError("checkpoint record header is not JSON") from None
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if type(inputs) is not int or not 0 <= inputs <= MAX_INPUTS:
        raise CodecError(f"checkpoint record header declares {inputs!r:.40} input columns; expected an int "
                         f"from 0 to {MAX_INPUTS}")
    parts = []
    for _ in range(PARTS + inputs):
        (length,) = _LENGTH.unpack(take(_LENGTH.size))
        parts.append(codec.decode(take(length)))
    if offset != len(view):
        raise CodecError("trailing bytes after a checkpoint record")
    (status, values, failure_flat, positions, type_codes, type_names, text, block_sizes, block_counts,
     text_ends) = parts[:PARTS]
    try:
        names = tuple(json.loads(type_names.tobytes()))
        bounds = np.cumsum(block_sizes).tolist()
        blocks = tuple(text[start:end].tobytes() for start, end in zip([0, *bounds[:-1]], bounds))
        failures = FailureRecords(positions.copy(), type_codes.copy(), names, blocks, block_counts.copy(),
                                  text_ends.copy(), tuple(column.copy() for column in parts[PARTS:]))
    except (ValueError, TypeError):
        raise CodecError("checkpoint record holds malformed failure columns") from None
    return Record(header, Evaluation(status.copy(), values.copy(), failures), failure_flat.copy())


def accept(record: Record, chunk: Chunk, flat_index: np.ndarray | None, run: str, layout: dict[str, Any]) -> str | None:
    """Why ``record`` does not belong to ``chunk`` of this run and layout, or None if it does.

    ``flat_index`` is the chunk's unmasked flat indices, from the run's own mask; without it
    (reading a location without the inputs) the failures' flat indices need only be ascending
    and inside the chunk's range.
    """
    header = record.header
    for field, expected in (("format", FORMAT), ("run", run), ("layout", layout), ("chunk", chunk.index),
                            ("start", chunk.start), ("stop", chunk.stop), ("size", chunk.size)):
        if header.get(field) != expected:
            return f"its {field} is {header.get(field)!r:.60}, expected {expected!r:.60}"
    evaluation = record.evaluation
    status, values, failures = evaluation.status, evaluation.values, evaluation.failures
    if status.dtype != np.uint8 or status.shape != (chunk.size,) or not np.isin(status, _STATUSES).all():
        return f"it holds {status.shape} statuses of dtype {status.dtype}, expected {chunk.size} status bytes"
    computed = int(np.count_nonzero(status == COMPUTED))
    if values.ndim != 1 or len(values) != computed:
        return f"it holds {values.shape} values for {computed} computed elements"
    failing = np.flatnonzero(status != COMPUTED)
    flat = record.failure_flat_index
    in_chunk = (np.array_equal(flat, flat_index[failing]) if flat_index is not None else
                bool(np.all((flat >= chunk.start) & (flat < chunk.stop) & (np.diff(flat, prepend=-1) > 0))))
    if not np.array_equal(failures.positions, failing) or not in_chunk:
        return "its failures do not match its statuses or the chunk's elements"
    if len(failures.type_codes) != len(failing) or int(failures.block_counts.sum()) != len(failing) or (
            len(failing) and int(failures.type_codes.max(initial=0)) >= len(failures.type_names)):
        return "its failure columns are inconsistent"
    if any(column.ndim != 1 or column.dtype.kind not in "biufc" for column in failures.inputs):
        return "its failures' input columns are not 1-D numeric arrays"
    return None
