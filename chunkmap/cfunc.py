"""C functions called over a chunk with no Python per element: :func:`cfunc` and :class:`CFunction`.

``chunkmap.cfunc(pointer, signature)`` wraps a C function pointer -- from ctypes (a ``CDLL``
attribute or a ``CFUNCTYPE`` instance), cffi (a function pointer cdata), numba (a
``@numba.cfunc``), or a plain int address -- in a :class:`CFunction` that :func:`chunkmap.run`
calls from compiled C, directly through the pointer, over a whole chunk with the GIL released
once per chunk: ``scheduler="threads"`` scales with the cores, and a cheap function runs at
the speed of the call itself (a few nanoseconds per element, ``benchmarks/bench_loop.py``).

Signatures
    One result and 1 to 4 parameters, each ``double`` or ``int64`` (also spelled ``float64``;
    ``int64_t``, ``long long``, ``long``), written as C declares them without names:

    - ``"double(double, double)"``, ``"int64(double, int64)"``, ``"int(double)"``: the value is
      what the function returns (``int`` is stored as int64);
    - ``"int(double, double, double*)"`` or ``"int(double, double, int64*)"``: the function
      returns 0 and writes the value through the last pointer, or returns an error code, which
      fails that element with :class:`~chunkmap.errors.CError` (``skip=chunkmap.errors.CError``
      records it in ``result.failures`` with type ``"CError"`` and a message naming the code and,
      with ``errors={code: meaning}``, its meaning; otherwise the run stops with an
      :class:`~chunkmap.errors.ElementError`, as for any exception not in ``skip``).
      ``slowlib_compute`` of :mod:`chunkmap.stub` has this form:
      ``int slowlib_compute(double a, double b, long long *out)``.

    Inputs are converted to the parameter types when numpy casts them safely (int32 or bool to
    double, int32 to int64); other dtypes (float to int64, complex) go element by element
    through the Python call below, so they fail as they would there (a ``TypeError``).

The same results through Python
    A :class:`CFunction` is also an ordinary callable (through ctypes, one element at a time):
    the serial loop, ``kwargs=``, ``outputs=`` and the pure-Python twin of the compiled loop use
    it, and give the same values, failures and messages as the compiled loop.

Crossing processes (``processes``, ``distributed``)
    A function that lives in a shared library pickles as the library's path and the function's
    symbol (found with ``dladdr``), and is looked up again with ctypes in the worker; the
    library's file must be there, unchanged (its size and mtime are checked). A numba ``cfunc``
    pickles as its Python function and signature and is compiled again in each worker (numba must
    be installed there). Other pointers (a ctypes callback of a Python function, JIT code from
    elsewhere) are not in any library file: they run on ``threads`` and ``sync`` only, and
    pickling one raises :class:`~chunkmap.errors.NotPicklableError` saying so. A checkpoint
    identifies a function by the same path, symbol, signature and the bytes of the library file
    (never its address); a numba function by its Python code.

Crashes, hangs, Ctrl-C
    Before each call the loop writes the element's position to the worker's heartbeat, so on
    ``processes`` a crash (a segmentation fault) or a hang (``timeout=``) costs that element
    only, as for Python functions. In-process (``sync``, ``threads``) a chunk is evaluated in
    growing blocks of at most ~50 ms, and Ctrl-C or ``cancel=`` stops the run between two blocks.

>>> import ctypes, ctypes.util
>>> libm = ctypes.CDLL(ctypes.util.find_library("m"))
>>> hypot = cfunc(libm.hypot, "double(double, double)")
>>> hypot, hypot(3.0, 4.0)
(cfunc(hypot, 'double(double, double)'), 5.0)
"""

from __future__ import annotations

import ctypes
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._extensions import load
from .csignature import CODE_DOUBLE, DTYPES, Signature, argument, parse_signature, signature_of
from .errors import CError, CPointerError, NotPicklableError, OptionError
from .failures import FailureRecords

__all__ = ["CFunction", "Signature", "cfunc", "parse_signature", "EXTENSION", "run_to_end"]

#: ``chunkmap._cloop`` and its twin ``chunkmap._cloop_py``, and which of them is used.
EXTENSION = load("chunkmap._cloop")


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def _where(address: int) -> tuple[str, str] | None:
    """``(library path, symbol)`` of the exported function at ``address``, or None (JIT code, a callback)."""
    dladdr = ctypes.CDLL(None).dladdr
    dladdr.argtypes, dladdr.restype = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)], ctypes.c_int
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname or not info.dli_sname:
        return None
    path = os.path.realpath(os.fsdecode(info.dli_fname))
    if info.dli_saddr != address or not os.path.isfile(path) or path == os.path.realpath(sys.executable):
        return None
    return path, info.dli_sname.decode()


def _executable(address: int) -> bool:
    """Whether ``address`` lies in an executable mapping of this process (True where that cannot be told)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                span, permissions = line.split()[:2]
                low, high = (int(part, 16) for part in span.split("-"))
                if low <= address < high:
                    return "x" in permissions
    except OSError:  # pragma: no cover - not Linux
        return True
    return False


class CFunction:
    """A C function that :func:`chunkmap.run` calls over whole chunks from C; made by :func:`cfunc`.

    Attributes
    ----------
    name : str
        The function's symbol (or the numba function's name).
    signature : Signature
    address : int
        Where it is in this process (never pickled nor fingerprinted).
    library : str or None
        The shared library holding it, None for JIT code and callbacks.
    errors : dict of int to str
        The meaning of each error code, for failure messages.
    """

    def __init__(self, address: int, signature: Signature, name: str, library: str | None,
                 errors: Mapping[int, str] | None = None, keep: Any = None, numba: tuple | None = None) -> None:
        self.address = address
        self.signature = signature
        self.name = self.__name__ = self.__qualname__ = name  # progress bars and dask task names show it
        self.library = library
        self.errors = {int(code): str(meaning) for code, meaning in (errors or {}).items()}
        self._keep = keep  # what keeps the code alive: the CDLL, the ctypes or numba object
        self._numba = numba  # (python function, numba signature, token) to compile it again elsewhere, once
        self._call = signature.prototype()(address)
        self._file = _file_state(library) if library is not None else None

    def __call__(self, *args: Any) -> Any:
        """Call it on one element (through ctypes): the value, or :class:`~chunkmap.errors.CError`."""
        parameters = self.signature.parameters
        if len(args) != len(parameters):
            raise TypeError(f"{self.name} takes {len(parameters)} arguments ({self.signature.text}); got {len(args)}")
        converted = [argument(self.name, number, kind, value)
                     for number, (kind, value) in enumerate(zip(parameters, args))]
        if not self.signature.coded:
            return self._call(*converted)
        out = (ctypes.c_double if self.signature.result == CODE_DOUBLE else ctypes.c_int64)()
        code = self._call(*converted, ctypes.byref(out))
        if code:
            raise self.error(code)
        return out.value

    def error(self, code: int) -> CError:
        """The :class:`~chunkmap.errors.CError` of error ``code``."""
        return CError(self.name, int(code), self.errors.get(int(code)))

    def __repr__(self) -> str:
        return f"cfunc({self.name}, {self.signature.text!r})"

    def __reduce__(self):
        if self._numba is not None:
            return (_from_numba, (*self._numba, self.signature.text, self.errors))
        if self.library is None:
            raise NotPicklableError(
                f"{self!r} at {self.address:#x} is not in a shared library (a ctypes callback or JIT code), so a "
                f"worker process cannot find it; run it on scheduler='threads' or 'sync', or build it into a shared "
                f"library (or use a numba cfunc, which is compiled again in each worker)"
            )
        return (_from_library, (self.library, self.name, self.signature.text, self.errors, self._file))

    def __chunkmap_identity__(self) -> tuple:
        """What a checkpoint identifies it by: library file (its bytes), symbol, signature, error meanings."""
        from .checkpoint.identity import file_digest
        from .errors import IdentityError

        errors = sorted(self.errors.items())
        if self._numba is not None:
            return ("numba", self._numba[0], str(self._numba[1]), self.signature.text, errors)
        if self.library is None:
            raise IdentityError(
                f"checkpoint= cannot identify {self!r}: it is not in a shared library file (a ctypes callback or JIT "
                f"code), and its address means nothing to another run; name the run yourself: "
                f"checkpoint=chunkmap.Checkpoint(location, name='my-run-v1')"
            )
        return ("library", self.library, file_digest(self.library), self.name, self.signature.text, errors)


def cfunc(function: Any, signature: str | None = None, *, errors: Mapping[int, str] | None = None) -> CFunction:
    """A C function pointer as a :class:`CFunction`, which :func:`chunkmap.run` calls from C over each chunk.

    Parameters
    ----------
    function : ctypes function, cffi function pointer, numba ``cfunc`` or int
        The C function: ``ctypes.CDLL(path).name``, a ``CFUNCTYPE`` instance, ``lib.name`` of cffi,
        a ``@numba.cfunc``, or its address as an int.
    signature : str, optional
        Its C signature, e.g. ``"double(double, double)"`` or ``"int(double, double, int64*)"``
        (see :mod:`chunkmap.cfunc`). Optional when the pointer declares its own (a ctypes
        prototype with ``argtypes``, a cffi function, a numba cfunc), which it must then equal.
    errors : mapping of int to str, optional
        What each error code means (for ``result.failures`` messages), e.g. ``{1: "out of domain"}``.

    Raises
    ------
    SignatureError
        ``signature`` is not one of the supported forms, contradicts the pointer's own, or is
        missing for a pointer without one (a plain ``CDLL`` attribute, an int address).
    CPointerError
        ``function`` is not a C function pointer (or is NULL, or points to no executable code).
    OptionError
        ``errors`` is not a mapping of int codes.

    Examples
    --------
    >>> from chunkmap import stub
    >>> compute = cfunc(stub.library().slowlib_compute, "int(double, double, int64*)")
    >>> compute(0.5, 0.25), compute.library == stub.library_path()
    (750, True)
    """
    parsed = signature_of(function, signature)
    if errors is not None and not (isinstance(errors, Mapping) and all(isinstance(code, int) for code in errors)):
        raise OptionError(f"errors must map int error codes to what they mean, e.g. {{1: 'out of domain'}}; got "
                          f"{type(errors).__name__} {errors!r:.80}")
    numba = None
    kind = type(function).__module__ or ""
    if isinstance(function, int) and not isinstance(function, bool):
        address, keep = function, None
    elif isinstance(function, ctypes._CFuncPtr):
        address, keep = ctypes.cast(function, ctypes.c_void_p).value or 0, function
    elif kind.startswith("numba."):
        address, keep = int(getattr(function, "address", 0)), function
        numba = (function._pyfunc, function._sig, getattr(function, "_chunkmap_token", None) or uuid.uuid4().hex)
    elif kind.startswith("_cffi_backend"):
        import cffi

        address, keep = int(cffi.FFI().cast("uintptr_t", function)), function
    else:
        raise CPointerError(
            f"cfunc() takes a C function pointer (a ctypes function such as ctypes.CDLL(path).name, a cffi function "
            f"pointer, a numba cfunc, or an int address); got {type(function).__name__} {function!r:.80}; for a "
            f"Python function or a SWIG wrapper, pass it to chunkmap.run directly (a cffi function of API mode: "
            f"cfunc(ffi.addressof(lib, 'name')))"
        )
    if address <= 0 or not _executable(address):
        raise CPointerError(f"cfunc() needs the address of a C function; {function!r:.80} points to {address:#x}, "
                            f"which is {'NULL' if not address else 'not executable code in this process'}")
    where = _where(address) if numba is None else None
    library, name = where if where is not None else (None, _name(function, address))
    if library is not None:
        loaded = ctypes.CDLL(library)  # for an int address, what keeps its library loaded
        keep = loaded if keep is None else keep
        alias = getattr(function, "__name__", None)  # dladdr may name an alias: hypotf64 for hypot
        if isinstance(alias, str) and _address(loaded, alias) == address:
            name = alias
    return CFunction(address, parsed, name, library, errors, keep, numba)


def _address(library: ctypes.CDLL, name: str) -> int | None:
    try:
        return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _name(function: Any, address: int) -> str:
    for candidate in (getattr(getattr(function, "_pyfunc", None), "__name__", None), getattr(function, "__name__", None)):
        if isinstance(candidate, str) and candidate.isidentifier():
            return candidate
    return f"cfunction_{address:x}"


def _file_state(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


#: the functions unpickled in this process, by their pickled arguments (a worker gets one per chunk)
_FOUND: dict[tuple, CFunction] = {}


def _from_library(path: str, name: str, signature: str, errors: Mapping[int, str], state: tuple[int, int]) -> CFunction:
    """The function ``name`` of the library at ``path``, looked up again (in a worker process)."""
    key = (path, name, signature, tuple(sorted(errors.items())), tuple(state))
    found = _FOUND.get(key)
    if found is None or _file_state(path) != tuple(state):
        found = _FOUND[key] = _look_up(path, name, signature, errors, state)
    return found


def _look_up(path: str, name: str, signature: str, errors: Mapping[int, str], state: tuple[int, int]) -> CFunction:
    try:
        found = _file_state(path) == tuple(state)
        library = ctypes.CDLL(path)
        function = getattr(library, name)
    except (OSError, AttributeError) as exc:
        raise CPointerError(f"cannot find {name} of {path} again in this process ({exc}); the library must be "
                            f"at the same path on every worker") from None
    if not found:
        raise CPointerError(f"{path}, the library of {name}, changed (size or mtime) since the function was "
                            f"wrapped; rebuild it, restart the workers, and wrap it again")
    return cfunc(function, signature, errors=errors)


def _from_numba(pyfunc: Any, numba_signature: Any, token: str, signature: str, errors: Mapping[int, str]) -> CFunction:
    """A numba cfunc compiled again from its Python function (in a worker process, once per ``token``)."""
    key = ("numba", token, signature, tuple(sorted(errors.items())))
    found = _FOUND.get(key)
    if found is None:
        import numba

        compiled = numba.cfunc(numba_signature)(pyfunc)
        compiled._chunkmap_token = token  # pickled again from this process: the same function
        found = _FOUND[key] = cfunc(compiled, signature, errors=errors)
    return found


def run_to_end(func: CFunction, columns: tuple[np.ndarray, ...], skip: tuple[type[BaseException], ...],
               heartbeat: np.ndarray | None = None) -> tuple | None:
    """:func:`chunkmap.loop.run_to_end` for a :class:`CFunction`: the compiled loop over ``columns``.

    Returns ``(values, status, failures, error)`` as :func:`chunkmap.loop.run_to_end` does (the
    failures as :class:`~chunkmap.failures.FailureRecords`, without their inputs), or None when a
    column does not convert safely to its parameter's type (the caller then goes element by
    element through the Python call, which fails such elements as usual).
    """
    parameters = func.signature.parameters
    if len(columns) != len(parameters) or any(not np.can_cast(column.dtype, DTYPES[kind], "safe")
                                              or column.dtype.kind not in "biuf"
                                              for column, kind in zip(columns, parameters)):
        return None
    columns = tuple(np.ascontiguousarray(column, DTYPES[kind]) for column, kind in zip(columns, parameters))
    n = len(columns[0])
    values = np.empty(n, func.signature.dtype)
    status = np.empty(n, np.uint8)
    codes = np.empty(n if func.signature.coded else 0, np.int32)
    positions = np.empty(len(codes), np.int64)
    recorded = any(issubclass(CError, cls) for cls in skip)
    attempted, computed, failed = EXTENSION.active.call(func.address, func.signature.result, columns, values, status,
                                                        codes, positions, heartbeat, not recorded)
    status[attempted:] = 2
    values = values[:computed] if computed else np.empty(0, np.float64)
    if not failed:
        return values, status, [], None
    if not recorded:
        return values, status, [], (int(positions[0]), func.error(int(codes[0])))
    distinct, which = np.unique(codes[:failed], return_inverse=True)
    messages = np.array([str(func.error(code)) for code in distinct.tolist()], dtype=object)[which].tolist()
    return values, status, FailureRecords.from_columns(positions[:failed].copy(), ["CError"] * failed, messages), None
