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
    one string per box, chunked one per box: the box's failures as JSON (flat indices, kinds,
    exception types, messages), empty for a box without failures.
``boxes``
    int64 ``(boxes, 3)``: computed, failed and masked counts of each finished box, written by the
    client as outputs arrive (-1: not finished). A box counts as done only once its row is
    written, after the task wrote its values, failures and status: a run killed at any moment
    leaves boxes that are either finished or computed again.

The group's ``chunkmap`` attribute holds the run's identity (as for ``checkpoint=``), shape,
box ends and output names: rerunning the same call with the same ``output=`` resumes from the
finished boxes; a store written by another call, or a non-empty group that chunkmap did not
write, raises :class:`~chunkmap.errors.OutputStoreError` and is left untouched.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrays import Box
from .blocks import BlockPlan
from .errors import OutputStoreError
from .kernel import COMPUTED, KINDS, ChunkOutput
from .labelled import STATUS
from .result import Failures, Result

__all__ = ["OutputStore", "BoxWriter", "StoredOutput", "StoredResult"]

FORMAT = 1
#: status code of elements no task has written yet
NOT_WRITTEN = -1
#: status code per failing kernel status
_FAILING_CODE = {status: STATUS.index(kind) for status, kind in KINDS.items()}
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

    def write(self, output: ChunkOutput, box: Box) -> StoredOutput:
        """Write ``output`` (the box's unmasked elements) as dense arrays; its counts."""
        group = _zarr().open_group(self.store, mode="r+")
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
            group["failures"][output.index] = json.dumps({
                "flat_index": output.flat_index[failures.positions].tolist(),
                "kinds": [KINDS[int(status)] for status in evaluation.status[failures.positions]],
                "types": failures.types(), "messages": failures.messages(),
                "inputs": [_column_json(column) for column in failures.inputs]})
        status = np.full(math.prod(box_shape), STATUS.index("masked"), np.int8)
        status[local] = 0
        for kernel_status, code in _FAILING_CODE.items():
            status[local[evaluation.status == kernel_status]] = code
        group["status"][where] = status.reshape(box_shape)
        return StoredOutput(output.index, len(output.flat_index), len(failures), output.seconds)


def _column_json(column: np.ndarray) -> dict[str, Any]:
    """A failures' input column as JSON (complex values as their real and imaginary parts)."""
    if column.dtype.kind == "c":
        return {"dtype": column.dtype.str, "real": column.real.tolist(), "imag": column.imag.tolist()}
    return {"dtype": column.dtype.str, "values": column.tolist()}


def _column_from_json(found: dict[str, Any]) -> np.ndarray:
    if "real" in found:
        return (np.asarray(found["real"]) + 1j * np.asarray(found["imag"])).astype(found["dtype"])
    return np.asarray(found["values"], dtype=found["dtype"])


def _box_positions(flat_index: np.ndarray, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """The positions in ``box`` (C order) of elements given by their flat indices in ``shape``.

    Examples
    --------
    >>> _box_positions(np.array([7, 13]), ((1, 3), (2, 4)), (3, 5)).tolist()
    [0, 3]
    """
    if not shape:
        return np.zeros(len(flat_index), np.int64)
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
            raise OutputStoreError("output= is a zarr MemoryStore, which lives in this process: dask workers would "
                                   "write into copies of it; pass a path or a store the workers share")
        return store

    def __init__(self, output: Any, plan: BlockPlan, outputs: tuple[str, ...] | None, identity: Any,
                 problem: str | None = None) -> None:
        zarr = _zarr()
        self.plan = plan
        self.outputs = outputs
        self.names = outputs or ("values",)
        self.where = str(output)
        if isinstance(output, (str, os.PathLike)) and os.path.isdir(output) and os.listdir(output) and not any(
                os.path.exists(os.path.join(output, name)) for name in ("zarr.json", ".zgroup")):
            raise OutputStoreError(f"output={self.where!r} is a folder with files in it and no zarr group; chunkmap "
                                   f"writes only into a new path, an empty folder or a zarr group; pass a new path")
        try:
            self.group = zarr.open_group(output, mode="a")
        except Exception as error:
            raise OutputStoreError(f"output={output!r} cannot be opened as a zarr group ({error}); expected a path or "
                                   f"a zarr store") from error
        self.store = self.group.store
        parts = identity.parts if identity is not None else {}
        description = json.loads(json.dumps({
            "format": FORMAT, "run": identity.run_id if identity is not None else None, "parts": parts,
            "unresumable": problem, "shape": list(plan.shape), "ends": plan.source.ends, "outputs": list(self.names)}))
        found = self.group.attrs.get("chunkmap")
        if found is None and len(list(self.group.keys())):
            raise OutputStoreError(f"output={self.where!r} is a zarr group with other data in it, and chunkmap writes "
                                   f"only into an empty group or one it wrote; pass a new path")
        if found is None:
            self._create(description)
        elif found.get("run") is None or description["run"] is None:
            why = found.get("unresumable") or problem
            raise OutputStoreError(f"output={self.where!r} holds a result, and this run cannot resume from it: "
                                   f"{why}; pass a new path, or remove it to start again")
        elif found != description:
            differ = [f"the run's {part}" for part in parts if found.get("parts", {}).get(part) != parts[part]]
            differ = differ or [key for key in description if found.get(key) != description[key]]
            raise OutputStoreError(f"output={self.where!r} holds the result of another call ({', '.join(differ)} "
                                   f"differ); it is left as it is: pass a new path, or remove it to start again")
        self.boxes = self.group["boxes"]
        self.counts = np.asarray(self.boxes[...])
        self._pending: dict[int, tuple[int, int, int]] = {}
        self._flushed = time.monotonic()
        self._lock = threading.Lock()

    def _create(self, description: dict[str, Any]) -> None:
        shape, ends = self.plan.shape, self.plan.source.ends
        chunks = tuple(int(axis[0]) if axis else 1 for axis in ends) or ()
        dims = tuple(self.plan.labels.dims) if self.plan.labels is not None else tuple(
            f"dim_{axis}" for axis in range(len(shape)))
        boxes = len(self.plan.chunks)
        for name in self.names:
            self.group.create_array(name, shape=shape, chunks=chunks, dtype="f8", fill_value=np.nan,
                                    dimension_names=dims, attributes={"coordinates": "status"})
        self.group.create_array("status", shape=shape, chunks=chunks, dtype="i1", fill_value=NOT_WRITTEN,
                                dimension_names=dims, attributes={
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
        return BoxWriter(self.store, self.plan.shape, self.names, self.outputs)

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


class StoredResult(Result):
    """A :class:`~chunkmap.Result` whose arrays live in an ``output=`` zarr store, read when asked for.

    ``result.group`` is the zarr group; ``stats``, ``shape``, ``outputs``, ``labels`` and ``len``
    need no read. ``coords``, ``values`` and ``failures`` read the store (O(elements)), as
    ``to_dense()`` does; ``to_xarray()`` opens it lazily, with dask.
    """

    def __init__(self, group: Any, shape: tuple[int, ...], outputs: tuple[str, ...] | None, labels: Any = None,
                 computed: int = 0, failed: int = 0) -> None:
        self.group = group
        self.shape = tuple(shape)
        self.outputs = outputs
        self.labels = labels
        self.stats = None
        self.failed_count = failed  #: how many elements failed, without reading the failures
        self._computed = computed
        self._names = outputs or ("values",)

    def __len__(self) -> int:
        return self._computed

    @functools.cached_property
    def flat_index(self) -> np.ndarray:
        """Flat (C order) index of each computed element, ascending (reads the status array)."""
        return np.flatnonzero(np.asarray(self.group["status"][...]).reshape(-1) == 0).astype(np.int64)

    @functools.cached_property
    def coords(self) -> tuple[np.ndarray, ...]:  # type: ignore[override]
        return tuple(np.unravel_index(self.flat_index, self.shape)) if self.shape else ()

    @functools.cached_property
    def values(self) -> Any:  # type: ignore[override]
        """The computed elements' values, read from the store (a dict by name with ``outputs=``)."""
        values = {name: np.asarray(self.group[name][...]).reshape(-1)[self.flat_index] for name in self._names}
        return values if self.outputs is not None else values["values"]

    @functools.cached_property
    def failures(self) -> Failures:  # type: ignore[override]
        """Every failed element, read from the boxes' failure records, in C order."""
        boxes = [json.loads(text) for text in np.asarray(self.group["failures"][...]).tolist() if text]
        flat = np.array([index for box in boxes for index in box["flat_index"]], np.int64)
        order = np.argsort(flat, kind="stable")  # boxes are not in C order of the elements
        column = lambda key: [item for box in boxes for item in box[key]]  # noqa: E731
        inputs = [np.concatenate([_column_from_json(box["inputs"][number]) for box in boxes])[order]
                  for number in range(len(boxes[0]["inputs"]) if boxes else 0)]
        return Failures(self.shape, flat[order], np.array(column("types"), object)[order],
                        np.array(column("messages"), object)[order], np.array(column("kinds"), object)[order], inputs)

    def __repr__(self) -> str:
        """A summary from the counts alone: showing a result never reads the store."""
        counts = ""
        if self.stats is not None:
            stats = self.stats
            counts = (f"\n  elements {stats.elements:,}: computed {stats.computed:,}, failed {stats.failed:,}, "
                      f"masked {stats.masked:,}")
        return f"<chunkmap.StoredResult shape={self.shape} {', '.join(self._names)} in {self.group.store}{counts}>"

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"

    def to_dense(self, fill_value: Any = None) -> Any:
        """The store's arrays (read whole), ``fill_value`` where nothing was computed (NaN by default)."""
        dense = [np.asarray(self.group[name][...]) for name in self._names]
        if fill_value is not None:
            missing = np.asarray(self.group["status"][...]) != 0
            dense = [np.where(missing, fill_value, array) for array in dense]
        return dense[0] if self.outputs is None else tuple(dense)

    def to_xarray(self, *, status: bool = False) -> Any:
        """The store opened with ``xarray.open_zarr`` (dask-backed: nothing read yet): a DataArray or a Dataset."""
        from .labelled import optional_module

        xr = optional_module("xarray", "to_xarray()", "chunkmap[xarray]")
        dataset = xr.open_zarr(self.group.store, consolidated=False, chunks={})
        dataset = dataset.drop_vars(["failures", "boxes"])
        if status:
            dataset = dataset.set_coords("status")
        else:
            dataset = dataset.drop_vars("status")
        return dataset["values"] if self.outputs is None else dataset
