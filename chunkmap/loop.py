"""The per-element loop: call a scalar function on every element of some columns.

Two implementations of one contract: :func:`compiled_loop` (the C extension
``chunkmap._hotloop``, ``None`` if it failed to build or import) and
:func:`python_loop` (pure Python, the fallback). :data:`loop` is the compiled one when
available (set ``CHUNKMAP_PURE_PYTHON=1`` to force the fallback). :func:`run_to_end`
drives a loop over a whole chunk, promoting the output dtype as numpy would.

Contract
--------
``loop(func, columns, skip, values, status, failures, start=0, heartbeat=None)``
returns ``(position, reason, obj)``:

func : callable
    Called as ``func(columns[0][i], columns[1][i], ...)`` for ``i`` in ``[start, n)``,
    with plain Python ``bool``, ``int``, ``float`` or ``complex`` arguments (never
    numpy scalars: SWIG wrappers reject them).
columns : tuple of 1-D C-contiguous arrays
    1 to 32 arrays of equal length ``n``, native byte order, dtype bool, int8-64,
    uint8-64, float32/64 or complex64/128; any other dtype raises ``TypeError`` naming
    it (convert float16 and non-native byte order first).
skip : tuple of exception classes
    An exception matching it (``isinstance`` semantics, BaseException subclasses
    included) is recorded: ``failures.append((i, type(exc).__name__, str(exc)))``
    (``str(exc)`` raising an ``Exception`` gives ``PLACEHOLDER``), ``status[i] = 1``.
values : writable 1-D C-contiguous array, length >= n
    ``status[i] = 0`` and ``values[i] = func(...)`` when the result fits the dtype:

    - int64: ``bool`` (0/1) or ``int`` (and subclasses) within int64;
    - float64, float32: ``float`` (and subclasses, e.g. ``numpy.float64``), ``bool``,
      ``int`` within the int64 or uint64 range, converted to C double (then float);
    - complex128: ``complex`` (and subclasses) or any of the above;
    - bool: ``True`` or ``False``;
    - object: anything.

    Any other result (wrong type, int out of range, other numpy scalars, None, str...)
    is a *misfit*: nothing is stored, ``status[i]`` is untouched and the loop returns
    ``(i, 1, result)`` so that the caller can widen ``values`` and resume at
    ``start=i + 1``. These rules mirror ``numpy.asarray(list_of_results)``.
status : writable 1-D C-contiguous uint8 array, length >= n
failures : list
start : int, ``0 <= start <= n``
heartbeat : None or writable int64 array of length >= 1
    ``heartbeat[0] = i`` just before each call (another process can tell which element
    a worker is on).

Returns ``(n, 0, None)`` when every element was attempted; ``(i, 2, exc)`` when
``func`` raised an ``Exception`` not in ``skip`` (the error cleared, ``exc`` with its
traceback from ``func`` down); an exception that is not an ``Exception`` subclass
(``KeyboardInterrupt``, ``SystemExit``) propagates, as do invalid arguments
(``TypeError``/``ValueError``, checked before any call); elements before the stop keep
what was written to ``values``, ``status`` and ``failures``.

The compiled loop holds the GIL while ``func`` runs; every 4096 elements it checks for
signals (Ctrl-C raises ``KeyboardInterrupt`` from the loop even when ``func`` is a C
function) and lets other threads take the GIL, as the interpreter would. It calls
``METH_VARARGS`` builtins (SWIG ``-builtin`` wrappers) directly with one reused argument
tuple, other callables through vectorcall, and refills a float or complex argument in
place for the next element when ``func`` kept no reference to it.

Examples
--------
>>> import numpy as np
>>> a, b = np.array([1.0, 2.0, 0.0]), np.array([4.0, 4.0, 4.0])
>>> values, status, failures = np.zeros(3), np.zeros(3, np.uint8), []
>>> loop(lambda x, y: y / x, (a, b), (ZeroDivisionError,), values, status, failures)
(3, 0, None)
>>> values.tolist(), status.tolist(), failures
([4.0, 2.0, 0.0], [0, 0, 1], [(2, 'ZeroDivisionError', 'float division by zero')])
>>> loop(lambda x, y: None, (a, b), (), values, status, failures, start=1)
(1, 1, None)
"""

from __future__ import annotations

import operator
import os
import struct
from typing import Any, Callable

import numpy as np

__all__ = ["PLACEHOLDER", "compiled_loop", "loop", "python_loop", "run_to_end"]

try:
    from ._hotloop import loop as compiled_loop
except ImportError:  # pragma: no cover - the extension failed to build
    compiled_loop = None

#: The message recorded when ``str(exc)`` of a skipped exception raises.
PLACEHOLDER = "<str() of the exception failed>"

_MAX_COLUMNS = 32
_BLOCK = 8192  # elements converted with tolist() at a time: bounded memory
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
    f = view.format
    if f.startswith("@"):
        f = f[1:]
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
    """``real_as_double`` of _hotloop.c: a float, or _MISFIT."""
    if isinstance(r, float):
        return float.__float__(r)  # the stored value, whatever a subclass overrides
    if r is True or r is False:
        return 1.0 if r else 0.0
    if isinstance(r, int):
        v = int.__index__(r)
        if _I64_MIN <= v < _U64_END:
            return float(v)
    return _MISFIT


def _convert(kind: int, r: Any) -> Any:
    """The value stored for result ``r`` in an output of ``kind``, or _MISFIT."""
    if kind == _I64:
        if r is True or r is False:
            return int(r)
        if isinstance(r, int):
            v = int.__index__(r)
            return v if _I64_MIN <= v < _I64_END else _MISFIT
        return _MISFIT
    if kind in (_F64, _F32):
        return _as_double(r)
    if kind == _C128:
        if isinstance(r, complex):
            return complex(complex.real.__get__(r), complex.imag.__get__(r))
        v = _as_double(r)
        return v if v is _MISFIT else complex(v, 0.0)
    if kind == _BOOL:
        return r if r is True or r is False else _MISFIT
    return r  # _OBJ


# Per output kind: the placeholder kept for a skipped element; the struct code and dtype
# of a block's results.
_PLACEHOLDERS = {_I64: 0, _F64: 0.0, _F32: 0.0, _BOOL: False, _C128: 0j, _OBJ: None}
_PACK_CODES = {_I64: ("q", np.int64), _F64: ("d", np.float64), _F32: ("d", np.float64),
               _BOOL: ("?", np.bool_)}


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return PLACEHOLDER


# The loop over one block is generated per (number of columns, heartbeat, output kind),
# like collections.namedtuple's methods: named arguments, no star-call, and the type
# test of the output kind inlined. The position of element k is first + len(results).
_BLOCK_SOURCE = """\
def block(func, lists, first, skip, failures, results, skipped, beat):
    append = results.append
    for {loop_vars} in {iterable}:
{heartbeat}        try:
            r = func({args})
        except skip as exc:
            pos = first + len(results)
            failures.append((pos, type(exc).__name__, _message(exc)))
            skipped.append(pos)
            append({placeholder!r})
            continue
        except Exception as exc:
            tb = exc.__traceback__
            exc.__traceback__ = tb.tb_next if tb is not None else None  # drop this frame
            return first + len(results), 2, exc
{check}        append(r)
    return first + len(results), 0, None
"""
_CHECKS = {
    _I64: "type(r) is not int or not -9223372036854775808 <= r <= 9223372036854775807",
    _F64: "type(r) is not float",
    _F32: "type(r) is not float",
    _BOOL: "type(r) is not bool",
    _C128: "type(r) is not complex",
}
_BLOCKS: dict[tuple[int, bool, int], Callable[..., tuple[int, int, Any]]] = {}


def _block_function(ncols: int, heartbeat: bool, kind: int) -> Callable[..., Any]:
    """The generated loop over one block (see _BLOCK_SOURCE)."""
    key = (min(ncols, 4), heartbeat, kind)
    block = _BLOCKS.get(key)
    if block is not None:
        return block
    if ncols <= 3:
        names = [f"a{c}" for c in range(ncols)]
        args = ", ".join(names)
        loop_vars = names[0] if ncols == 1 else args
        columns = ", ".join(f"lists[{c}]" for c in range(ncols))
        iterable = "lists[0]" if ncols == 1 else f"zip({columns})"
    else:
        args, loop_vars, iterable = "*row", "row", "zip(*lists)"
    if heartbeat:
        loop_vars = f"pos, ({loop_vars})" if ncols in (2, 3) else f"pos, {loop_vars}"
        iterable = f"enumerate({iterable}, first)"
    check = ""
    if kind in _CHECKS:
        check = (
            f"        if {_CHECKS[kind]}:\n"
            f"            v = _convert({kind}, r)\n"
            f"            if v is _MISFIT:\n"
            f"                return first + len(results), 1, r\n"
            f"            r = v\n"
        )
    source = _BLOCK_SOURCE.format(
        loop_vars=loop_vars,
        iterable=iterable,
        heartbeat="        beat[0] = pos\n" if heartbeat else "",
        args=args,
        placeholder=_PLACEHOLDERS[kind],
        check=check,
    )
    namespace: dict[str, Any] = {"_message": _message, "_convert": _convert, "_MISFIT": _MISFIT}
    exec(compile(source, f"<chunkmap.loop block {key}>", "exec"), namespace)
    block = _BLOCKS[key] = namespace["block"]
    return block


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
    else:  # struct packs a list of Python floats or ints ~3x faster than np.array
        code, dtype = _PACK_CODES[kind]
        packed = struct.pack(f"{m}{code}", *results)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 -> float32: inf
            segment[:] = np.frombuffer(packed, dtype=dtype)
    stat[first : first + m] = 0
    if skipped:
        out[skipped] = saved
        stat[skipped] = 1


def python_loop(
    func: Callable[..., Any],
    columns: tuple,
    skip: tuple,
    values: Any,
    status: Any,
    failures: list,
    start: int = 0,
    heartbeat: Any = None,
) -> tuple[int, int, Any]:
    """Pure-Python implementation of the loop contract (see the module docstring).

    Converts ``_BLOCK`` elements at a time with ``tolist()`` and writes each block's
    results with one numpy assignment.

    Examples
    --------
    >>> import numpy as np
    >>> values, status = np.zeros(2, np.int64), np.zeros(2, np.uint8)
    >>> python_loop(int, (np.array([1.5, 2.5]),), (), values, status, [])
    (2, 0, None)
    >>> values.tolist()
    [1, 2]
    """
    arrays, n, out, kind, stat, beat, i = _validate(
        func, columns, skip, values, status, failures, start, heartbeat
    )
    block = _block_function(len(arrays), beat is not None, kind)
    while i < n:
        stop = min(n, i + _BLOCK)
        lists = [a[i:stop].tolist() for a in arrays]
        results: list[Any] = []
        skipped: list[int] = []
        try:
            position, reason, obj = block(func, lists, i, skip, failures, results, skipped, beat)
        finally:
            _flush(out, stat, i, results, skipped, kind)
        if reason:
            return position, reason, obj
        i = stop
    return n, 0, None


if compiled_loop is not None and not os.environ.get("CHUNKMAP_PURE_PYTHON"):
    loop = compiled_loop
else:  # pragma: no cover - depends on the build
    loop = python_loop


# ------------------------------------------------------------------------ run_to_end

_WIDENABLE = {np.dtype(np.bool_), np.dtype(np.int64), np.dtype(np.float64),
              np.dtype(np.complex128)}


def _widened(dtype: np.dtype, obj: Any) -> np.dtype:
    """The output dtype after misfit ``obj``: the promotion of ``dtype`` and the dtype
    numpy gives a Python bool/int/float/complex in a list, if that is one of _WIDENABLE;
    object for anything else, numpy scalars included (the object path never misfits
    again, and the final numpy.asarray over the objects gives numpy's own dtype)."""
    if type(obj) not in (bool, int, float, complex):
        return np.dtype(object)
    try:
        found = np.asarray(obj).dtype  # int64, or uint64/object for larger ints
    except OverflowError:
        return np.dtype(object)
    if found == object:
        return found
    promoted = np.promote_types(dtype, found)
    return promoted if promoted in _WIDENABLE else np.dtype(object)


def _values_array(values: list[Any]) -> np.ndarray:
    """numpy.asarray(values), or an object array of them if numpy cannot make a 1-D
    numeric array, as ``numpy.asarray`` would have it."""
    try:
        array = np.asarray(values)
    except (ValueError, OverflowError, TypeError):
        array = None
    if array is None or array.ndim != 1 or array.dtype.kind not in "biufc":
        array = np.fromiter(values, dtype=object, count=len(values))
    return array


def run_to_end(
    func: Callable[..., Any],
    columns: tuple,
    skip: tuple = (),
    *,
    heartbeat: Any = None,
    implementation: Callable[..., tuple[int, int, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray, list, tuple[int, BaseException] | None]:
    """Drive a loop over all elements, widening the output dtype at each misfit.

    The output starts as bool; a misfit Python bool/int/float/complex widens it to the
    promotion of its dtype and the current one (bool < int64 < float64 < complex128),
    anything else (ints beyond int64, numpy scalars other than float64/complex128, None,
    str...) to object, and the loop resumes after it: at most four widenings, each
    copying the output once. An object output is finally passed through
    ``numpy.asarray``. The results then have the dtype and values of
    ``numpy.asarray(results)`` (an object array if numpy makes no 1-D numeric array),
    except that results converted before a later widening to object stay converted
    (``[1, 2.5, None]`` gives ``[1.0, 2.5, None]``).

    Returns
    -------
    values : ndarray
        The results of the elements with ``status == 0``, in order.
    status : ndarray of uint8
        Per element: 0 computed, 1 skipped (an exception in ``skip``), 2 not attempted
        (after ``error``).
    failures : list of (int, str, str)
        ``(position, exception type name, message)`` of the skipped elements.
    error : (int, Exception) or None
        Position and exception of a call that raised an exception not in ``skip``; the
        loop stopped there.

    Examples
    --------
    >>> import numpy as np
    >>> values, status, failures, error = run_to_end(
    ...     lambda a: 1 / a if a < 3 else None, (np.arange(5.0),), (ZeroDivisionError,))
    >>> values, status.tolist(), failures[0][1], error
    (array([1.0, 0.5, None, None], dtype=object), [1, 0, 0, 0, 0], 'ZeroDivisionError', None)
    """
    impl = loop if implementation is None else implementation
    n = len(columns[0]) if isinstance(columns, tuple) and columns else 0
    out = np.zeros(n, dtype=np.bool_)
    status = np.full(n, 2, dtype=np.uint8)
    failures: list[tuple[int, str, str]] = []
    error = None
    position = 0
    while True:
        position, reason, obj = impl(func, columns, skip, out, status, failures, position,
                                     heartbeat)
        if reason == 0:
            break
        if reason == 2:
            error = (position, obj)
            break
        dtype = _widened(out.dtype, obj)
        if dtype != out.dtype:
            out = out.astype(dtype)
        if dtype == object:
            out[position : position + 1] = np.fromiter([obj], dtype=object, count=1)
        else:
            out[position] = obj
        status[position] = 0
        position += 1
    computed = out[status == 0]
    if computed.dtype == object:
        computed = _values_array(computed.tolist())
    elif not len(computed):
        computed = computed.astype(np.float64)
    return computed, status, failures, error
