"""The pure-Python twin of ``chunkmap._cloop``: a C function called over a chunk through ctypes.

Same names, same contract, same errors as the C loop, by chunkmap's convention for C extensions
(:mod:`chunkmap._extensions`); the contract is in :mod:`chunkmap.cfunc`, which picks one of the
two, and the tests compare them. Each element is one ctypes call (which releases the GIL during
the call, not across the chunk).

Contract
--------
``call(address, result, columns, values, status, codes, positions, heartbeat=None, stop=False)`` calls the
C function at ``address`` on every element ``i`` of ``columns`` (a tuple of 1 to
:data:`MAX_COLUMNS` 1-D C-contiguous float64 or int64 arrays of one length ``n``: the parameter
types follow them) and returns ``(attempted, computed, failed)``. ``result`` is the kind of
function (``chunkmap.cfunc``'s ``DOUBLE``, ``INT64``, ``INT``, ``CODE_DOUBLE``, ``CODE_INT64``);
``status[i] = 0`` for a value, 1 for a non-zero error code. ``values`` (float64 for the double
kinds, else int64) gets the computed values packed, ``codes`` (int32) the error codes packed and
``positions`` (int64) the failed elements' positions;
``heartbeat[0] = i`` before each call; with ``stop`` the loop ends after the first failure.

Examples
--------
>>> import ctypes, ctypes.util, numpy as np
>>> libm = ctypes.CDLL(ctypes.util.find_library("m"))
>>> values, status = np.empty(2), np.empty(2, np.uint8)
>>> call(ctypes.cast(libm.fabs, ctypes.c_void_p).value, 0, (np.array([-1.5, 2.0]),), values, status,
...      np.empty(0, np.int32), np.empty(0, np.int64))
(2, 2, 0)
>>> values.tolist(), status.tolist()
([1.5, 2.0], [0, 0])
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

__all__ = ["MAX_COLUMNS", "call"]

MAX_COLUMNS = 4
_N_RESULTS = 5
_PARAMETER = {"d": ctypes.c_double, "q": ctypes.c_int64}


def _kind(array: np.ndarray) -> str | None:
    dtype = array.dtype
    if dtype.itemsize == 8 and dtype.isnative and dtype.kind in "fi":
        return "d" if dtype.kind == "f" else "q"
    return None


def _array(obj: Any, what: str, length: int, writable: bool) -> np.ndarray:
    if not isinstance(obj, np.ndarray) or not obj.flags.c_contiguous or (writable and not obj.flags.writeable):
        raise TypeError(f"{what} must be a {'writable ' if writable else ''}1-D C-contiguous array, got "
                        f"{type(obj).__name__}")
    if obj.ndim != 1 or (length >= 0 and len(obj) < length):
        raise ValueError(f"{what} must be 1-D with at least {length} items, got {obj.ndim}-D with "
                         f"{len(obj) if obj.ndim == 1 else 0}")
    return obj


def call(address: int, result: int, columns: tuple, values: np.ndarray, status: np.ndarray, codes: np.ndarray,
         positions: np.ndarray, heartbeat: np.ndarray | None = None, stop: bool = False) -> tuple[int, int, int]:
    """Call the C function at ``address`` on every element of ``columns`` (see the module's contract)."""
    if not isinstance(address, int) or not address:
        raise ValueError("address must be a non-zero int (a C function's address)")
    if not 0 <= result < _N_RESULTS:
        raise ValueError(f"result must be 0 to {_N_RESULTS - 1}, got {result}")
    if not isinstance(columns, tuple) or not 1 <= len(columns) <= MAX_COLUMNS:
        raise TypeError(f"columns must be a tuple of 1 to {MAX_COLUMNS} arrays")
    n = -1
    kinds = []
    for number, column in enumerate(columns):
        _array(column, "each column", n, False)
        if n >= 0 and len(column) != n:
            raise ValueError(f"the columns must have one length, got {n} and {len(column)}")
        n = len(column)
        kind = _kind(column)
        if kind is None:
            raise TypeError(f"column {number} must be float64 or int64 in native byte order, got buffer format "
                            f"'{column.dtype.char}'")
        kinds.append(kind)
    double = result in (0, 3)
    _array(values, "values", n, True)
    if _kind(values) != ("d" if double else "q"):
        raise TypeError(f"values must be {'float64' if double else 'int64'} for result {result}")
    _array(status, "status", n, True)
    if status.itemsize != 1:
        raise TypeError("status must be uint8")
    _array(codes, "codes", n if result >= 3 else 0, True)
    if codes.itemsize != 4:
        raise TypeError("codes must be int32")
    _array(positions, "positions", n if result >= 3 else 0, True)
    if _kind(positions) != "q" and len(positions) > 0:
        raise TypeError("positions must be int64")
    if heartbeat is not None:
        _array(heartbeat, "heartbeat", 1, True)
        if _kind(heartbeat) != "q":
            raise TypeError("heartbeat must be int64")
    parameters = [_PARAMETER[kind] for kind in kinds]
    out_type = ctypes.c_double if double else ctypes.c_int64
    if result >= 3:
        function = ctypes.CFUNCTYPE(ctypes.c_int, *parameters, ctypes.POINTER(out_type))(address)
    else:
        function = ctypes.CFUNCTYPE((ctypes.c_double, ctypes.c_int64, ctypes.c_int)[result], *parameters)(address)
    rows = zip(*(column.tolist() for column in columns))
    out = out_type()
    pointer = ctypes.byref(out)
    computed = failed = attempted = 0
    for i, row in enumerate(rows):
        if heartbeat is not None:
            heartbeat[0] = i
        attempted = i + 1
        if result < 3:
            values[i] = function(*row)
            status[i] = 0
            computed += 1
            continue
        code = function(*row, pointer)
        if code == 0:
            values[computed] = out.value
            status[i] = 0
            computed += 1
        else:
            status[i] = 1
            codes[failed] = code
            positions[failed] = i
            failed += 1
            if stop:
                break
    return attempted, computed, failed
