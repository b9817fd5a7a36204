"""What an ``output=`` store holds, read back: :class:`StoredResult`, and the failures' JSON columns.

The ``failures`` array of a store (:mod:`chunkmap.stored`) holds one JSON object per box with
failures, written by :func:`failures_json` in the task and read by :attr:`StoredResult.failures`;
numpy and the standard library only (the store's zarr group is handed in).
"""

from __future__ import annotations

import base64
import functools
import html
import json
from typing import Any

import numpy as np

from .kernel import KINDS
from .result import Failures, Result

__all__ = ["StoredResult", "failures_json"]


def failures_json(flat_index: np.ndarray, evaluation: Any) -> str:
    """A box's failures as the JSON columns of the module docstring (numbers and tables, no object per failure)."""
    failures = evaluation.failures
    statuses, kind_codes = np.unique(evaluation.status[failures.positions], return_inverse=True)
    table: dict[str, int] = {}
    message_codes = [table.setdefault(message, len(table)) for message in failures.messages()]
    return json.dumps({
        "flat_index": flat_index[failures.positions].tolist(),
        "kinds": {"names": [KINDS[int(status)] for status in statuses], "codes": kind_codes.tolist()},
        "types": {"names": list(failures.type_names), "codes": failures.type_codes.tolist()},
        "messages": {"names": list(table), "codes": message_codes},
        "inputs": [_column_json(column) for column in failures.inputs]})


def _column_json(column: np.ndarray) -> dict[str, Any]:
    """A failures' input column: its bytes in base64 (its values, for object inputs)."""
    if column.dtype.hasobject:
        return {"dtype": column.dtype.str, "values": column.tolist()}
    return {"dtype": column.dtype.str, "base64": base64.b64encode(np.ascontiguousarray(column).tobytes()).decode()}


def _column_from_json(found: dict[str, Any]) -> np.ndarray:
    if "base64" in found:
        return np.frombuffer(base64.b64decode(found["base64"]), dtype=found["dtype"])
    return np.asarray(found["values"], dtype=found["dtype"])


def _names(found: dict[str, Any]) -> np.ndarray:
    """A ``{"names", "codes"}`` column: one name per failure."""
    return np.array(found["names"] or [""], object)[np.asarray(found["codes"], np.int64)]



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
        self._failed = failed
        self._computed = computed
        self._names = outputs or ("values",)

    def __len__(self) -> int:
        return self._computed

    @property
    def failed_count(self) -> int:
        """How many elements failed, from the boxes' counts (the failures are not read)."""
        return self._failed

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
        column = lambda key: np.concatenate([_names(box[key]) for box in boxes] or [np.array([], object)])[order]  # noqa: E731
        inputs = [np.concatenate([_column_from_json(box["inputs"][number]) for box in boxes])[order]
                  for number in range(len(boxes[0]["inputs"]) if boxes else 0)]
        return Failures(self.shape, flat[order], column("types"), column("messages"), column("kinds"), inputs)

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
