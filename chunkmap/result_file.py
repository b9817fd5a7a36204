"""The result file: a :class:`~chunkmap.Result` to and from an ``.npz``, beside :mod:`chunkmap.result`.

numpy and the standard library only. :func:`save_result` writes atomically (a temporary file
renamed into place) and never with pickle; :func:`load_result` reads the file back. ``chunkmap run
-o`` writes this format; a notebook or script can write and read it too.

The ``.npz`` layout (format 1), for a result of ``N`` computed and ``F`` failed elements of a
``D``-dimensional input shape:

==================== ================ =============================================================
entry                dtype, shape     meaning
==================== ================ =============================================================
``format``           str, ()          ``"chunkmap.result/1"``
``shape``            int64, (D,)      the broadcast input shape
``coords``           int64, (D, N)    one row per axis: ``xs, ys = data["coords"]`` for 2-D inputs
``values``           any, (N,)        ``func``'s results, in C order of the input
``failure_coords``   int64, (D, F)    coordinates of the failed elements, one row per axis
``failure_kinds``    str, (F,)        ``"exception"``, ``"crash"`` or ``"timeout"``
``failure_types``    str, (F,)        the exception's class name
``failure_messages`` str, (F,)        its message
``stats``            str, ()          JSON of :class:`~chunkmap.Stats` (``null`` when absent)
``job``              str, ()          JSON of what was run (function, inputs, mask, skip, kwargs)
==================== ================ =============================================================

Every entry is a plain array, so ``np.load(path)`` (``allow_pickle=False``) reads the file
without chunkmap. Values of object dtype cannot be stored without pickle and are refused, except
an array of ``str`` only, which is stored as a numpy unicode array.

Examples
--------
>>> import numpy as np, os, tempfile
>>> from chunkmap.result import Failures, Result
>>> result = Result((2, 3), (np.array([0, 1]), np.array([0, 1])), np.array([1.5, 2.5]),
...                 Failures((2, 3), [5], ["ValueError"], ["bad"]))
>>> path = os.path.join(tempfile.mkdtemp(), "out.npz")
>>> save_result(result, path)
>>> data = np.load(path)
>>> data["coords"].tolist(), data["values"].tolist(), data["failure_coords"].tolist()
([[0, 1], [0, 1]], [1.5, 2.5], [[1], [2]])
>>> again = load_result(path)
>>> again.flat_index.tolist(), list(again.failures)
([0, 4], [Failure(coords=(1, 2), kind='exception', type='ValueError', message='bad')])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
import zipfile
from typing import Any, Sequence

import numpy as np

from .errors import FormatError, MissingFileError, ResultWriteError
from .result import Failures, Result, Stats

__all__ = ["FORMAT", "save_result", "load_result"]

#: the ``format`` entry of the files this version writes and reads
FORMAT = "chunkmap.result/1"


def _text_array(strings: Any) -> np.ndarray:
    array = np.asarray(strings, dtype=str)
    return array if array.size else np.empty(0, dtype="<U1")


def _storable_values(values: np.ndarray) -> np.ndarray:
    if values.dtype != object:
        return values
    if all(isinstance(value, str) for value in values.tolist()):
        return _text_array(values.tolist())
    kinds = sorted({type(value).__name__ for value in values.tolist()})
    raise FormatError(
        f"the values have object dtype (func returned {', '.join(kinds)}), which .npz can only store with "
        f"pickle; expected func to return bool, int, float, complex or str"
    )


def _stack(coords: Sequence[np.ndarray], count: int) -> np.ndarray:
    """One row per axis, ``(ndim, count)`` int64 (``(0, count)`` for a 0-d shape)."""
    stacked = np.empty((len(coords), count), dtype=np.int64)
    for row, axis in zip(stacked, coords):
        row[:] = axis
    return stacked


def save_result(result: Result, path: str | os.PathLike[str], job: dict[str, Any] | None = None) -> None:
    """Write ``result`` to an ``.npz`` (layout in :mod:`chunkmap.result_file`), atomically, without pickle.

    The file is written to a temporary name in the same folder, flushed to disk and renamed
    over ``path``, so ``path`` holds either the previous file or the complete new one. ``path``
    is used as given (no ``.npz`` is appended).

    Parameters
    ----------
    result : Result
    path : path
    job : dict, optional
        JSON-serialisable description of the job, stored as the ``job`` entry.

    Raises
    ------
    chunkmap.errors.FormatError
        The values have object dtype (other than all ``str``).
    chunkmap.errors.ResultWriteError
        The file cannot be written (its folder is gone, the disk is full, no permission, a
        directory at ``path``); the OS error is its ``__cause__``.
    """
    path = os.fspath(path)
    stats = None if result.stats is None else dataclasses.asdict(result.stats)
    entries = {
        "format": np.array(FORMAT),
        "shape": np.array(result.shape, dtype=np.int64).reshape(-1),
        "coords": _stack(result.coords, len(result.values)),
        "values": _storable_values(np.asarray(result.values)),
        "failure_coords": _stack(result.failures.coords, len(result.failures)),
        "failure_kinds": _text_array(result.failures.kinds),
        "failure_types": _text_array(result.failures.types),
        "failure_messages": _text_array(result.failures.messages),
        "stats": np.array(json.dumps(stats)),
        "job": np.array(json.dumps(job)),
    }
    try:
        _write_atomically(path, entries)
    except OSError as exc:
        raise ResultWriteError(f"cannot write the result {path!r}: {exc.strerror or exc}") from exc


def _write_atomically(path: str, entries: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file in ``path``'s folder, renamed over ``path`` once on disk.

    The temporary file is created with mode 0666 less the umask, like any file a program writes
    (and the checkpoint's records): ``tempfile`` would make it 0600, private to its owner.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, "wb") as handle:
            np.savez(handle, **entries)  # no object arrays: nothing pickles
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the folder itself may be gone
            os.unlink(temporary)
        raise


def load_result(path: str | os.PathLike[str]) -> Result:
    """Read a result written by :func:`save_result` (or ``chunkmap run -o``) back into a :class:`~chunkmap.Result`.

    Raises
    ------
    chunkmap.errors.MissingFileError
        No file at ``path``.
    chunkmap.errors.FormatError
        Not an ``.npz`` written by chunkmap, or an unknown format version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingFileError(f"result file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path!r} is not an .npz result written by chunkmap run: {exc}") from None
    found = str(entries["format"]) if "format" in entries else None
    if found != FORMAT:
        raise FormatError(f"{path!r} is not a chunkmap result of format {FORMAT!r}; its format entry is {found!r}")
    shape = tuple(int(n) for n in entries["shape"])
    stats = _stats(json.loads(str(entries["stats"])))
    failures = Failures(
        shape,
        _flat_index(entries["failure_coords"], shape),
        entries["failure_types"],
        entries["failure_messages"],
        entries["failure_kinds"],
    )
    return Result(
        shape,
        tuple(entries["coords"]),
        entries["values"],
        failures,
        stats,
    )


def _stats(saved: dict[str, Any] | None) -> Stats | None:
    """Stats from their JSON; fields unknown to this version are dropped, missing ones are 0."""
    if saved is None:
        return None
    return Stats(**{field.name: saved.get(field.name, 0) for field in dataclasses.fields(Stats)})


def _flat_index(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not shape:
        return np.zeros(coords.shape[1], dtype=np.int64)
    return np.ravel_multi_index(tuple(coords), shape).astype(np.int64, copy=False)

