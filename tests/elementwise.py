"""Scalar functions the tests run, and the check of a Result against the serial loop (chunkmap.testing's).

conftest.py registers this module for pickling by value, so worker processes (spawned pools,
real `dask worker` processes) receive these functions without importing the test tree.
"""

from __future__ import annotations

import math

from chunkmap import testing


class Boom(Exception):
    """The exception the test functions raise on their 'bad' inputs."""


def add_or_boom(a, b):
    """a + b, raising Boom for about one element in eleven (a deterministic rule)."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        raise TypeError(f"expected Python scalars, got {type(a).__name__}, {type(b).__name__}")
    if math.floor(a * 1000) % 11 == 0:
        raise Boom(f"bad input {a!r}")
    return a + b


def int_or_boom(*args):
    """Sum of integer inputs, raising Boom when it is a multiple of 5."""
    total = sum(args)
    if total % 5 == 0:
        raise Boom(f"multiple of five: {total}")
    return total


def always_boom(*args):
    raise Boom("always")


def scaled(a, b, scale=1.0, offset=0.0):
    return a * scale + b + offset


def key_error_at_three(a):
    if a == 3:
        raise KeyError("three")
    return a


def assert_matches_reference(result, func, arrays, mask=None, skip=(), kwargs=None):
    """:func:`chunkmap.testing.assert_matches_reference`, the inputs given as one list."""
    testing.assert_matches_reference(result, func, *arrays, mask=mask, skip=skip, kwargs=kwargs)


def exit_in_worker(code):
    """Unpickled in a chunkmap worker process, exit at once; anywhere else, become ``abs``."""
    import os
    import sys

    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if getattr(spec, "name", "") in ("chunkmap.local.child", "chunkmap.local.template"):  # spawned or forked
        os._exit(code)
    return abs


class ExitsInWorker:
    """A callable that cannot be unpickled in a worker process: the worker exits with code 3."""

    def __call__(self, x):
        return abs(x)

    def __reduce__(self):
        return (exit_in_worker, (3,))


def parent_pid(x):
    """The process id of the parent of the process the call runs in (a worker's is its pool's owner).

    A worker forked from its pool's template (the worker's parent) gives the template's parent.
    """
    import os
    import sys

    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if getattr(spec, "name", "") == "chunkmap.local.template":
        with open(f"/proc/{os.getppid()}/stat") as fh:
            return int(fh.read().rpartition(")")[2].split()[1])
    return os.getppid()


def thread_id(x):
    """The identity of the thread the call runs in."""
    import threading

    return threading.get_ident()


def stub_cost(x):
    """The stub's per-call cost in the process the call runs in (what a setup may have set)."""
    from chunkmap.stub import slowlib

    return slowlib.get_cost_ns()


def pid_and_cost(x):
    """``pid * 1000 + cost``: which process ran the call, and what its setup set."""
    import os

    from chunkmap.stub import slowlib

    return os.getpid() * 1000 + slowlib.get_cost_ns()


def cost_or_crash(x):
    """Segfault (the stub's crash value) where ``x < 0``; elsewhere the stub's cost here."""
    from chunkmap.stub import slowlib

    if x < 0:
        slowlib.slow_computation(slowlib.CRASH_VALUE, 0.0)
    return slowlib.get_cost_ns()


def raises_setup_error(*args):
    """A setup that fails."""
    raise RuntimeError("licence server unreachable")


def interrupts(x):
    """Raise KeyboardInterrupt on the element 3, as a user's function may."""
    if x == 3:
        raise KeyboardInterrupt
    return x


def exits(x):
    """Call sys.exit(4) on the element 3."""
    import sys

    if x == 3:
        sys.exit(4)
    return x


def returns_a_swig_object(x):
    """A value that cannot be pickled (a SWIG object) where ``x == 2``; elsewhere ``x``."""
    from chunkmap.stub import slowlib

    return slowlib.Model(x) if x == 2 else x


def model_predict(scale):
    """The bound method of a SWIG object: cannot be pickled itself (a per_worker factory)."""
    from chunkmap.stub import slowlib

    return slowlib.Model(scale).predict


def pid_after_a_while(x):
    """The process id, after 10 ms (calls overlap on every worker)."""
    import os
    import time

    time.sleep(0.01)
    return os.getpid()


def leak_and_pid(x):
    """Keep 30 MB for good in the calling process (a leaking C library), wait 0.2 s; the process id."""
    import os
    import sys
    import time

    sys.__dict__.setdefault("_chunkmap_test_leak", []).append(b"x" * 30_000_000)
    time.sleep(0.2)
    return os.getpid()


def hog_at_five(x):
    """At ``x == 5`` hold 400 MB for 1.5 s (an element too big for max_memory); elsewhere ``x``."""
    import time

    if x == 5:
        held = b"x" * 400_000_000
        time.sleep(1.5)
        del held
    return x


def started_at(chunk, tag):
    """When a chunk task started (on a cluster: the order the scheduler hands chunks out)."""
    import time

    started = time.perf_counter()
    time.sleep(0.005)
    return started, chunk.index


def called_at(x):
    """When the call ran, in nanoseconds of the system's monotonic clock (shared by all processes)."""
    import time

    return float(time.monotonic_ns())
