"""The per-element loop: call a scalar function on every element of some columns.

Two implementations of one contract, by chunkmap's convention for C extensions
(:mod:`chunkmap._extensions`): :func:`compiled_loop`, the C extension ``chunkmap._hotloop``
(``None`` if it is not built), and :func:`python_loop`, its plain-Python twin
``chunkmap._hotloop_py.loop``. :data:`loop` is the compiled one unless it is not built or
``CHUNKMAP_PURE_PYTHON=1`` is set; :data:`EXTENSION` says which. :func:`run_to_end` drives a
loop over a whole chunk, promoting the output dtype as numpy would.

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

    A result's type decides (``type(result)``, not ``isinstance``, which an object can fool).
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
``func`` raised an ``Exception`` not in ``skip`` (``StopIteration`` too; the error cleared,
``exc`` with its traceback from ``func`` down); an exception that is not an ``Exception`` subclass
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

from collections.abc import Callable
from typing import Any

import numpy as np

from ._extensions import load

__all__ = ["EXTENSION", "PLACEHOLDER", "compiled_loop", "loop", "python_loop", "run_to_end"]

#: ``chunkmap._hotloop`` and its twin ``chunkmap._hotloop_py``, and which of them is used.
EXTENSION = load("chunkmap._hotloop")
#: The compiled loop, or None when ``chunkmap._hotloop`` is not built.
compiled_loop = EXTENSION.compiled.loop if EXTENSION.compiled is not None else None
#: The pure-Python loop.
python_loop = EXTENSION.twin.loop
#: The loop chunkmap uses.
loop = EXTENSION.active.loop
#: The message recorded when ``str(exc)`` of a skipped exception raises.
PLACEHOLDER = EXTENSION.active.PLACEHOLDER

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
    keep_objects: bool = False,
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
    (``[1, 2.5, None]`` gives ``[1.0, 2.5, None]``). With ``keep_objects``, an object output
    stays the objects ``func`` returned (for :func:`chunkmap.fields.to_fields`, which converts
    each output of the tuples itself).

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
    if computed.dtype == object and not keep_objects:
        computed = _values_array(computed.tolist())
    elif not len(computed):
        computed = computed.astype(np.float64)
    return computed, status, failures, error
