"""Checkpoints: every finished chunk persisted, so a run that is stopped or crashes resumes.

A run's identity is a fingerprint of what determines its result: the function (its import path,
or its pickled bytes for lambdas and closures), ``kwargs``, ``skip``, the inputs' dtypes, shapes
and contents (hashed at memory speed; an ``.npy`` input by its path, size and modification time,
so that a large file is not read twice), and the mask. Chunks live under that fingerprint, so a checkpoint made for other
inputs or another function is never mixed in: calling ``run`` with anything different starts a
fresh run beside it. The chunk layout (the pilot's chunks and the chunk size) is recorded with
the run and reused on resume, so ``chunks="auto"`` resumes on any machine (an explicit
``chunks=`` is part of the identity).

Records hold the chunk's flat indices, statuses, values and failures as codec payloads with
checksums (:mod:`chunkmap.codec`; never pickle) and are written atomically by the store, so a
torn write is never read back as data: a record that does not decode is computed again.
Stores implement :class:`ChunkStore`; :class:`DirectoryStore` is the one behind a path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from . import codec
from .errors import CodecError, OptionError
from .failures import FailureRecords
from .kernel import ChunkOutput, Evaluation
from .npy import NpyReader
from .source import ArraySource

__all__ = ["ChunkStore", "DirectoryStore", "Checkpoint", "open_store", "fingerprint"]

RECORD_MAGIC = b"chunkmap-chunk-2\n"
#: arrays in a record: flat indices, statuses, values and the failure columns (positions, type
#: codes, type names as JSON, compressed message blocks, their sizes, records per block, message ends)
RECORD_PARTS = 10
LENGTH = struct.Struct("<Q")
#: bytes hashed per step when fingerprinting an input (bounds the temporary copy of a strided one)
HASH_BLOCK = 1 << 24


class ChunkStore(Protocol):
    """Where checkpoint records live. ``put`` must be atomic: readers see all of a value or none."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...


class DirectoryStore:
    """A :class:`ChunkStore` in a directory: one file per key, written to a temporary name then renamed.

    Examples
    --------
    >>> import tempfile
    >>> store = DirectoryStore(tempfile.mkdtemp())
    >>> store.put("run/chunk-1", b"data"); store.get("run/chunk-1"), store.get("run/chunk-2")
    (b'data', None)
    >>> list(store.keys("run/"))
    ['run/chunk-1']
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.path / key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        target = self.path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, target)

    def keys(self, prefix: str) -> Iterator[str]:
        folder = self.path / prefix
        directory = folder if prefix.endswith("/") else folder.parent
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                key = entry.relative_to(self.path).as_posix()
                if key.startswith(prefix) and not entry.name.startswith("."):
                    yield key

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.path)!r})"


def open_store(checkpoint: Any) -> ChunkStore:
    """The store for ``run(checkpoint=...)``: a path, ``redis://`` URL or a :class:`ChunkStore`."""
    if isinstance(checkpoint, (str, os.PathLike)):
        text = os.fspath(checkpoint)
        if text.startswith(("redis://", "rediss://", "unix://")):
            from .redis.checkpoint import RedisChunkStore

            return RedisChunkStore(text)
        return DirectoryStore(text)
    if all(hasattr(checkpoint, name) for name in ("get", "put", "keys")):
        return checkpoint
    raise OptionError(
        f"checkpoint must be a directory path, a redis:// URL or a store with get/put/keys; "
        f"got {type(checkpoint).__name__} {checkpoint!r:.80}"
    )


def fingerprint(
    func: Callable[..., Any],
    source: ArraySource,
    skip: tuple[type[BaseException], ...],
    kwargs: Mapping[str, Any] | None,
    chunks: int | str,
) -> str:
    """A hex digest naming the run: equal exactly when the result must be equal."""
    digest = hashlib.blake2b(digest_size=16)

    def add(label: str, data: bytes) -> None:
        digest.update(LENGTH.pack(len(label)) + label.encode() + LENGTH.pack(len(data)) + data)

    add("func", _function_identity(func))
    add("kwargs", _value_identity(sorted((kwargs or {}).items())))
    add("skip", ",".join(f"{cls.__module__}.{cls.__qualname__}" for cls in skip).encode())
    add("chunks", str(chunks).encode())
    add("shape", repr(source.shape).encode())
    for array in source.arrays:
        add("input", f"{array.dtype.str}{array.shape}".encode())
        if isinstance(array, NpyReader):  # not read twice: named by path, size and modification time
            status = os.stat(array.path)
            add("file", f"{os.path.abspath(array.path)}:{status.st_size}:{status.st_mtime_ns}".encode())
        else:
            _hash_array(digest, array)
    if source.valid is not None:
        add("valid", str(source.valid.size).encode())
        _hash_array(digest, source.valid.bits)
    return digest.hexdigest()


def _function_identity(func: Callable[..., Any]) -> bytes:
    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    if module and name and module != "__main__" and "<" not in name:
        return f"{module}:{name}".encode()
    import cloudpickle

    return cloudpickle.dumps(func)  # lambdas, closures, partials, notebook functions: their code


def _value_identity(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:
        return repr(value).encode()


def _hash_array(digest: Any, array: np.ndarray) -> None:
    flat = array.reshape(-1) if array.flags.c_contiguous else None
    if flat is not None:
        digest.update(memoryview(flat.view(np.uint8)))
        return
    step = max(1, HASH_BLOCK // max(array.itemsize, 1))
    source = np.broadcast_to(array, array.shape).flat
    for start in range(0, array.size, step):
        digest.update(np.ascontiguousarray(source[start : start + step]).view(np.uint8))


class Checkpoint:
    """The records of one run in a store: its manifest and one record per finished chunk."""

    def __init__(self, store: ChunkStore, run_id: str) -> None:
        self.store = store
        self.prefix = f"{run_id}/"
        self.saved = 0
        self._lock = threading.Lock()

    def layout(self) -> tuple[list[int], int, int] | None:
        """The chunk layout this run was started with (head ends, chunk size, tail), or None if new.

        See :meth:`chunkmap.plan.Plan.with_layout`.
        """
        data = self.store.get(self.prefix + "manifest.json")
        if data is None:
            return None
        manifest = json.loads(data)
        return ([int(end) for end in manifest.get("head", [])], int(manifest["chunk_size"]),
                int(manifest.get("tail", 0)))

    def start(self, head: Sequence[int], chunk_size: int, tail: int, description: Mapping[str, Any]) -> None:
        """Record the run's manifest (once): its layout, so that a resumed run cuts the same chunks."""
        if self.layout() is None:
            manifest = {"head": list(head), "chunk_size": chunk_size, "tail": tail, **description}
            self.store.put(self.prefix + "manifest.json", json.dumps(manifest, indent=1).encode())

    def load(self) -> Iterator[ChunkOutput]:
        """Every chunk record that decodes; a torn or corrupt one is skipped (and recomputed)."""
        for key in self.store.keys(self.prefix + "chunk-"):
            data = self.store.get(key)
            if data is None:
                continue
            try:
                yield decode_record(int(key.rsplit("-", 1)[1]), data)
            except (CodecError, ValueError):
                continue

    def save(self, output: ChunkOutput) -> None:
        """Persist one finished chunk (thread-safe)."""
        self.store.put(f"{self.prefix}chunk-{output.index:09d}", encode_record(output))
        with self._lock:
            self.saved += 1


def encode_record(output: ChunkOutput) -> bytes:
    """A chunk's output as bytes: flat indices, statuses, values and failures, each checksummed."""
    evaluation = output.evaluation
    if evaluation.values.dtype == object:
        raise OptionError(
            "checkpoint= stores results as numeric arrays, and func returned objects "
            "(str, None, ...) that only pickle could store; return numbers, or run without checkpoint="
        )
    failures = evaluation.failures
    type_names = json.dumps(failures.type_names).encode()
    block_sizes = np.array([len(block) for block in failures.blocks], np.int64)
    parts = [output.flat_index, evaluation.status, evaluation.values, failures.positions, failures.type_codes,
             np.frombuffer(type_names, np.uint8), np.frombuffer(b"".join(failures.blocks), np.uint8), block_sizes,
             failures.block_counts, failures.text_ends]
    buffer = io.BytesIO()
    buffer.write(RECORD_MAGIC)
    for part in parts:
        payload = codec.encode(np.ascontiguousarray(part), checksum=True)
        buffer.write(LENGTH.pack(len(payload)))
        buffer.write(payload)
    return buffer.getvalue()


def decode_record(index: int, data: bytes) -> ChunkOutput:
    """The inverse of :func:`encode_record`; raises CodecError or ValueError if the bytes are not one."""
    if not data.startswith(RECORD_MAGIC):
        raise CodecError("not a chunkmap checkpoint record")
    view, offset, parts = memoryview(data), len(RECORD_MAGIC), []
    for _ in range(RECORD_PARTS):
        if offset + LENGTH.size > len(view):
            raise CodecError("truncated checkpoint record")
        (length,) = LENGTH.unpack_from(view, offset)
        offset += LENGTH.size
        parts.append(codec.decode(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise CodecError("trailing bytes after a checkpoint record")
    flat_index, status, values, positions, type_codes, type_names, text, block_sizes, block_counts, text_ends = parts
    bounds = np.cumsum(block_sizes).tolist()
    blocks = tuple(text[start:end].tobytes() for start, end in zip([0, *bounds[:-1]], bounds))
    failures = FailureRecords(positions.copy(), type_codes.copy(), tuple(json.loads(type_names.tobytes())),
                              blocks, block_counts.copy(), text_ends.copy())
    return ChunkOutput(index, flat_index.copy(), Evaluation(status.copy(), values.copy(), failures))
