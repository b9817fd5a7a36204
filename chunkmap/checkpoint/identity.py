"""A run's identity: a digest of everything that determines its result, and nothing else.

Two calls of :func:`chunkmap.run` share a checkpoint exactly when their identities are equal.
The identity has five parts, each a digest, so that a rerun that does not match can say what
differs:

``function``
    A Python function by its code: bytecode, constants, names, defaults, closure values, and
    the functions and values it reads from its globals, recursively (nested code objects and
    helper functions of the user's own code included); not its line numbers, file name,
    comments or docstring, so "fix a typo above it and rerun" keeps the checkpoint. A bound
    method adds its class's methods and its instance's pickled state; a ``functools.partial``
    its arguments; a C function (SWIG, ``builtin_function_or_method``) the bytes of its
    extension module file, so a rebuilt library starts a fresh run; a :func:`chunkmap.cfunc` its
    library file's bytes, symbol and signature (never its address). Functions of installed
    packages (site-packages, the standard library) are named with the package's version rather
    than hashed. An object whose state cannot be pickled (a SWIG object, a lock) raises
    :class:`~chunkmap.errors.IdentityError`: name the run yourself with
    ``chunkmap.Checkpoint(location, name=...)``, which replaces the function and ``kwargs`` parts.
``arguments``
    ``kwargs``, by the same rules.
``options``
    ``skip`` (the classes' names), ``timeout``, an explicit ``chunks=`` and the names of
    ``outputs=`` (``outputs=2`` is ``outputs=("out0", "out1")``).
``inputs``
    The broadcast shape, each input's dtype and shape and its contents (hashed at memory speed);
    an ``.npy`` file input by its absolute path, size and modification time (not read twice).
``mask``
    The elements to compute, one bit each.

What is *not* part of it: the scheduler, the number of workers, ``progress``, the chunk layout
that ``chunks="auto"`` chose (it is stored with the run and reused), and state that ``func``
reaches other than through its code, globals and arguments (files it opens, a C library's own
global settings): give such runs a ``name=`` that changes with that state.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import struct
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..blocks import BlockSource
from ..errors import IdentityError
from .fingerprint import fingerprint
from ..npy import NpyReader
from ..system import is_installed_file

__all__ = ["Identity", "run_identity", "function_digest", "file_digest", "PARTS"]

#: the parts of an identity, in the order they are hashed and reported
PARTS = ("function", "arguments", "options", "inputs", "mask")
#: bytes hashed per step when fingerprinting a strided input (bounds its temporary copy)
HASH_BLOCK = 1 << 24
_LENGTH = struct.Struct("<Q")
#: code object attributes that hold what the code computes (not where it was written)
_CODE_FIELDS = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_code", "co_names",
                "co_varnames", "co_freevars", "co_cellvars", "co_exceptiontable")


@dataclass(frozen=True)
class Identity:
    """The digest of each part of a run (see the module docstring) and the run id they make."""

    parts: dict[str, str]

    @property
    def run_id(self) -> str:
        digest = hashlib.blake2b(digest_size=12)
        for part in PARTS:
            digest.update(f"{part}={self.parts[part]};".encode())
        return digest.hexdigest()

    def differences(self, other: Mapping[str, str]) -> list[str]:
        """The parts whose digests differ from ``other``'s (a manifest's record of them)."""
        return [part for part in PARTS if other.get(part) != self.parts[part]]


class _Digest:
    """A SHA-256 digest (~3x blake2b's speed where the CPU has SHA instructions: inputs are hashed
    at ~1.4 GB/s) fed with length-prefixed labelled fields, given as 32 hex digits."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def add(self, label: str, data: bytes | memoryview = b"") -> None:
        self.hash.update(_LENGTH.pack(len(label)) + label.encode() + _LENGTH.pack(len(data)))
        self.hash.update(data)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()[:32]


def run_identity(
    func: Callable[..., Any],
    source: Any,
    skip: tuple[type[BaseException], ...],
    kwargs: Mapping[str, Any] | None,
    timeout: float | None,
    chunks: int | str,
    name: str | None = None,
    outputs: tuple[str, ...] | None = None,
) -> Identity:
    """The :class:`Identity` of ``run(func, *inputs, ...)`` over a planned ``source``.

    Raises
    ------
    IdentityError
        ``func`` or ``kwargs`` hold an object that cannot be fingerprinted (and no ``name``).
    """
    parts: dict[str, str] = {}
    if name is not None:
        parts["function"] = _hex("name", name.encode())
        parts["arguments"] = _hex("name", b"")
    else:
        parts["function"] = function_digest(func)
        arguments = _Digest()
        _Fingerprint(arguments, "kwargs").value(sorted((kwargs or {}).items()), "kwargs")
        parts["arguments"] = arguments.hexdigest()
    skipped = ",".join(f"{cls.__module__}.{cls.__qualname__}" for cls in skip)
    options = f"skip={skipped};timeout={timeout!r};chunks={chunks!r}"
    if outputs is not None:  # so runs without outputs= keep the identity they had before the option existed
        options += f";outputs={outputs!r}"
    parts["options"] = _hex("options", options.encode())
    if isinstance(source, BlockSource):
        parts["inputs"], parts["mask"] = _box_parts(source)
        return Identity(parts)
    inputs = _Digest()
    inputs.add("shape", repr(source.shape).encode())
    for array in source.arrays:
        inputs.add("input", f"{array.dtype.str}{array.shape}".encode())
        if isinstance(array, NpyReader):  # not read twice: named by path, size and modification time
            status = os.stat(array.path)
            inputs.add("file", f"{os.path.abspath(array.path)}:{status.st_size}:{status.st_mtime_ns}".encode())
        else:
            _hash_array(inputs, array)
    parts["inputs"] = inputs.hexdigest()
    mask = _Digest()
    if source.valid is not None:
        mask.add("valid", str(source.valid.size).encode())
        _hash_array(mask, source.valid.bits)
    parts["mask"] = mask.hexdigest()
    return Identity(parts)


def _box_parts(source: BlockSource) -> tuple[str, str]:
    """The inputs and mask digests of a run over lazy inputs (:mod:`chunkmap.checkpoint.fingerprint`)."""
    digests = []
    for label, readers in (("input", source.readers), ("mask", source.masks)):
        digest = _Digest()
        digest.add("shape", repr(source.shape).encode())
        for number, reader in enumerate(readers, start=1):
            digest.add(label, f"{reader.dtype.str}{reader.axes}".encode())
            fingerprint(reader.data, digest.add, functools.partial(_hash_array, digest), f"{label} {number}")
        digests.append(digest)
    if source.mask_callable is not None:
        digests[1].add("callable", function_digest(source.mask_callable).encode())
    return digests[0].hexdigest(), digests[1].hexdigest()


def function_digest(func: Callable[..., Any]) -> str:
    """The digest of what ``func`` computes (see the module docstring).

    Examples
    --------
    >>> def f(x):
    ...     return x * 2
    >>> def g(x):  # another name, a comment, other lines: the same code
    ...     return x * 2
    >>> def h(x):
    ...     return x * 3
    >>> function_digest(f) == function_digest(g), function_digest(f) == function_digest(h)
    (True, False)
    """
    digest = _Digest()
    _Fingerprint(digest, "func").value(func, "func")
    return digest.hexdigest()


def _hex(label: str, data: bytes) -> str:
    digest = _Digest()
    digest.add(label, data)
    return digest.hexdigest()


def _hash_array(digest: _Digest, array: np.ndarray) -> None:
    if array.flags.c_contiguous:
        digest.add("data", memoryview(array.reshape(-1).view(np.uint8)))
        return
    step = max(1, HASH_BLOCK // max(array.itemsize, 1))
    flat = array.flat
    for start in range(0, array.size, step):
        digest.add("data", memoryview(np.ascontiguousarray(flat[start : start + step]).view(np.uint8)))


def _module_file(module: types.ModuleType | str | None) -> str | None:
    if not isinstance(module, types.ModuleType):
        module = sys.modules.get(module or "")
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if isinstance(path, str) else None


def _is_installed(module_name: str | None) -> bool:
    """Whether a module belongs to the standard library or an installed package (not the user's code).

    ``__main__`` (a script, a notebook) is always the user's.
    """
    if module_name in sys.builtin_module_names:
        return True
    return module_name != "__main__" and is_installed_file(_module_file(module_name))


def _package_version(module_name: str) -> str:
    top = sys.modules.get(module_name.partition(".")[0])
    version = getattr(top, "__version__", None)
    return str(version) if version is not None else sys.version.split()[0]


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str) -> str:
    """The sha256 of a file's bytes (a C library's), cached by path, size and mtime."""
    status = os.stat(path)
    return _file_digest(os.path.realpath(path), status.st_size, status.st_mtime_ns)


def _extension_digest(module: types.ModuleType | str | None) -> str:
    """The bytes of a compiled module's file (cached by path, size and mtime), or the Python version."""
    path = _module_file(module)
    if path is None or path.endswith((".py", ".pyc")):
        return sys.version.split()[0]
    return file_digest(path)


class _Fingerprint:
    """Feed a value's identity into a digest, recursively (see the module docstring's rules)."""

    def __init__(self, digest: _Digest, root: str) -> None:
        self.digest = digest
        self.root = root
        self.seen: set[int] = set()

    def value(self, obj: Any, where: str) -> None:
        add = self.digest.add
        if obj is None or isinstance(obj, (bool, int, float, complex, str)):
            add(type(obj).__name__, repr(obj).encode())
        elif isinstance(obj, (bytes, bytearray)):
            add("bytes", bytes(obj))
        elif isinstance(obj, (tuple, list)):
            add(type(obj).__name__, str(len(obj)).encode())
            for number, item in enumerate(obj):
                self.value(item, f"{where}[{number}]")
        elif isinstance(obj, dict):
            add("dict", str(len(obj)).encode())
            for key, item in obj.items():
                self.value(key, f"{where} key")
                self.value(item, f"{where}[{key!r}]")
        elif isinstance(obj, (set, frozenset)):
            add(type(obj).__name__, repr(sorted(_Sub(self, item, where) for item in obj)).encode())
        elif isinstance(obj, np.ndarray) and obj.dtype != object:
            add("ndarray", f"{obj.dtype.str}{obj.shape}".encode())
            _hash_array(self.digest, obj)
        elif isinstance(obj, np.generic):
            add("numpy", f"{obj.dtype.str}".encode() + obj.tobytes())
        elif id(obj) in self.seen:  # a function calling itself, mutually recursive helpers
            add("seen", getattr(obj, "__qualname__", type(obj).__qualname__).encode())
        else:
            self.seen.add(id(obj))
            self._composite(obj, where)

    def _composite(self, obj: Any, where: str) -> None:
        add = self.digest.add
        if isinstance(obj, types.ModuleType):
            add("module", obj.__name__.encode())
            add("build", (_package_version(obj.__name__) if _is_installed(obj.__name__)
                          else _extension_digest(obj)).encode())
        elif isinstance(obj, type):
            self._class(obj, where)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, where)
        elif isinstance(obj, types.MethodType):
            add("method", obj.__func__.__qualname__.encode())
            self.value(obj.__func__, where)
            self._instance(obj.__self__, f"{where}.__self__")
        elif isinstance(obj, functools.partial):
            add("partial")
            self.value(obj.func, f"{where}.func")
            self.value(obj.args, f"{where}.args")
            self.value(sorted(obj.keywords.items()), f"{where}.keywords")
        elif isinstance(obj, (types.BuiltinFunctionType, np.ufunc)):
            self._builtin(obj, where)
        elif isinstance(obj, types.CodeType):
            self._code(obj, where)
        elif hasattr(type(obj), "__chunkmap_identity__"):  # e.g. per_worker: its factory and arguments
            add("declared", type(obj).__qualname__.encode())
            self.value(obj.__chunkmap_identity__(), where)
        else:
            self._instance(obj, where)

    def _function(self, func: types.FunctionType, where: str) -> None:
        add = self.digest.add
        module = func.__module__ or "?"
        if is_installed_file(func.__code__.co_filename):  # a library's function: its name and version
            add("library function", f"{module}:{func.__qualname__}@{_package_version(module)}".encode())
            return
        add("function")
        code = func.__code__
        doc = func.__doc__
        self._code(code, where, skip_doc=doc is not None and code.co_consts[:1] == (doc,))
        self.value(func.__defaults__, f"{where} defaults")
        self.value(sorted((func.__kwdefaults__ or {}).items()), f"{where} keyword defaults")
        for name, cell in zip(code.co_freevars, func.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                add("empty cell", name.encode())
                continue
            add("cell", name.encode())
            self.value(contents, f"{where} closure variable {name!r}")
        referenced = func.__globals__
        for name in sorted(_global_names(code)):
            if name in referenced:
                add("global", name.encode())
                self.value(referenced[name], f"global {name!r} of {func.__qualname__}")

    def _code(self, code: types.CodeType, where: str, skip_doc: bool = False) -> None:
        add = self.digest.add
        for field in _CODE_FIELDS:
            add(field, repr(getattr(code, field, None)).encode() if field != "co_code" else code.co_code)
        for number, constant in enumerate(code.co_consts):
            if skip_doc and number == 0:
                self.value(None, where)  # where a function without a docstring has None
            elif isinstance(constant, types.CodeType):
                self._code(constant, where)
            else:
                self.value(constant, where)

    def _class(self, cls: type, where: str) -> None:
        add = self.digest.add
        add("class", f"{cls.__module__}:{cls.__qualname__}".encode())
        if _is_installed(cls.__module__):
            add("build", _package_version(cls.__module__).encode())
            return
        for base in cls.__mro__:
            if base is object or _is_installed(base.__module__):
                continue
            for name, member in sorted(vars(base).items()):
                member = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                if isinstance(member, types.FunctionType):
                    add("method", name.encode())
                    self.value(member, f"{where}.{name}")

    def _builtin(self, func: Any, where: str) -> None:
        owner = getattr(func, "__self__", None)
        module = getattr(func, "__module__", None)
        if owner is None or isinstance(owner, types.ModuleType):
            module = module or getattr(owner, "__name__", None)
            self.digest.add("builtin", f"{module}:{getattr(func, '__qualname__', func.__name__)}".encode())
            self.digest.add("build", _extension_digest(owner if owner is not None else module).encode())
        else:  # a C method bound to an object (a SWIG object's method): the object is part of it
            self.digest.add("builtin method", func.__qualname__.encode())
            self._instance(owner, f"{where}.__self__")

    def _instance(self, obj: Any, where: str) -> None:
        self.value(type(obj), where)
        if isinstance(obj, types.ModuleType):
            return
        self.digest.add("state")
        stream = _Stream(self.digest)  # the pickle goes into the digest as it is made, never held whole
        try:
            pickle.Pickler(stream, protocol=4).dump(obj)
        except Exception:
            try:
                import cloudpickle

                cloudpickle.CloudPickler(stream, protocol=4).dump(obj)
            except Exception as exc:
                raise IdentityError(
                    f"checkpoint= fingerprints what {self.root} computes, and {where} is a "
                    f"{type(obj).__module__}.{type(obj).__qualname__} whose state cannot be pickled "
                    f"({type(exc).__name__}: {exc}); name the run yourself instead: "
                    f"checkpoint=chunkmap.Checkpoint(location, name='my-run-v1') (change the name "
                    f"whenever what it computes changes)"
                ) from None


class _Stream:
    """A write-only file feeding a digest (what a pickler writes is hashed, not kept)."""

    def __init__(self, digest: _Digest) -> None:
        self.hash = digest.hash

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


class _Sub:
    """A set item's own digest, so that a set is hashed in an order that does not depend on hashing."""

    def __init__(self, parent: _Fingerprint, item: Any, where: str) -> None:
        digest = _Digest()
        fingerprint = _Fingerprint(digest, parent.root)
        fingerprint.seen = parent.seen
        fingerprint.value(item, f"{where} item")
        self.key = digest.hexdigest()

    def __lt__(self, other: _Sub) -> bool:
        return self.key < other.key

    def __repr__(self) -> str:
        return self.key


def _global_names(code: types.CodeType) -> set[str]:
    """Every name the code (and the code nested in it) loads from globals or attributes."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names
