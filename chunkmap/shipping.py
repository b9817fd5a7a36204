"""What a run sends to dask workers: its :class:`~chunkmap.kernel.Execution`, pickled once, with the user's own modules by value.

A dask worker unpickles a function by importing the module it was defined in. A notebook's
helper module, a script beside the notebook, a folder put on ``sys.path``: the client imports
them, the workers usually cannot, and dask would fail each task with a generic deserialization
error. :func:`ship` settles this on the client, before any work:

1. it pickles the execution with cloudpickle, noting every module the pickle refers to by name
   (what unpickling it will import);
2. it asks the workers whether they can import those modules (``importlib.util.find_spec``, by
   ``client.run``; an answer "yes" is remembered per worker address, so a run asks only about
   modules new to a worker; workers that join later are not asked);
3. a module some worker cannot import that is **your own Python source** (a ``.py`` file outside
   the standard library that no installed distribution provides) is pickled by value
   (cloudpickle's ``register_pickle_by_value``, for this pickle only), and the pickle is made
   again: functions pickled by value may refer to further modules of yours;
4. any other module missing on a worker (an installed package, a compiled extension, a module
   without a file) raises :class:`~chunkmap.errors.WorkerImportError`, naming the module, the
   workers and the fix: install it on the workers, or ``client.upload_file``.

Why this rule: your own modules then behave on a cluster as on local processes, with nothing to
do, and a module you edit is shipped as it is now (by value means the code and the module
globals it uses, as they are in this process). An installed package is not shipped: a compiled
extension (a SWIG library) cannot be, and a library shipped silently would hide that the workers'
environment differs from yours, so the error says what to install. Modules the workers import
themselves are never shipped.

The pickle travels as the bytes of a :class:`Shipped` object, scattered once: the scheduler never
unpickles it (it would need the same modules), and each worker unpickles it once per run.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import os
import pickle
import site
import sys
import sysconfig
import threading
import types
import uuid
from typing import Any

import cloudpickle

from .errors import WorkerImportError

__all__ = ["Shipped", "ship", "dumps_recording", "own_source", "missing_on_workers"]

#: per worker address, the modules it said it can import
_importable: dict[str, set[str]] = {}
_importable_lock = threading.Lock()
_registry_lock = threading.Lock()


class Shipped:
    """An object travelling as its pickle, unpickled where it is used: :meth:`load`, once per process."""

    def __init__(self, payload: bytes, token: str | None = None) -> None:
        self.payload = payload
        self.token = token or uuid.uuid4().hex
        self._loaded: Any = None

    def load(self) -> Any:
        """The object (unpickled on the first call in this process)."""
        if self._loaded is None:
            self._loaded = pickle.loads(self.payload)
        return self._loaded

    def __reduce__(self):
        return (Shipped, (self.payload, self.token))

    def __dask_tokenize__(self) -> str:
        return self.token

    def __repr__(self) -> str:
        return f"<Shipped {len(self.payload)} bytes>"


def ship(client: Any, obj: Any) -> Shipped:
    """``obj`` pickled for ``client``'s workers: the user's own modules they cannot import by value.

    Raises
    ------
    WorkerImportError
        A worker cannot import a module ``obj`` needs that chunkmap does not ship (see the module
        docstring).
    """
    by_value: set[str] = set()
    while True:
        payload, needed = dumps_recording(obj, by_value)
        missing = missing_on_workers(client, needed)
        if not missing:
            return Shipped(payload)
        shippable = {name for name in missing if own_source(sys.modules[name])}
        unshippable = sorted(set(missing) - shippable)
        if unshippable:
            raise _cannot_ship(unshippable[0], missing[unshippable[0]], needed[unshippable[0]])
        by_value |= shippable  # grows each round: needed never holds a module shipped by value


def dumps_recording(obj: Any, by_value: set[str] = frozenset()) -> tuple[bytes, dict[str, Any]]:
    """``obj`` pickled by cloudpickle, ``by_value`` modules by value; and the modules it refers to by name.

    The modules are those unpickling will import, each with the first object that refers to
    it (for messages). ``__main__``, modules missing from ``sys.modules`` and modules
    registered by value are left out: cloudpickle pickles their objects by value.

    Examples
    --------
    >>> import math
    >>> payload, modules = dumps_recording([math.sqrt, 2.0])
    >>> sorted(modules), pickle.loads(payload)[0](4.0)
    (['math'], 2.0)
    """
    buffer = io.BytesIO()
    pickler = _RecordingPickler(buffer)
    with _registry_lock:  # cloudpickle's registry is global: one registration at a time
        registered = [sys.modules[name] for name in sorted(by_value)
                      if name not in cloudpickle.list_registry_pickle_by_value()]
        for module in registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            pickler.dump(obj)
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)
        shipped = cloudpickle.list_registry_pickle_by_value() | by_value
    needed = {name: referrer for name, referrer in pickler.modules.items()
              if name != "__main__" and name in sys.modules and not _under(name, shipped)}
    return buffer.getvalue(), needed


class _RecordingPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, noting the module of every module, class and function it meets."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: dict[str, Any] = {}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            self.modules.setdefault(obj.__name__, obj)
        elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.setdefault(module, obj)
        return super().reducer_override(obj)


def missing_on_workers(client: Any, modules: dict[str, Any] | set[str]) -> dict[str, list[str]]:
    """Of ``modules``, those some of ``client``'s workers cannot import, each with those workers' addresses.

    Only modules a worker has not yet said it can import are asked about, in one ``client.run``.
    """
    workers = sorted(client.nthreads())
    with _importable_lock:
        unknown = sorted({name for name in modules for worker in workers
                          if name not in _importable.get(worker, ())})
    if unknown:
        try:
            answers = client.run(_missing_here, unknown, workers=workers)
        except Exception as exc:  # dask wraps the worker's error in a plain Exception
            raise _no_chunkmap(exc) from exc
        with _importable_lock:
            for worker, absent in answers.items():
                _importable.setdefault(worker, set()).update(set(unknown) - set(absent))
    with _importable_lock:
        missing = {name: [worker for worker in workers if name not in _importable.get(worker, ())]
                   for name in modules}
    return {name: where for name, where in missing.items() if where}


def _missing_here(names: list[str]) -> list[str]:
    """On a worker: the modules of ``names`` this process cannot import."""
    missing = []
    for name in names:
        try:
            found = name in sys.modules or importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package missing; a module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def own_source(module: types.ModuleType) -> bool:
    """Whether ``module`` is the user's own Python source: a ``.py`` file, not the standard library's, of no installed distribution.

    Examples
    --------
    >>> import json, numpy
    >>> own_source(json), own_source(numpy)
    (False, False)
    """
    top = module.__name__.partition(".")[0]
    file = getattr(module, "__file__", None)
    return (isinstance(file, str) and file.endswith(".py") and top not in sys.stdlib_module_names
            and not _in_site_packages(file) and top not in _distributions(tuple(sys.path)))


def _in_site_packages(file: str) -> bool:
    folders = {*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_path("purelib"),
               sysconfig.get_path("platlib")}
    path = os.path.abspath(file)
    return any(path.startswith(os.path.join(folder, "")) for folder in folders if folder)


@functools.lru_cache(maxsize=1)
def _distributions(path: tuple[str, ...]) -> dict[str, list[str]]:
    """The installed distributions by the top-level modules they provide (~0.3 s: kept while ``sys.path`` is)."""
    return importlib.metadata.packages_distributions()


def _under(name: str, packages: set[str]) -> bool:
    """Whether module ``name`` is one of ``packages`` or inside one."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def _cannot_ship(name: str, workers: list[str], referrer: Any) -> WorkerImportError:
    """The error for module ``name``, which ``workers`` cannot import and chunkmap does not ship."""
    file = getattr(sys.modules[name], "__file__", None)
    top = name.partition(".")[0]
    distributions = _distributions(tuple(sys.path)).get(top)
    upload = "or send its file with client.upload_file('path/to/module.py') (a .py, .zip or .egg file)"
    if distributions:
        version = importlib.metadata.version(distributions[0])
        why = f"it is installed here from {distributions[0]} {version}"
        fix = f"install it on the workers (`pip install {distributions[0]}=={version}` there), {upload}"
    elif top in sys.stdlib_module_names:
        why = f"it belongs to this Python's standard library ({file})"
        fix = "run the workers on the same Python version as this process"
    elif file is None:
        why, fix = "it has no file to send", "install it on the workers"
    elif not file.endswith(".py"):
        why = f"it is a compiled extension ({file}), whose code cannot be pickled"
        fix = "build or install it on the workers"
    else:
        why, fix = f"it is installed here ({file})", f"install it on the workers, {upload}"
    shown = ", ".join(workers[:3]) + (f" and {len(workers) - 3} more" if len(workers) > 3 else "")
    return WorkerImportError(
        f"the dask workers {shown} cannot import module {name!r}, which the run needs for "
        f"{_describe(referrer)}; chunkmap ships only your own .py modules by value, and {why}: {fix}",
        name=name,
    )


def _no_chunkmap(exc: Exception) -> WorkerImportError:
    """The error for workers that cannot run chunkmap's own check."""
    from . import __version__

    return WorkerImportError(
        f"the dask workers could not run chunkmap's check of the modules the run needs ({exc}); "
        f"expected chunkmap on every worker: install it there (chunkmap {__version__}, as here), or "
        f"start the workers from this environment",
        name="chunkmap",
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    kind = "class" if isinstance(obj, type) else "function"
    return f"{kind} {getattr(obj, '__qualname__', repr(obj))}"
