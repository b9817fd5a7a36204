"""Example SWIG-wrapped C library: a slow scalar function that sometimes fails.

``chunkmap.stub.slowlib`` stands in for a user's C library wrapped with SWIG. Its
sources (``slowlib.h``, ``slowlib.c``, ``slowlib.i``) ship in this package; ``pip
install`` builds the extension module ``chunkmap.stub._slowlib`` (``swig -builtin``)
and the SWIG proxy module ``slowlib.py``. Import it as
``from chunkmap.stub import slowlib``.

Routine Listings
----------------
slowlib.slow_computation(a, b) -> int
    The computation below, holding the GIL during the C call.
slowlib.slow_computation_nogil(a, b) -> int
    The same, with the GIL released during the C call.
slowlib.set_cost_ns(ns), slowlib.get_cost_ns() -> int
    Busy-wait of ``ns`` nanoseconds done by every call (``ValueError`` if
    negative). The initial value is read from the environment variable
    ``SLOWLIB_COST_NS`` when the module is loaded (default 0), so worker
    processes started later inherit it.
slowlib.max_concurrent_calls() -> int, slowlib.reset_max_concurrent_calls()
    The most calls with a cost > 0 that were inside the C function at once
    since the reset: 2 for two threads on ``slow_computation_nogil``, 1 on
    ``slow_computation``, whatever the load (how the tests prove GIL release
    without timing; calls without a cost are not counted).
slowlib.Model(scale)
    A SWIG object (a C struct behind a handle) that, like most SWIG objects,
    cannot be pickled; ``Model(scale).predict(a, b)`` is
    ``scale * slow_computation(a, b)`` as a float (``InternalError`` alike).
library_path(), library()
    The path of the compiled library (the SWIG module's file, which exports the C
    functions of ``slowlib.h``: ``slowlib_compute``, ``slowlib_set_cost_ns``...) and
    that file loaded with ctypes: the same library instance as the SWIG module's in
    this process, so ``set_cost_ns`` applies to both.
compute()
    ``int slowlib_compute(double a, double b, long long *out)`` as a
    :func:`chunkmap.cfunc` with the library's error meanings: ``chunkmap.run`` calls
    it from C with no Python per element (``skip=chunkmap.errors.CError``).
set_cost(ns, client=None)
    ``set_cost_ns`` here and in the worker processes chunkmap starts later
    (through ``SLOWLIB_COST_NS``), and on a dask client's workers.
slowlib.InternalError
    Subclass of ``Exception`` raised for the library's error codes; its message
    names the inputs. Functions and exception pickle by reference.
slowlib.CRASH_VALUE = -666.0
    ``a == CRASH_VALUE`` kills the process with a real segmentation fault.
slowlib.HANG_VALUE = -777.0
    ``a == HANG_VALUE`` never returns (sleeps 1 s in a loop; the GIL stays
    held in ``slow_computation``, released in ``slow_computation_nogil``).

Notes
-----
``a`` and ``b`` may be ``int`` or ``float`` (or float subclasses such as
``numpy.float64``; like any default SWIG wrapper, other numpy scalars raise
``TypeError``). Converted to float, they give, in pure Python::

    for x in (a, b):
        if not abs(1000 * x) < 2**62:  # also true for NaN and inf
            raise InternalError  # code 2: input not finite or too large
    k = math.floor(1000 * a) + math.floor(1000 * b)
    if k % 37 == 0:
        raise InternalError  # code 1: about 2.7 % of random inputs
    return k

Examples
--------
>>> from chunkmap.stub import slowlib
>>> slowlib.slow_computation(0.5, 0.25)
750
>>> slowlib.slow_computation_nogil(2, -1.5)
500
>>> slowlib.slow_computation(0.5, 0.24)
Traceback (most recent call last):
    ...
chunkmap.stub.slowlib.InternalError: slowlib_compute(0.5, 0.24): input outside the library's domain (code 1)
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from typing import Any

__all__ = ["set_cost", "library_path", "library", "compute"]

#: the error codes of slowlib.h (SLOWLIB_EDOMAIN, SLOWLIB_ERANGE, SLOWLIB_EINVAL)
ERROR_CODES = (1, 2, 3)


def library_path() -> str:
    """The path of the stub's compiled library (``chunkmap.stub._slowlib``'s file), without importing it."""
    spec = importlib.util.find_spec("chunkmap.stub._slowlib")
    if spec is None or not spec.origin:  # pragma: no cover - the stub always builds
        raise ImportError("chunkmap.stub._slowlib is not built; reinstall chunkmap (pip install chunkmap)")
    return os.path.realpath(spec.origin)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The stub's library loaded with ctypes (its C functions' ``argtypes`` set)."""
    lib = ctypes.CDLL(library_path())
    lib.slowlib_compute.argtypes = [ctypes.c_double, ctypes.c_double, ctypes.POINTER(ctypes.c_longlong)]
    lib.slowlib_compute.restype = ctypes.c_int
    lib.slowlib_strerror.argtypes, lib.slowlib_strerror.restype = [ctypes.c_int], ctypes.c_char_p
    lib.slowlib_set_cost_ns.argtypes, lib.slowlib_set_cost_ns.restype = [ctypes.c_longlong], ctypes.c_int
    lib.slowlib_get_cost_ns.restype = ctypes.c_longlong
    return lib


def compute() -> Any:
    """``slowlib_compute`` as a :class:`chunkmap.cfunc.CFunction`, its error codes explained.

    >>> import numpy as np, chunkmap
    >>> from chunkmap.errors import CError
    >>> result = chunkmap.run(compute(), np.array([0.5, 0.5]), np.array([0.25, 0.24]), skip=CError,
    ...                       scheduler="sync", progress=False)
    >>> result.values.tolist(), result.failures[0].message
    ([750], "slowlib_compute returned error code 1 (input outside the library's domain)")
    """
    from ..cfunc import cfunc

    lib = library()
    meanings = {code: lib.slowlib_strerror(code).decode() for code in ERROR_CODES}
    return cfunc(lib.slowlib_compute, "int(double, double, int64*)", errors=meanings)


def set_cost(cost_ns: int, client: Any = None) -> None:
    """Set the stub's per-call cost here and in worker processes, also on ``client``'s dask workers.

    Worker processes inherit the environment, and a worker pool restarts when the environment
    changes, so setting ``SLOWLIB_COST_NS`` reaches every process that calls the stub.
    """
    from . import slowlib

    slowlib.set_cost_ns(cost_ns)
    os.environ["SLOWLIB_COST_NS"] = str(cost_ns)
    if client is not None:
        client.run(set_cost, cost_ns)
