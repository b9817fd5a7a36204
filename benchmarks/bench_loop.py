"""Per-element cost of chunkmap.loop against the best plain serial Python loop, one process.

    python -m benchmarks.bench_loop [--quick] [--n N] [--repeat R] [--json PATH]

Two float64 columns of N elements (2,000,000, or 100,000 with --quick; uniform in [0, 1),
so ~2.7 % of the slowlib calls raise InternalError), for three functions:

- ``slowlib``          -> ``chunkmap.stub.slowlib.slow_computation`` at cost 0 (SWIG -builtin,
                          returns int, raises InternalError);
- ``python function``  -> ``lambda a, b: a + b``;
- ``operator.add``     -> a builtin.

Contenders, each with ``skip=(slowlib.InternalError,)``, best of R runs (R=3, 2 with --quick):

- ``serial``   -> the best plain loop: ``for a, b in zip(x.tolist(), y.tolist()):
                  try: out.append(f(a, b)) except E: pass`` (the tolist() is timed too);
- ``python``   -> :func:`chunkmap.loop.python_loop` (the plain-Python twin
                  ``chunkmap._hotloop_py.loop``) into preallocated values/status;
- ``compiled`` -> :func:`chunkmap.loop.compiled_loop` (the C extension ``chunkmap._hotloop``),
                  the same;
- ``+heartbeat`` -> the compiled loop writing ``heartbeat[0] = i`` before every call.

Reported: ns per element and the speed-up over ``serial`` (serial time / contender time).
Then the GIL toll of threads: the compiled loop over ``slow_computation`` (holds the GIL) and
``slow_computation_nogil`` (releases it around each call) at cost 0 and 1 us, in one thread and in
two threads at once (each with its own N elements): calls per second in all.
Then C functions without Python (:func:`chunkmap.cfunc`): ns per element of the C loop
``chunkmap._cloop.call`` over ``slowlib_compute`` (the stub's C function, cost 0, error codes as
failures) and over libm's ``fmax`` (a C function that costs nothing: the loop's own toll), into
preallocated outputs, with the heartbeat; the whole kernel step (``evaluate_columns``: outputs
allocated, failure records made); the ctypes twin ``chunkmap._cloop_py`` (on n/20 elements); and
``evaluate_columns`` in 1 and 2 threads at once (the GIL is released once per chunk: M calls/s in all).
The issue-16 target is <= 10 ns per element (>= 100M elements/s per core) at cost 0.
All contenders must return the same values. Timings on a loaded machine are provisional:
the 1-minute load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from chunkmap import _cloop_py, stub
from chunkmap.cfunc import EXTENSION as CLOOP, cfunc
from chunkmap.errors import CError
from chunkmap.kernel import evaluate_columns
from chunkmap.loop import compiled_loop, python_loop
from chunkmap.stub import slowlib


def serial_loop(func: Callable, x: np.ndarray, y: np.ndarray, skip: tuple) -> list:
    """The best plain serial loop a user would write."""
    out: list[Any] = []
    append = out.append
    for a, b in zip(x.tolist(), y.tolist()):
        try:
            append(func(a, b))
        except skip:
            pass
    return out


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_one(name: str, func: Callable, dtype: type, x: np.ndarray, y: np.ndarray,
              repeat: int) -> dict[str, Any]:
    n = len(x)
    skip = (slowlib.InternalError,)

    def with_loop(loop, heartbeat=None):
        def run():
            values, status = np.empty(n, dtype), np.empty(n, np.uint8)
            ret = loop(func, (x, y), skip, values, status, [], 0, heartbeat)
            assert ret == (n, 0, None), ret
            return values[status == 0]

        return run

    row: dict[str, Any] = {"func": name, "n": n}
    t_serial, expected = best_of(repeat, lambda: serial_loop(func, x, y, skip))
    expected = np.array(expected, dtype=dtype)
    beat = np.zeros(1, np.int64)
    for key, run in [("python", with_loop(python_loop)),
                     ("compiled", with_loop(compiled_loop)),
                     ("heartbeat", with_loop(compiled_loop, beat))]:
        t, got = best_of(repeat, run)
        if not np.array_equal(got, expected):
            raise AssertionError(f"{key} loop disagrees with the serial loop on {name}")
        row[key] = t / n * 1e9
    row["serial"] = t_serial / n * 1e9
    for key in ("python", "compiled", "heartbeat"):
        row[f"x {key}"] = row["serial"] / row[key]
    return row


def rates_in_threads(func: Callable, x: np.ndarray, y: np.ndarray, skip: tuple) -> dict[int, float]:
    """Elements/s in all of ``evaluate_columns(func, [x, y])`` run by 1 and by 2 threads at once."""
    rates = {}
    for threads in (1, 2):
        workers = [threading.Thread(target=evaluate_columns, args=(func, [x, y], skip)) for _ in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates[threads] = threads * len(x) / (time.perf_counter() - started)
    return rates


def threads_toll(n: int) -> list[dict[str, Any]]:
    """Calls/s of the compiled loop in 1 and in 2 threads, GIL-holding and GIL-releasing functions."""
    rows = []
    x, y = np.random.default_rng(1).random(n), np.random.default_rng(2).random(n)
    for cost in (0, 1000):
        slowlib.set_cost_ns(cost)
        for func in (slowlib.slow_computation, slowlib.slow_computation_nogil):
            rates = rates_in_threads(func, x, y, (slowlib.InternalError,))
            rows.append({"cost_ns": cost, "func": func.__name__, "one": rates[1], "two": rates[2]})
    return rows


def cfunc_rows(x: np.ndarray, y: np.ndarray, repeat: int) -> list[dict[str, Any]]:
    """ns per element of C functions called from C (chunkmap.cfunc), at the stub's current cost (0)."""
    import ctypes
    import ctypes.util

    n = len(x)
    compute = stub.compute()
    fmax = cfunc(ctypes.CDLL(ctypes.util.find_library("m")).fmax, "double(double, double)")
    heartbeat = np.zeros(1, np.int64)
    expected = evaluate_columns(slowlib.slow_computation, [x, y], (slowlib.InternalError,))
    rows = []
    for label, func in [("slowlib_compute", compute), ("libm fmax", fmax)]:
        values, status = np.empty(n, func.signature.dtype), np.empty(n, np.uint8)
        codes, positions = np.empty(n, np.int32), np.empty(n, np.int64)
        row: dict[str, Any] = {"func": label, "n": n}
        for key, implementation, size in [("c loop", CLOOP.compiled, n), ("twin", _cloop_py, max(n // 20, 1))]:
            columns = (x[:size], y[:size])
            t, _ = best_of(repeat, lambda: implementation.call(func.address, func.signature.result, columns, values,
                                                                status, codes, positions, heartbeat, False))
            row[key] = t / size * 1e9
        t, evaluation = best_of(repeat, lambda: evaluate_columns(func, [x, y], (CError,)))
        if func is compute and not np.array_equal(evaluation.values, expected.values):
            raise AssertionError("the C loop over slowlib_compute disagrees with the SWIG wrapper's loop")
        row["kernel"] = t / n * 1e9
        rates = rates_in_threads(func, x, y, (CError,))
        row["one"], row["two"] = rates[1], rates[2]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 elements, 2 runs")
    parser.add_argument("--n", type=int, default=None, help="elements (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per contender")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    n = args.n or (100_000 if args.quick else 2_000_000)
    repeat = args.repeat or (2 if args.quick else 3)
    if compiled_loop is None:
        raise SystemExit("chunkmap._hotloop is not built: pip install -e . --no-deps")

    rng = np.random.default_rng(0)
    x, y = rng.random(n), rng.random(n)
    cost = slowlib.get_cost_ns()
    slowlib.set_cost_ns(0)
    try:
        rows = [
            bench_one("slowlib", slowlib.slow_computation, np.int64, x, y, repeat),
            bench_one("python function", lambda a, b: a + b, np.float64, x, y, repeat),
            bench_one("operator.add", operator.add, np.float64, x, y, repeat),
        ]
        direct = cfunc_rows(x, y, repeat) if CLOOP.compiled is not None else []
        toll = threads_toll(n // 4)  # leaves the cost at 1 us
    finally:
        slowlib.set_cost_ns(cost)

    load = os.getloadavg()[0]
    print(f"chunkmap.loop, {n:,} elements of two float64 columns, best of {repeat}; "
          f"ns per element (speed-up over the serial loop); load average {load:.2f} on "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    header = f"{'function':<16} {'serial':>8} {'python_loop':>18} {'compiled':>18} " \
             f"{'+heartbeat':>18}"
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[k]:8.1f} ({row['x ' + k]:4.2f}x)" for k in ("python", "compiled",
                                                                   "heartbeat")]
        print(f"{row['func']:<16} {row['serial']:8.1f} " + " ".join(f"{c:>18}" for c in cells))
    print(f"\nthreads: compiled loop, {n // 4:,} elements per thread, M calls/s in all")
    print(f"{'cost':>6} {'function':<24} {'1 thread':>9} {'2 threads':>10}")
    for row in toll:
        print(f"{row['cost_ns'] / 1000:>4g}us {row['func']:<24} {row['one'] / 1e6:9.2f} {row['two'] / 1e6:10.2f}")
    print(f"\nC functions without Python (chunkmap.cfunc), cost 0, {n:,} elements: ns per element; "
          f"M calls/s in 1 and 2 threads (evaluate_columns each)")
    print(f"{'function':<16} {'C loop':>8} {'kernel':>8} {'twin':>8} {'1 thread':>9} {'2 threads':>10}")
    for row in direct:
        print(f"{row['func']:<16} {row['c loop']:8.2f} {row['kernel']:8.2f} {row['twin']:8.1f} "
              f"{row['one'] / 1e6:9.1f} {row['two'] / 1e6:10.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": n, "repeat": repeat, "load": load, "rows": rows, "threads": toll, "cfunc": direct}, fh,
                      indent=1)
    return rows


if __name__ == "__main__":
    main()
