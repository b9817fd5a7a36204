"""C signatures for :func:`chunkmap.cfunc`: parsed from text, or read from the pointer's own declaration.

The supported set (one result, 1 to :data:`MAX_PARAMETERS` ``double``/``int64`` parameters, an
optional ``double*``/``int64*`` output after them when the result is an ``int`` error code) is
documented in :mod:`chunkmap.cfunc`. :func:`signature_of` checks a given signature against the one
a ctypes prototype, a cffi function or a numba cfunc declares: calling a function through the wrong
signature reads the wrong registers, a silent wrong result.

>>> parse_signature("int ( double,long long * )")
Signature(text='int(double, int64*)', result=4, parameters=('double',))
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SignatureError

__all__ = ["DOUBLE", "INT64", "INT", "CODE_DOUBLE", "CODE_INT64", "DTYPES", "MAX_PARAMETERS", "Signature",
           "parse_signature", "signature_of", "argument"]

# Result kinds of chunkmap._cloop.call, in its order.
DOUBLE, INT64, INT, CODE_DOUBLE, CODE_INT64 = range(5)
_TYPES = {"double": "double", "float64": "double", "int64": "int64", "int64_t": "int64", "long long": "int64",
          "long": "int64", "int": "int", "int32": "int", "int32_t": "int"}
DTYPES = {"double": np.dtype(np.float64), "int64": np.dtype(np.int64)}
_CTYPES = {"double": ctypes.c_double, "int64": ctypes.c_int64, "int": ctypes.c_int}
_FORMS = ("double(double, double)", "int64(double, int64)", "int(double, double, double*)",
          "int(double, double, int64*)")
MAX_PARAMETERS = 4


@dataclass(frozen=True)
class Signature:
    """A parsed signature: ``text`` (canonical), the result kind, the parameter types (``double``/``int64``)."""

    text: str
    result: int
    parameters: tuple[str, ...]

    @property
    def coded(self) -> bool:
        """Whether the function returns an error code and its value through a pointer."""
        return self.result in (CODE_DOUBLE, CODE_INT64)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the values."""
        return DTYPES["double" if self.result in (DOUBLE, CODE_DOUBLE) else "int64"]

    def prototype(self) -> Any:
        """The ctypes function type of this signature."""
        arguments = [_CTYPES[name] for name in self.parameters]
        if self.coded:
            pointed = ctypes.c_double if self.result == CODE_DOUBLE else ctypes.c_int64
            return ctypes.CFUNCTYPE(ctypes.c_int, *arguments, ctypes.POINTER(pointed))
        return ctypes.CFUNCTYPE(_CTYPES[("double", "int64", "int")[self.result]], *arguments)


def parse_signature(text: Any) -> Signature:
    """The :class:`Signature` of ``text`` such as ``"int(double, double, int64*)"``.

    """
    if not isinstance(text, str):
        raise SignatureError(f"signature must be a str such as 'double(double, double)'; got {type(text).__name__} "
                             f"{text!r:.80}")
    found = re.fullmatch(r"\s*([a-z_0-9 ]+?)\s*\((.*)\)\s*", text)
    names = [re.sub(r"\s+", " ", part.strip()) for part in found.group(2).split(",")] if found else []
    result = _TYPES.get(found.group(1)) if found else None
    pointer = names[-1].endswith("*") if names else False
    inputs = [_TYPES.get(name) for name in (names[:-1] if pointer else names)]
    pointed = _TYPES.get(names[-1].rstrip("* ")) if pointer else None
    if (result is None or not 1 <= len(inputs) <= MAX_PARAMETERS or any(kind not in DTYPES for kind in inputs)
            or (pointer and (result != "int" or pointed not in DTYPES))):
        raise SignatureError(
            f"cannot use the signature {text!r}: expected a result (double, int64 or int) and 1 to {MAX_PARAMETERS} "
            f"double or int64 parameters, optionally followed by a double* or int64* output when the result is an "
            f"int error code (0 = ok); for example {', '.join(map(repr, _FORMS))}"
        )
    canonical = f"{result}({', '.join(inputs + ([pointed + '*'] if pointer else []))})"
    kind = (CODE_DOUBLE if pointed == "double" else CODE_INT64) if pointer else ("double", "int64", "int").index(result)
    return Signature(canonical, kind, tuple(inputs))


def signature_of(function: Any, signature: str | None) -> Signature:
    """``signature`` parsed, checked against the one ``function`` declares (if any), or that one."""
    declared = _declared(function)
    if signature is None and declared is None:
        raise SignatureError(f"cfunc() needs the signature of {function!r:.80}, which does not declare one: e.g. "
                             f"cfunc(pointer, 'double(double, double)')")
    parsed = parse_signature(signature if signature is not None else declared)
    if declared is not None and parse_signature(declared).text != parsed.text:
        raise SignatureError(f"the signature {signature!r} contradicts the one {function!r:.80} declares, "
                             f"{declared!r}; give the signature the C function really has")
    return parsed


def _declared(function: Any) -> str | None:
    """The signature a ctypes prototype, a cffi function or a numba cfunc declares, as text; None if none."""
    module = type(function).__module__ or ""
    if isinstance(function, ctypes._CFuncPtr):
        if getattr(function, "argtypes", None) is None:
            return None  # a plain CDLL attribute: nothing declared
        names = [_ctype(t) for t in (function.restype, *function.argtypes)]
    elif module.startswith("numba.") and hasattr(function, "_sig"):
        names = [str(t) for t in (function._sig.return_type, *function._sig.args)]
    elif module.startswith("_cffi_backend"):
        import cffi

        ctype = cffi.FFI().typeof(function)
        ctype = ctype.item if ctype.kind == "pointer" else ctype
        if ctype.kind != "function":
            return None  # not a function pointer: refused below
        names = [t.cname for t in (ctype.result, *ctype.args)]
    else:
        return None
    return f"{names[0]}({', '.join(names[1:])})"


def _ctype(ctype: Any) -> str:
    """A ctypes type as a signature's type name (``double``, ``int64``, ``int``, ``double*``...)."""
    code = getattr(ctype, "_type_", None)
    if isinstance(code, type):
        return _ctype(code) + "*"
    size = ctypes.sizeof(ctype) if code is not None else 0
    return {("d", 8): "double", ("q", 8): "int64", ("l", 8): "int64", ("i", 4): "int"}.get((code, size), repr(ctype))


def argument(name: str, number: int, kind: str, value: Any) -> Any:
    """``value`` as parameter ``number`` of ``kind``, with the C loop's conversions (TypeError otherwise)."""
    if kind == "double" and isinstance(value, (float, int)):
        return float(value)
    if kind == "int64" and isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise OverflowError(f"{name}'s parameter {number} is int64; got {value}, outside its range")
        return int(value)
    raise TypeError(f"{name}'s parameter {number} is {kind}; got {type(value).__name__} {value!r:.40}, which does "
                    f"not convert to it without loss (convert the input array first)")
