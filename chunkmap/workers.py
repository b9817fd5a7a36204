"""What every process that calls ``func`` gets: a count, a setup, per-worker objects, recycling.

Standard library only. ``run(..., workers=...)`` takes an int (how many local worker processes
or threads) or a :class:`Workers`. A :class:`Setup` runs once in every process that will call
``func``, before its first call: in each worker process (again in every replacement), and in the
calling process at the start of each ``sync`` or ``threads`` run; a run with another setup (or
none) gets fresh worker processes, so no state of an earlier setup leaks into its calls.
:func:`per_worker` builds the function itself in each process, for objects that cannot be
pickled (SWIG handles, bound methods of SWIG objects, open files). Failures of either raise
:class:`~chunkmap.errors.SetupError`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Callable

from .errors import OptionError, SetupError

__all__ = ["Workers", "Setup", "PerWorker", "per_worker", "run_setup_once", "this_process", "mark_worker_process",
           "parse_bytes", "modules_to_preload", "underlying"]

#: per-worker functions kept built in one process (the most recently used ones)
BUILT_KEPT = 8


@dataclass(frozen=True)
class Setup:
    """``func(*args, **kwargs)``, run once per process; ``key`` tells equal setups apart from others."""

    func: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    key: str = ""

    @classmethod
    def of(cls, setup: Any) -> Setup | None:
        """The ``setup=`` option: a callable, ``(callable, args)`` or ``(callable, args, kwargs)``."""
        if setup is None or isinstance(setup, Setup):
            return setup
        parts = setup if isinstance(setup, tuple) else (setup,)
        if not (1 <= len(parts) <= 3 and callable(parts[0]) and (len(parts) < 2 or isinstance(parts[1], tuple))
                and (len(parts) < 3 or isinstance(parts[2], dict))):
            raise OptionError(
                f"setup must be a callable, (callable, args) or (callable, args, kwargs) with args a "
                f"tuple and kwargs a dict, e.g. setup=(init_library, (date,)); got {setup!r:.100}"
            )
        func, args, kwargs = parts + ((), {})[len(parts) - 1:]
        return cls(func, args, kwargs, _content_key((func, args, kwargs)))

    @property
    def name(self) -> str:
        return _name(self.func)

    def run(self, where: str) -> None:
        """Call the setup here. Raises :class:`SetupError` naming ``where``."""
        try:
            self.func(*self.args, **self.kwargs)
        except Exception as exc:
            raise SetupError.of(f"setup {self.name}", where, exc) from exc


#: the keys of the setups run in this process
_done: set[str] = set()
_lock = threading.Lock()


def run_setup_once(setup: Setup | None) -> None:
    """In a worker process, before its calls: run ``setup`` unless this process already has.

    Raises
    ------
    SetupError
        The setup raised.
    """
    if setup is not None and setup.key not in _done:
        with _lock:
            if setup.key not in _done:
                setup.run(this_process())
                _done.add(setup.key)


_process = {"name": "the calling process"}


def this_process() -> str:
    """What error messages call this process: 'the calling process', or 'worker process 1234 on host'."""
    return _process["name"]


def mark_worker_process() -> None:
    """Called by a worker process when it starts (after a fork too: its pid is new)."""
    _process["name"] = f"worker process {os.getpid()} on {socket.gethostname()}"


class PerWorker:
    """A stand-in for ``func``: ``factory(*args, **kwargs)`` builds the real function once per process.

    Made by :func:`per_worker`. It pickles as its factory and arguments, so it reaches worker
    processes when the function it builds could not. Calling it calls the built function (built
    here on first use).
    """

    def __init__(self, factory: Callable[..., Callable[..., Any]], args: tuple, kwargs: dict,
                 key: str | None = None) -> None:
        self.factory = factory
        self.args = args
        self.kwargs = kwargs
        self.key = key or uuid.uuid4().hex

    def build(self) -> Callable[..., Any]:
        """The function for this process, built on first use (thread-safe).

        Raises
        ------
        SetupError
            The factory raised, or returned something that is not callable.
        """
        with _lock:
            built = _built.get(self.key)
            if built is None:
                built = self._make()
                _built[self.key] = built
                while len(_built) > BUILT_KEPT:
                    _built.popitem(last=False)
            _built.move_to_end(self.key)
        return built

    def _make(self) -> Callable[..., Any]:
        where = this_process()
        try:
            built = self.factory(*self.args, **self.kwargs)
        except Exception as exc:
            raise SetupError.of(f"the per_worker factory {_name(self.factory)}", where, exc) from exc
        if not callable(built):
            raise SetupError(
                f"the per_worker factory {_name(self.factory)} returned {type(built).__name__} {built!r:.80} "
                f"in {where}; expected the function to call on every element, e.g. "
                f"per_worker(lambda: Model(2.0).predict)"
            )
        return built

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.build()(*args, **kwargs)

    def __reduce__(self):
        return (PerWorker, (self.factory, self.args, self.kwargs, self.key))

    def __chunkmap_identity__(self) -> tuple:
        """What the checkpoint identity counts: the factory and its arguments (not the key)."""
        return (self.factory, self.args, sorted(self.kwargs.items()))

    def __repr__(self) -> str:
        return f"per_worker({_name(self.factory)}, ...)"


_built: OrderedDict[str, Callable[..., Any]] = OrderedDict()


def per_worker(factory: Callable[..., Callable[..., Any]], *args: Any, **kwargs: Any) -> PerWorker:
    """A function built in each worker process by ``factory(*args, **kwargs)``, for unpicklable objects.

    Use it where ``func`` holds something that cannot be pickled, such as a method of a SWIG
    object: ``factory`` (and its arguments) must pickle, the function it returns need not.

    Examples
    --------
    >>> import numpy as np, chunkmap
    >>> from chunkmap.stub import slowlib
    >>> predict = chunkmap.per_worker(lambda scale: slowlib.Model(scale).predict, 2.0)
    >>> chunkmap.run(predict, np.array([1.0, 2.0]), np.array([3.0, 4.0]), scheduler="sync").values.tolist()
    [8000.0, 12000.0]
    """
    if not callable(factory):
        raise OptionError(f"per_worker needs a callable factory first; got {type(factory).__name__} {factory!r:.80}")
    return PerWorker(factory, args, kwargs)


@dataclass(frozen=True)
class Workers:
    """How many processes (or threads) call ``func``, and what they do besides.

    Parameters
    ----------
    count : int, optional
        Local worker processes (``processes``) or threads (``threads``). Default: dask's
        ``num_workers`` setting when set, else the CPUs this process may use. On a cluster each
        dask worker's pool follows its thread count (start workers with ``--nthreads``).
    setup : callable, (callable, args) or (callable, args, kwargs), optional
        Called once in every process that will call ``func``, before its first call: each
        worker process (again in every replacement), each worker process of every dask
        worker, and the calling process at the start of a ``sync`` or ``threads`` run. If it
        raises, the run stops with :class:`~chunkmap.errors.SetupError`.
    max_calls : int, optional
        Replace a worker process after that many calls (for C libraries that leak); the
        replacement runs ``setup`` again. Nothing is lost or computed twice.
    max_memory : int or str, optional
        Replace a worker process whose resident memory exceeds this many bytes (``"2 GiB"``,
        ``"500 MB"`` too), checked at least once per second while it computes and after each
        request. A worker over the limit between requests is replaced gently; one over it
        during a request is killed, and the elements of that request it had not returned are
        computed again on a fresh worker (none lost, none counted twice). An element that alone
        takes a fresh worker over the limit is recorded as a ``"crash"`` failure of type
        ``"MemoryLimit"``.
    """

    count: int | None = None
    setup: Any = None
    max_calls: int | None = None
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("count", "max_calls"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, Integral) and not isinstance(value, bool) and value > 0):
                raise OptionError(f"Workers({name}=...) must be a positive int or None; got {value!r}")
        object.__setattr__(self, "setup", Setup.of(self.setup))
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", parse_bytes(self.max_memory))

    @classmethod
    def of(cls, workers: Any) -> Workers:
        """The ``workers=`` option of :func:`chunkmap.run`: None, an int, or a Workers."""
        if workers is None:
            return cls()
        if isinstance(workers, Workers):
            return workers
        if isinstance(workers, Integral) and not isinstance(workers, bool):
            return cls(count=int(workers))
        raise OptionError(
            f"workers must be a positive int (how many local processes or threads) or "
            f"chunkmap.Workers(count=, setup=, max_calls=, max_memory=); got {type(workers).__name__} "
            f"{workers!r:.80}"
        )


#: the units :func:`parse_bytes` reads, in bytes
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(size: Any) -> int:
    """A positive number of bytes, from an int or a string such as ``"2 GiB"`` or ``"500MB"``.

    Examples
    --------
    >>> parse_bytes("2 GiB"), parse_bytes("1.5kb"), parse_bytes(4096)
    (2147483648, 1500, 4096)
    """
    if isinstance(size, Integral) and not isinstance(size, bool) and size > 0:
        return int(size)
    if isinstance(size, str):
        text = size.strip().lower()
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
        unit = text[len(number):].strip()
        try:
            value = float(number) * UNITS[unit]
        except (ValueError, KeyError):
            value = 0
        if value >= 1:
            return int(value)
    raise OptionError(
        f"max_memory must be a positive number of bytes, or a string such as '2 GiB' or '500 MB' "
        f"(units {', '.join(unit for unit in UNITS if unit)}); got {size!r}"
    )


def underlying(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function a stand-in names: through ``functools.partial`` and :class:`PerWorker` (its factory)."""
    while isinstance(func, (functools.partial, PerWorker)):
        func = func.func if isinstance(func, functools.partial) else func.factory
    return func


def modules_to_preload(func: Callable[..., Any]) -> tuple[str, ...]:
    """The module of ``func`` (or of a per-worker factory) when it is worth importing before workers fork.

    Compiled extensions and installed packages (a SWIG library, QuantLib) are: their import is
    slow, and every worker and replacement then starts with it done. The user's own ``.py``
    modules are not: they are cheap to import, may be edited during a session, and may start
    threads at import, which a fork would not copy.

    Examples
    --------
    >>> from chunkmap.stub import slowlib
    >>> modules_to_preload(slowlib.slow_computation), modules_to_preload(lambda x: x)
    (('chunkmap.stub._slowlib',), ())
    """
    import sys

    from .system import is_installed_file

    func = func.factory if isinstance(func, PerWorker) else func
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__module__", None) or (type(owner).__module__ if owner is not None else None)
    module = sys.modules.get(name or "")
    path = getattr(module, "__file__", None)
    if name in (None, "__main__", "builtins") or not isinstance(path, str):
        return ()
    return (name,) if not path.endswith(".py") or is_installed_file(path) else ()


def _content_key(value: Any) -> str:
    """A digest of ``value``'s pickle: equal setups share it (so each runs once per process)."""
    import cloudpickle

    try:
        data = cloudpickle.dumps(value)
    except Exception:  # checked, with a clear error, before a run sends it anywhere
        return uuid.uuid4().hex
    return hashlib.sha256(data).hexdigest()


def _name(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name
