"""Results larger than the client: ``run(..., output="results.zarr")`` writes every box into a zarr store.

Each task writes its box straight into the store (:class:`BoxWriter`, picklable, carried with
the source to local threads or dask workers) and hands the client only its counts
(:class:`StoredOutput`); the client holds O(boxes), never O(elements), and returns a
:class:`StoredResult` that reads the store on demand. zarr is imported only here, when used.

The store is a zarr group:

``<output>`` (``values``, or one per name of ``outputs=``)
    float64, the input's shape, chunked as the boxes; NaN where nothing was computed. bool and
    int results are stored as float64 (exact up to 2**53); complex and object results are
    refused before anything is written for the box (:class:`~chunkmap.errors.OutputStoreError`).
``status``
    int8 per element, CF ``flag_values``: 0 computed, 1 masked, 2 exception, 3 crash, 4 timeout
    (:data:`chunkmap.labelled.STATUS`); -1 where no task has written yet.
``failures``
    one string per box, chunked one per box, empty for a box without failures: the box's
    failures as a JSON object of columns (format 2): ``flat_index`` (a list of ints); ``kinds``,
    ``types`` and ``messages`` each as ``{"names": [distinct strings], "codes": [an index into
    names per failure]}``; ``inputs``, one ``{"dtype": numpy dtype str, "base64": the values'
    bytes}`` per input (``"values": [...]`` for object inputs). Format 1 (chunkmap before
    2026-12-02: one list entry per failure) is refused with a message saying so.
``boxes``
    int64 ``(boxes, 3)``: computed, failed and masked counts of each finished box, written by the
    client as outputs arrive (-1: not finished). A box counts as done only once its row is
    written, after the task wrote its values, failures and status: a run killed at any moment
    leaves boxes that are either finished or computed again.

The group's ``chunkmap`` attribute holds the run's identity (as for ``checkpoint=``), shape,
box ends, output names and a token new for each store created (tasks keep the store's open arrays
by it, so a store removed and created again is never written through a stale handle); while a run
writes, ``chunkmap-lease`` names it, and a second run into the same store is refused
(:mod:`chunkmap.output_lease`). Rerunning the same call with the same ``output=`` resumes from the
finished boxes; a store written by another call, or a non-empty group that chunkmap did not
write, raises :class:`~chunkmap.errors.OutputStoreError` and is left untouched.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import Box
from .blocks import BlockPlan
from .errors import OutputStoreError
from .kernel import COMPUTED, KINDS, ChunkOutput
from .labelled import STATUS
from .output_lease import ATTRIBUTE as LEASE_ATTRIBUTE
from .output_lease import OutputLease
from .stored_result import StoredResult, failures_json

__all__ = ["OutputStore", "BoxWriter", "StoredOutput", "StoredResult"]

FORMAT = 2
#: status code of elements no task has written yet
NOT_WRITTEN = -1
#: the stored status code of each kernel status (COMPUTED and those of KINDS)
_STATUS_CODE = np.zeros(max(KINDS) + 1, np.int8)
_STATUS_CODE[COMPUTED] = STATUS.index("computed")
for _status, _kind in KINDS.items():
    _STATUS_CODE[_status] = STATUS.index(_kind)
#: values and status are compressed with blosc's lz4, byte-shuffled: ~5x faster than zarr's default
#: zstd for random float64 values, and the same size within 10 % (benchmarks/README.md, issue 14)
_COMPRESSOR = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}
#: the open arrays of the stores this process writes into, by store token; a few kept
_OPEN: OrderedDict[str, dict[str, Any]] = OrderedDict()
_OPEN_KEPT = 8
_OPEN_LOCK = threading.Lock()
#: the client writes finished boxes' counts at least this often (seconds), and at the end
FLUSH_SECONDS = 2.0


@dataclass
class StoredOutput:
    """What a task hands back for a box written to the store: its counts, no values."""

    index: int
    unmasked: int
    failed: int
    seconds: float = 0.0


def _zarr() -> Any:
    from .labelled import optional_module

    return optional_module("zarr", "output=", "chunkmap[zarr]")


@dataclass(frozen=True)
class BoxWriter:
    """Writes a box's output into the store, in the process of the task that computed it."""

    store: Any
    shape: tuple[int, ...]
    names: tuple[str, ...]
    outputs: tuple[str, ...] | None
    token: str  #: the store's token: its arrays opened once per process, never a stale store's

    def arrays(self) -> dict[str, Any]:
        """The store's arrays by name, opened on this process's first box of the store."""
        with _OPEN_LOCK:
            found = _OPEN.get(self.token)
            if found is not None:
                _OPEN.move_to_end(self.token)
                return found
        group = _zarr().open_group(self.store, mode="r+")
        if group.attrs.get("chunkmap", {}).get("token") != self.token:
            raise OutputStoreError(f"the output= store {self.store} was removed or replaced by another run while this "
                                   f"run wrote into it; nothing more is written there: run again (into a new path)")
        arrays = {name: group[name] for name in (*self.names, "status", "failures")}
        with _OPEN_LOCK:
            _OPEN[self.token] = arrays
            while len(_OPEN) > _OPEN_KEPT:
                _OPEN.popitem(last=False)
        return arrays

    def write(self, output: ChunkOutput, box: Box) -> StoredOutput:
        """Write ``output`` (the box's unmasked elements) as dense arrays; its counts."""
        group = self.arrays()
        where = tuple(slice(start, stop) for start, stop in box)
        box_shape = tuple(stop - start for start, stop in box)
        local = _box_positions(output.flat_index, box, self.shape)
        evaluation = output.evaluation
        computed = evaluation.status == COMPUTED
        for name in self.names:
            values = evaluation.values if self.outputs is None else evaluation.values[name]
            if len(values) and values.dtype.kind not in "biuf":
                raise OutputStoreError(
                    f"output= stores float64 values, and func returned {values.dtype} values for output {name!r}; "
                    f"return real numbers (for complex results, return (z.real, z.imag) with outputs=('re', 'im')), "
                    f"or run without output=")
            dense = np.full(math.prod(box_shape), np.nan)
            dense[local[computed]] = values
            group[name][where] = dense.reshape(box_shape)
        failures = evaluation.failures
        if len(failures):
            group["failures"][output.index] = failures_json(output.flat_index, evaluation)
        status = np.full(math.prod(box_shape), STATUS.index("masked"), np.int8)
        status[local] = _STATUS_CODE[evaluation.status]
        group["status"][where] = status.reshape(box_shape)
        return StoredOutput(output.index, len(output.flat_index), len(failures), output.seconds)


def _box_positions(flat_index: np.ndarray, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """The positions in ``box`` (C order) of elements given by their flat indices in ``shape``.

    Examples
    --------
    >>> _box_positions(np.array([7, 13]), ((1, 3), (2, 4)), (3, 5)).tolist()
    [0, 3]
    """
    if not shape:
        return np.zeros(len(flat_index), np.int64)
    if all(box[axis] == (0, shape[axis]) for axis in range(1, len(shape))):  # whole rows: a slab of flat indices
        return flat_index.astype(np.int64) - box[0][0] * math.prod(shape[1:])
    within = tuple(axis - start for axis, (start, _) in zip(np.unravel_index(flat_index, shape), box))
    return np.ravel_multi_index(within, tuple(stop - start for start, stop in box)).astype(np.int64)


class OutputStore:
    """The client's side of an ``output=`` store: created or resumed, counts of finished boxes, the result.

    ``identity`` is the run's :class:`~chunkmap.checkpoint.identity.Identity`, or None when its
    inputs cannot be fingerprinted (``problem`` says why): such a store is written, and refused
    when a later run would resume from it.
    """

    @classmethod
    def open(cls, output: Any, plan: BlockPlan, execution: Any, chunks: int | str, scheduler: str) -> OutputStore:
        """The store of this run at ``output``: created, or opened to resume (see the module docstring)."""
        from .checkpoint.identity import run_identity
        from .errors import IdentityError

        try:
            identity, problem = run_identity(execution.func, plan.source, execution.skip, execution.kwargs,
                                             execution.timeout, chunks, outputs=execution.outputs), None
        except IdentityError as error:
            identity, problem = None, str(error)
        store = cls(output, plan, execution.outputs, identity, problem)
        if scheduler == "distributed" and type(store.store).__name__ == "MemoryStore":
            store.close()
            raise OutputStoreError("output= is a zarr MemoryStore, which lives in this process: dask workers would "
                                   "write into copies of it; pass a path or a store the workers share")
        return store

    def __init__(self, output: Any, plan: BlockPlan, outputs: tuple[str, ...] | None, identity: Any,
                 problem: str | None = None) -> None:
        self.plan = plan
        self.outputs = outputs
        self.names = outputs or ("values",)
        self.where = str(output)
        if isinstance(output, (str, os.PathLike)) and os.path.isdir(output) and os.listdir(output) and not any(
                os.path.exists(os.path.join(output, name)) for name in ("zarr.json", ".zgroup")):
            raise OutputStoreError(f"output={self.where!r} is a folder with files in it and no zarr group; chunkmap "
                                   f"writes only into a new path, an empty folder or a zarr group; pass a new path")
        self.lease = OutputLease(output, self.where)
        self.lease.lock(lambda: self._holder(output))
        try:
            self.group = self._open_group(output)
            self.store = self.group.store
            self.lease.check(self.group)
            parts = identity.parts if identity is not None else {}
            description = json.loads(json.dumps({
                "format": FORMAT, "run": identity.run_id if identity is not None else None, "parts": parts,
                "unresumable": problem, "shape": list(plan.shape), "ends": plan.source.ends,
                "outputs": list(self.names)}))
            found = self.group.attrs.get("chunkmap")
            if found is None:
                self._create(dict(description, token=uuid.uuid4().hex))
            else:
                self._check(found, description, problem)
            self.token = self.group.attrs["chunkmap"]["token"]
            self.lease.hold(self.group)
            self.boxes = self.group["boxes"]
            self.counts = np.asarray(self.boxes[...])
        except BaseException:
            self.lease.release()
            raise
        self._pending: dict[int, tuple[int, int, int]] = {}
        self._flushed = time.monotonic()
        self._lock = threading.Lock()

    def _open_group(self, output: Any) -> Any:
        try:
            return _zarr().open_group(output, mode="a")
        except Exception as error:
            raise OutputStoreError(f"output={output!r} cannot be opened as a zarr group ({error}); expected a path or "
                                   f"a zarr store") from error

    @staticmethod
    def _holder(output: Any) -> dict[str, Any] | None:
        """The holder record of the store at ``output`` (None when it has none yet)."""
        try:
            return _zarr().open_group(output, mode="r").attrs.get(LEASE_ATTRIBUTE)
        except Exception:  # not created yet by the run that holds it
            return None

    def _check(self, found: dict[str, Any], description: dict[str, Any], problem: str | None) -> None:
        """Refuse a store this run cannot resume from (see the module docstring)."""
        if found.get("format") != FORMAT:
            raise OutputStoreError(f"output={self.where!r} was written by another version of chunkmap (store format "
                                   f"{found.get('format')}; this one reads and writes format {FORMAT}); it is left as "
                                   f"it is: read it with that version, pass a new path, or remove it to start again")
        found = {key: value for key, value in found.items() if key != "token"}
        if found.get("run") is None or description["run"] is None:
            why = found.get("unresumable") or problem
            raise OutputStoreError(f"output={self.where!r} holds a result, and this run cannot resume from it: "
                                   f"{why}; pass a new path, or remove it to start again")
        if found != description:
            parts = description["parts"]
            differ = [f"the run's {part}" for part in parts if found.get("parts", {}).get(part) != parts[part]]
            differ = differ or [key for key in description if found.get(key) != description[key]]
            raise OutputStoreError(f"output={self.where!r} holds the result of another call ({', '.join(differ)} "
                                   f"differ); it is left as it is: pass a new path, or remove it to start again")

    def _create(self, description: dict[str, Any]) -> None:
        if len(list(self.group.keys())):
            raise OutputStoreError(f"output={self.where!r} is a zarr group with other data in it, and chunkmap writes "
                                   f"only into an empty group or one it wrote; pass a new path")
        shape, ends = self.plan.shape, self.plan.source.ends
        chunks = tuple(int(axis[0]) if axis else 1 for axis in ends) or ()
        dims = tuple(self.plan.labels.dims) if self.plan.labels is not None else tuple(
            f"dim_{axis}" for axis in range(len(shape)))
        boxes = len(self.plan.chunks)
        compressor = _zarr().codecs.BloscCodec(**_COMPRESSOR)
        for name in self.names:
            self.group.create_array(name, shape=shape, chunks=chunks, dtype="f8", fill_value=np.nan,
                                    dimension_names=dims, attributes={"coordinates": "status"}, compressors=compressor)
        self.group.create_array("status", shape=shape, chunks=chunks, dtype="i1", fill_value=NOT_WRITTEN,
                                dimension_names=dims, compressors=compressor, attributes={
                                    "flag_values": list(range(len(STATUS))), "flag_meanings": " ".join(STATUS)})
        self.group.create_array("failures", shape=(boxes,), chunks=(1,), dtype=str, fill_value="",
                                dimension_names=("box",))
        self.group.create_array("boxes", shape=(boxes, 3), chunks=(min(max(boxes, 1), 1 << 16), 3), dtype="i8",
                                fill_value=-1, dimension_names=("box", "count"))
        if self.plan.labels is not None:
            for name, (coord_dims, values) in self.plan.labels.coords.items():
                if values.dtype.kind in "biufcmM" and coord_dims:
                    self.group.create_array(str(name), data=values, dimension_names=coord_dims)
        self.group.attrs["chunkmap"] = description

    def writer(self) -> BoxWriter:
        return BoxWriter(self.store, self.plan.shape, self.names, self.outputs, self.token)

    def finished(self) -> list[StoredOutput]:
        """The boxes a previous run of this call finished, as their outputs' counts."""
        return [StoredOutput(box, int(computed + failed), int(failed))
                for box, (computed, failed, _) in zip(np.flatnonzero(self.counts[:, 0] >= 0).tolist(),
                                                      self.counts[self.counts[:, 0] >= 0].tolist())]

    def record(self, output: StoredOutput, elements: int) -> None:
        """Note a finished box (written to the store every :data:`FLUSH_SECONDS` and by :meth:`flush`)."""
        with self._lock:
            self._pending[output.index] = (output.unmasked - output.failed, output.failed, elements - output.unmasked)
            if time.monotonic() - self._flushed > FLUSH_SECONDS:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def close(self) -> None:
        """The run is over (done, failed or interrupted): write the counts, release the store's lease."""
        try:
            self.flush()
        finally:
            self.lease.release()

    def _flush(self) -> None:
        if self._pending:
            rows = sorted(self._pending)
            counts = np.array([self._pending[row] for row in rows], np.int64)
            for block in range(0, len(rows), 1 << 16):  # one write per chunk of the boxes array touched
                self.counts[rows[block : block + (1 << 16)]] = counts[block : block + (1 << 16)]
            first, last = rows[0], rows[-1] + 1
            self.boxes[first:last] = self.counts[first:last]
            self._pending.clear()
        self._flushed = time.monotonic()


class StoredOutputs:
    """The outputs of an ``output=`` run as :class:`~chunkmap.outputs.Delivery` hands them over: counts only."""

    def __init__(self, store: OutputStore, plan: BlockPlan) -> None:
        self.store = store
        self.plan = plan
        self.completed = np.zeros(len(plan.chunks), bool)

    def add(self, output: StoredOutput) -> None:
        self.store.record(output, self.plan.chunks[output.index].size)
        self.completed[output.index] = True

    def result(self) -> StoredResult:
        self.store.flush()
        counts = self.store.counts[self.completed]
        return StoredResult(self.store.group, self.plan.shape, self.store.outputs, self.plan.labels,
                            computed=int(counts[:, 0].sum()), failed=int(counts[:, 1].sum()))
