"""Jobs from files: what ``chunkmap run MODULE:FUNC IN.npy ... -o OUT.npz`` does, as functions.

- :func:`resolve` / :func:`resolve_function` / :func:`resolve_exception` — ``"module:name"`` to the
  object, by importing the module (the user's explicit choice of code to run).
- :func:`load_inputs` — ``.npy`` files, memory-mapped read-only: nothing is copied or read whole.
- :func:`run_job` — all of the above, then :func:`chunkmap.run`.
- :func:`save_result` / :func:`load_result` — a :class:`~chunkmap.Result` to and from an ``.npz``,
  written atomically (a temporary file renamed into place) and never with pickle.

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
``job``              str, ()          JSON of what was run: function, inputs, mask, skip
==================== ================ =============================================================

Every entry is a plain array, so ``np.load(path)`` (``allow_pickle=False``) reads the file
without chunkmap. Values of object dtype cannot be stored without pickle and are refused, except
an array of ``str`` only, which is stored as a numpy unicode array.

Examples
--------
>>> import numpy as np, os, tempfile
>>> from chunkmap import Result, Failures
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

import builtins
import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Sequence

import numpy as np

from .. import core
from ..errors import (
    FormatError,
    MissingFileError,
    NotCallableError,
    NpyFormatError,
    OptionError,
    ResultWriteError,
    ShapeError,
)
from .maskexpr import compile_mask
from ..npy.header import read_header
from ..result import Failures, Result, Stats

__all__ = [
    "FORMAT",
    "resolve",
    "resolve_function",
    "resolve_exception",
    "load_inputs",
    "check_output",
    "run_job",
    "save_result",
    "load_result",
]

FORMAT = "chunkmap.result/1"
#: keyword options of :func:`chunkmap.run` that a job passes only when they are given.
OPTIONAL_RUN_OPTIONS = ("checkpoint", "timeout", "progress")


def resolve(spec: str, what: str = "object", example: str = "chunkmap.stub.slowlib:slow_computation") -> Any:
    """Import ``"package.module:name"`` (``name`` may be dotted, ``Class.attribute``).

    Parameters
    ----------
    spec : str
        ``MODULE:NAME``.
    what : str
        What the object is for, named in error messages.
    example : str
        A valid spec, shown when ``spec`` is malformed.

    Raises
    ------
    chunkmap.errors.OptionError
        Not of the form ``MODULE:NAME``, the module cannot be found, or it has no such name.
        (An exception raised while the module itself runs propagates unchanged.)

    Examples
    --------
    >>> resolve("os.path:join", "function").__name__
    'join'
    >>> resolve("os.path:joyn", "function")
    Traceback (most recent call last):
    ...
    chunkmap.errors.OptionError: module 'os.path' has no attribute 'joyn' (from the function 'os.path:joyn')
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise OptionError(
            f"the {what} must be given as MODULE:NAME, e.g. {example}; got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = f"module {exc.name!r}" if exc.name else "a module"
        raise OptionError(
            f"cannot import the {what} {spec!r}: {missing} is not found; check the spelling and that "
            f"the module is importable here (installed, in the current directory, or on PYTHONPATH)"
        ) from None
    found: Any = module
    for number, part in enumerate(name.split(".")):
        try:
            found = getattr(found, part)
        except AttributeError:
            owner = module_name if number == 0 else f"{module_name}:{'.'.join(name.split('.')[:number])}"
            raise OptionError(f"module {owner!r} has no attribute {part!r} (from the {what} {spec!r})") from None
    return found


def resolve_function(spec: str) -> Callable[..., Any]:
    """The callable named by ``MODULE:FUNC``.

    Raises
    ------
    chunkmap.errors.OptionError
        See :func:`resolve`.
    chunkmap.errors.NotCallableError
        The object is not callable.
    """
    func = resolve(spec, "function")
    if not callable(func):
        raise NotCallableError(
            f"{spec!r} is a {type(func).__name__} ({func!r:.60}), not a function; expected MODULE:FUNC naming "
            f"a callable, e.g. chunkmap.stub.slowlib:slow_computation"
        )
    return func


def resolve_exception(spec: str) -> type[BaseException]:
    """The exception class named by ``MODULE:EXC``; a bare builtin name such as ``ValueError`` also works.

    Examples
    --------
    >>> resolve_exception("ZeroDivisionError"), resolve_exception("chunkmap.errors:OptionError")
    (<class 'ZeroDivisionError'>, <class 'chunkmap.errors.OptionError'>)
    """
    if ":" not in spec and isinstance(getattr(builtins, spec, None), type):
        spec = f"builtins:{spec}"
    found = resolve(spec, "exception", "chunkmap.stub.slowlib:InternalError")
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise OptionError(
            f"{spec!r} is {found!r:.60}, not an exception class; expected MODULE:EXC naming an exception "
            f"class, e.g. chunkmap.stub.slowlib:InternalError or builtins:ValueError"
        )
    return found


def load_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[np.ndarray]:
    """Memory-map ``.npy`` files read-only (nothing is read whole) and check their shapes broadcast.

    Raises
    ------
    chunkmap.errors.MissingFileError
        A file does not exist.
    chunkmap.errors.NpyFormatError
        A file is not a ``.npy`` file (an ``.npz`` archive is named as such), or holds objects.
    chunkmap.errors.ShapeError
        The shapes do not broadcast together.
    """
    if not paths:
        raise OptionError("a job needs at least one input .npy file")
    arrays = []
    for path in paths:
        path = os.fspath(path)
        _check_npy(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:  # numpy cannot map some files (e.g. empty data); read them instead
            array = np.load(path, allow_pickle=False)
        arrays.append(array)
    try:
        np.broadcast_shapes(*(array.shape for array in arrays))
    except ValueError:
        listed = ", ".join(
            f"in{number}={os.fspath(path)!r} {array.shape}" for number, (path, array) in enumerate(zip(paths, arrays), 1)
        )
        raise ShapeError(
            f"the input shapes do not broadcast to one shape: {listed}; expected equal shapes, or shapes "
            f"numpy can broadcast together such as (3, 4) and (4,)"
        ) from None
    return arrays


def _check_npy(path: str) -> None:
    if os.path.isdir(path):
        raise NpyFormatError(f"input {path!r} is a directory; expected a .npy file written by numpy.save")
    if not os.path.exists(path):
        raise MissingFileError(f"input file {path!r} does not exist; expected a .npy file written by numpy.save")
    if zipfile.is_zipfile(path):
        raise NpyFormatError(
            f"input {path!r} is an .npz archive; expected one .npy file per input: save each array "
            f"with numpy.save"
        )
    read_header(path)  # NpyFormatError for anything else that is not a .npy file


def check_output(path: str | os.PathLike[str]) -> str:
    """Fail early, before a long run, when ``path`` cannot be written.

    Raises
    ------
    chunkmap.errors.OptionError
        The folder does not exist or is not writable, or ``path`` is a folder.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OptionError(f"the output {path!r} is a directory; expected a file name such as result.npz")
    if not os.path.isdir(folder):
        raise OptionError(f"the output folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OptionError(f"the output folder {folder!r} is not writable")
    return path


def run_job(
    function: str,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    mask: str | None = None,
    skip: Sequence[str] = (),
    output: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Result:
    """Run ``MODULE:FUNC`` over ``.npy`` inputs and optionally write the result to ``output``.

    Parameters
    ----------
    function : str
        ``MODULE:FUNC``, called as ``func(in1, in2, ...)`` per element.
    inputs : sequence of path
        The ``.npy`` files, ``in1..inN`` in this order; memory-mapped, never copied.
    mask : str, optional
        A mask expression (:mod:`chunkmap.cli.maskexpr`); True = do not compute.
    skip : sequence of str
        ``MODULE:EXC`` exception classes to record in ``result.failures`` instead of stopping.
    output : path, optional
        Write the result there with :func:`save_result` (checked before the run starts).
    **options
        Passed on to :func:`chunkmap.run` (``chunks``, ``scheduler``, ``client``, and
        ``checkpoint``, ``timeout``, ``progress`` when this version of ``run`` has them).

    Returns
    -------
    Result

    Raises
    ------
    chunkmap.errors.ChunkmapError
        Bad function, exception, mask, inputs or options, and whatever :func:`chunkmap.run` raises.
    """
    func = resolve_function(function)
    exceptions = tuple(resolve_exception(spec) for spec in skip)
    compiled = compile_mask(mask, len(inputs)) if mask is not None else None
    _check_run_options(options)
    if output is not None:
        output = check_output(output)
    arrays = load_inputs(inputs)
    result = core.run(func, *arrays, mask=compiled, skip=exceptions, **options)
    if output is not None:
        job = {
            "function": function,
            "inputs": [os.fspath(path) for path in inputs],
            "mask": None if compiled is None else compiled.text,
            "skip": list(skip),
        }
        save_result(result, output, job=job)
    return result


def _check_run_options(options: dict[str, Any]) -> None:
    accepted = inspect.signature(core.run).parameters
    for name in options:
        if name not in accepted:
            raise OptionError(
                f"the {name}= option needs a chunkmap.run() that accepts {name}=, and this version of chunkmap "
                f"does not support it yet; leave out --{name}"
            )


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
    """Write ``result`` to an ``.npz`` (layout in :mod:`chunkmap.cli.jobs`), atomically, without pickle.

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
    """``np.savez`` to a temporary file in ``path``'s folder, renamed over ``path`` once on disk."""
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **entries)  # no object arrays: nothing pickles
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the folder itself may be gone
            os.unlink(handle.name)
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

