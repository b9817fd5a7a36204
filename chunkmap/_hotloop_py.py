"""The pure-Python twin of ``chunkmap._hotloop``: the per-element loop in plain Python.

Same names, same contract, same errors as the C loop, by chunkmap's convention for C extensions
(:mod:`chunkmap._extensions`); the contract is in :mod:`chunkmap.loop`, which picks one of the two,
and the tests compare them element by element. The loop converts :data:`BLOCK` elements at a
time with ``tolist()``, calls ``func(*row)`` on each row of the block, keeps what to store in a
list and writes the block to ``values`` with one numpy assignment.

Examples
--------
>>> import numpy as np
>>> values, status = np.zeros(2, np.int64), np.zeros(2, np.uint8)
>>> loop(int, (np.array([1.5, 2.5]),), (), values, status, [])
(2, 0, None)
>>> values.tolist()
[1, 2]
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PLACEHOLDER", "loop"]

#: The message recorded when ``str(exc)`` of a skipped exception raises.
PLACEHOLDER = "<str() of the exception failed>"
#: Elements converted with ``tolist()`` at a time: bounded memory.
BLOCK = 8192

_MAX_COLUMNS = 32
_COLUMN_TYPES = (
    "supported are bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, "
    "float32, float64, complex64 and complex128 in native byte order; convert the column "
    "first (for example column.astype(numpy.float64))"
)
_VALUES_TYPES = "expected int64, float64, float32, bool, complex128 or object in native byte order"

_I64, _F64, _F32, _BOOL, _C128, _OBJ = range(6)
_I64_MIN, _I64_END, _U64_END = -(2**63), 2**63, 2**64
_MISFIT = object()


# --------------------------------------------------------------------------- validation
# The same checks, in the same order and with the same messages, as _hotloop.c.


def _type_name(obj: Any) -> str:
    return type(obj).__name__


def _dtype_text(obj: Any, view: memoryview | None) -> str:
    try:
        return str(obj.dtype)
    except Exception:
        return f"buffer format '{view.format if view is not None else 'B'}'"


def _buffer(obj: Any, what: str, types: str) -> memoryview:
    try:
        return memoryview(obj)
    except Exception:
        try:
            dtype = obj.dtype
        except Exception:
            raise TypeError(
                f"{what} must be a numpy array (or buffer), got {_type_name(obj)}"
            ) from None
        raise TypeError(f"{what} has dtype {dtype}, {types}") from None


def _native(view: memoryview) -> str | None:
    f = view.format.removeprefix("@")
    if f and f[0] in "<>=!":
        return None
    return f


_COLUMN_SIZES = {"?": (1,), "f": (4,), "d": (8,), "Zf": (8,), "Zd": (16,)}
_COLUMN_SIZES.update(dict.fromkeys("bhilqBHILQ", (1, 2, 4, 8)))
_VALUES_KINDS = {
    ("q", 8): _I64,
    ("l", 8): _I64,
    ("d", 8): _F64,
    ("f", 4): _F32,
    ("?", 1): _BOOL,
    ("Zd", 16): _C128,
    ("O", np.dtype(object).itemsize): _OBJ,
}


def _check_shape(view: memoryview, what: str, writable: bool, contiguous: bool) -> None:
    if view.ndim != 1:
        raise ValueError(f"{what} must be 1-dimensional, got {view.ndim} dimensions")
    if writable and view.readonly:
        raise ValueError(f"{what} must be writable")
    if contiguous and not view.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")


def _array(obj: Any, view: memoryview) -> np.ndarray:
    return obj if isinstance(obj, np.ndarray) else np.asarray(view)


def _output(obj: Any, view: memoryview, what: str, n: int) -> np.ndarray:
    """``obj`` as a writable 1-D output of at least ``n`` elements, or the error saying why not."""
    _check_shape(view, what, True, True)
    if view.shape[0] < n:
        raise ValueError(f"{what} has {view.shape[0]} elements, fewer than the {n} of the columns")
    return _array(obj, view)


def _validate(func, columns, skip, values, status, failures, start, heartbeat):
    """Check the arguments; return (column arrays, n, values array, kind, status array,
    heartbeat memoryview or None, start)."""
    if not callable(func):
        raise TypeError(f"func must be callable, got {_type_name(func)}")
    if not isinstance(columns, tuple):
        raise TypeError(f"columns must be a tuple of arrays, got {_type_name(columns)}")
    if not 1 <= len(columns) <= _MAX_COLUMNS:
        raise ValueError(f"columns must hold 1 to {_MAX_COLUMNS} arrays, got {len(columns)}")
    if not isinstance(skip, tuple):
        raise TypeError(f"skip must be a tuple of exception classes, got {_type_name(skip)}")
    for c, item in enumerate(skip):
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"skip[{c}] must be an exception class, got {item!r}")
    if not isinstance(failures, list):
        raise TypeError(f"failures must be a list, got {_type_name(failures)}")
    arrays = []
    n = 0
    for c, col in enumerate(columns):
        what = f"columns[{c}]"
        view = _buffer(col, what, _COLUMN_TYPES)
        f = _native(view)
        if f is None or view.itemsize not in _COLUMN_SIZES.get(f, ()):
            raise TypeError(f"{what} has dtype {_dtype_text(col, view)}, {_COLUMN_TYPES}")
        _check_shape(view, what, False, True)
        if c == 0:
            n = view.shape[0]
        elif view.shape[0] != n:
            raise ValueError(
                f"columns[{c}] has {view.shape[0]} elements but columns[0] has {n}; all "
                "columns must have the same length"
            )
        arrays.append(_array(col, view))
    view = _buffer(values, "values", _VALUES_TYPES)
    kind = _VALUES_KINDS.get((_native(view), view.itemsize))
    if kind is None:
        raise TypeError(f"values has dtype {_dtype_text(values, view)}, {_VALUES_TYPES}")
    out = _output(values, view, "values", n)
    view = _buffer(status, "status", "expected uint8")
    if _native(view) != "B" or view.itemsize != 1:
        raise TypeError(f"status has dtype {_dtype_text(status, view)}, expected uint8")
    stat = _output(status, view, "status", n)
    start = operator.index(start)
    if not 0 <= start <= n:
        raise ValueError(f"start must be between 0 and {n} (the columns' length), got {start}")
    beat = None
    if heartbeat is not None:
        beat = _buffer(heartbeat, "heartbeat", "expected int64")
        if _native(beat) not in ("q", "l") or beat.itemsize != 8:
            raise TypeError(f"heartbeat has dtype {_dtype_text(heartbeat, beat)}, expected int64")
        _check_shape(beat, "heartbeat", True, False)
        if beat.shape[0] < 1:
            raise ValueError("heartbeat must have at least 1 element")
    return arrays, n, out, kind, stat, beat, start


# ------------------------------------------------------------------------- conversion


def _as_double(r: Any) -> Any:
    """``real_as_double`` of _hotloop.c: a float, or _MISFIT (the result's type decides, as in C)."""
    cls = type(r)
    if issubclass(cls, float):
        return float.__float__(r)  # the stored value, whatever a subclass overrides
    if cls is bool:
        return 1.0 if r else 0.0
    if issubclass(cls, int):
        v = int.__index__(r)
        if _I64_MIN <= v < _U64_END:
            return float(v)
    return _MISFIT


def _convert(kind: int, r: Any) -> Any:
    """The value stored for result ``r`` in an output of ``kind``, or _MISFIT."""
    if kind == _I64:
        if type(r) is bool:
            return int(r)
        if issubclass(type(r), int):
            v = int.__index__(r)
            return v if _I64_MIN <= v < _I64_END else _MISFIT
        return _MISFIT
    if kind in (_F64, _F32):
        return _as_double(r)
    if kind == _C128:
        if issubclass(type(r), complex):
            return complex(complex.real.__get__(r), complex.imag.__get__(r))
        v = _as_double(r)
        return v if v is _MISFIT else complex(v, 0.0)
    if kind == _BOOL:
        return r if type(r) is bool else _MISFIT
    return r  # _OBJ


# Per output kind: the result type stored as it is (None: any result is; other types go through
# _convert), and the placeholder kept in a block's results for a skipped element.
_EXACT_TYPES = {_I64: int, _F64: float, _F32: float, _BOOL: bool, _C128: complex, _OBJ: None}
_PLACEHOLDERS = {_I64: 0, _F64: 0.0, _F32: 0.0, _BOOL: False, _C128: 0j, _OBJ: None}
# How a block's results are packed: struct packs a list of Python ints or floats ~3x faster
# than numpy.array makes an array of them.
_PACK_CODES = {_I64: ("q", np.int64), _F64: ("d", np.float64), _F32: ("d", np.float64),
               _BOOL: ("?", np.bool_)}


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return PLACEHOLDER


def _call_block(func, rows, first, skip, kind, beat, results, skipped, failures):
    """Call ``func(*row)`` for each row, appending what to store to ``results``.

    Row ``k`` is element ``first + k``. Returns ``(position, reason, obj)`` as the loop does:
    ``reason`` 0 when every row was called, 1 at a misfit, 2 at an exception not in ``skip``.
    """
    exact = _EXACT_TYPES[kind]
    checked = exact is not None  # an object output stores any result
    bounded = exact is int  # an int fits an int64 output only within the int64 range
    placeholder = _PLACEHOLDERS[kind]
    append = results.append
    for row in rows:
        if beat is not None:
            beat[0] = first + len(results)
        try:
            r = func(*row)
        except skip as exc:
            position = first + len(results)
            failures.append((position, type(exc).__name__, _message(exc)))
            skipped.append(position)
            append(placeholder)
            continue
        except Exception as exc:
            tb = exc.__traceback__
            exc.__traceback__ = tb.tb_next if tb is not None else None  # from func down
            return first + len(results), 2, exc
        del row  # unless func kept it, zip reuses the row tuple for the next row
        if checked and (type(r) is not exact or bounded and not _I64_MIN <= r < _I64_END):
            stored = _convert(kind, r)
            if stored is _MISFIT:
                return first + len(results), 1, r
            r = stored
        append(r)
    return first + len(results), 0, None


def _flush(out, stat, first, results, skipped, kind) -> None:
    """Write a block's results to out[first:...] and status, leaving out[skipped] as
    they were."""
    m = len(results)
    if not m:
        return
    saved = out[skipped] if skipped else None
    segment = out[first : first + m]
    if kind == _OBJ:
        segment[:] = np.fromiter(results, dtype=object, count=m)
    elif kind == _C128:
        segment[:] = np.array(results, dtype=np.complex128)
    else:
        code, dtype = _PACK_CODES[kind]
        packed = struct.pack(f"{m}{code}", *results)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 -> float32: inf
            segment[:] = np.frombuffer(packed, dtype=dtype)
    stat[first : first + m] = 0
    if skipped:
        out[skipped] = saved
        stat[skipped] = 1


def loop(
    func: Callable[..., Any],
    columns: tuple,
    skip: tuple,
    values: Any,
    status: Any,
    failures: list,
    start: int = 0,
    heartbeat: Any = None,
) -> tuple[int, int, Any]:
    """Call ``func(columns[0][i], ...)`` for ``i`` in ``[start, n)``: see :mod:`chunkmap.loop`."""
    arrays, n, out, kind, stat, beat, i = _validate(
        func, columns, skip, values, status, failures, start, heartbeat
    )
    while i < n:
        stop = min(n, i + BLOCK)
        rows = zip(*[a[i:stop].tolist() for a in arrays])
        results: list[Any] = []
        skipped: list[int] = []
        try:
            position, reason, obj = _call_block(func, rows, i, skip, kind, beat, results,
                                                skipped, failures)
        finally:
            _flush(out, stat, i, results, skipped, kind)
        if reason:
            return position, reason, obj
        i = stop
    return n, 0, None
