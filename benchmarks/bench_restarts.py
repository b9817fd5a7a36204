"""What a worker restart costs (issue 13): workers forked from a template process, or fresh interpreters.

    python -m benchmarks.bench_restarts [--quick]
    python -m benchmarks.bench_restarts --baseline /tmp/before [--segfault-baseline]

``--baseline`` takes another checkout of chunkmap with its extensions built in place (e.g.
``git archive COMMIT | tar -x -C /tmp/before``, then ``python setup.py build_ext --inplace``
there) and measures both trees in the same run, in interleaved rounds, each measurement in a
fresh process:

- restart cost: a pool of one warm worker; the time from killing the worker to its replacement
  answering a one-element request (median of 20 kills per round);
- cold start: the first ``chunkmap.run`` in a fresh interpreter, 100,000 elements at cost 0 on
  the default scheduler (local processes): the call itself, and the whole process from its start
  to its exit (the interpreter, imports and making the inputs included);
- 5% segfaults: ``chunkmap.run`` on processes over 10,000 elements of which 500 are
  ``slowlib.CRASH_VALUE`` (a real SIGSEGV each), the pool warm. Each crash costs two restarts
  (the chunk's worker, then the element's confirmation). The baseline's is measured only with
  ``--segfault-baseline`` (it took 369 s before issue 13).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
TREE = os.path.dirname(os.path.dirname(HERE))


def restart_cost(repeat: int) -> dict:
    """Seconds from killing a warm worker to its replacement answering a one-element request."""
    import numpy as np

    from chunkmap.local.pool import WorkerPool

    with WorkerPool(1) as pool:
        evaluate = _evaluator(pool)
        one = [np.full(1, 0.5), np.full(1, 0.25)]
        evaluate(one)  # the first worker is up
        times = []
        for _ in range(repeat):
            worker = pool.acquire()
            started = time.perf_counter()
            worker.kill()
            pool.release(pool.replace(worker))
            evaluate(one)
            times.append(time.perf_counter() - started)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _evaluator(pool):
    """``evaluate(columns)`` on ``pool`` with the stub, whichever signature this tree's evaluate_isolated has."""
    import inspect

    from chunkmap.local.isolation import evaluate_isolated
    from chunkmap.stub import slowlib

    func, skip = slowlib.slow_computation, (slowlib.InternalError,)
    if "execution" in inspect.signature(evaluate_isolated).parameters:
        from chunkmap.kernel import Execution

        execution = Execution(func, skip)
        return lambda columns: evaluate_isolated(columns, execution, pool)
    return lambda columns: evaluate_isolated(columns, func, skip, None, pool)  # before issue 13


def cold_start(elements: int) -> dict:
    """The first run in this (fresh) process: seconds to import and make the inputs, then the call."""
    started = time.perf_counter()
    import numpy as np

    import chunkmap
    from chunkmap.stub import slowlib

    rng = np.random.default_rng(0)
    a, b = rng.random(elements), rng.random(elements)
    ready = time.perf_counter()
    result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError)
    assert len(result.values) + len(result.failures) == elements
    return {"imports": ready - started, "run": time.perf_counter() - ready}


def segfault_run(elements: int, crashes: int) -> dict:
    """``chunkmap.run`` over ``elements`` of which ``crashes`` segfault, on a warm pool of processes."""
    import numpy as np

    import chunkmap
    from chunkmap.local import pool as local_pool
    from chunkmap.stub import slowlib

    rng = np.random.default_rng(5)
    a, b = rng.random(elements), rng.random(elements)
    a[rng.choice(elements, crashes, replace=False)] = slowlib.CRASH_VALUE
    chunkmap.run(slowlib.slow_computation, b, b, skip=slowlib.InternalError, scheduler="processes")  # warm
    restarts = local_pool._shared["pool"].restarts
    started = time.perf_counter()
    result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, scheduler="processes")
    seconds = time.perf_counter() - started
    crashed = sum(failure.kind == "crash" for failure in result.failures)
    assert crashed == crashes, f"{crashed} crashes recorded, {crashes} expected"
    return {"seconds": seconds, "restarts": local_pool._shared["pool"].restarts - restarts}


MEASURES = {"restart": restart_cost, "cold": cold_start, "segfault": segfault_run}


def measure(tree: str, name: str, *args: int) -> dict:
    """One measurement in a fresh process importing chunkmap from ``tree``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, HERE, "--measure", name, *map(str, args)], cwd=tree,
                          env={**os.environ, "PYTHONPATH": tree, "SLOWLIB_COST_NS": "0"},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} in {tree} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.splitlines()[-1])
    if not figures.pop("chunkmap").startswith(tree):
        raise RuntimeError(f"{name} did not import chunkmap from {tree}")
    return {**figures, "process": time.perf_counter() - started}


def median_of(rounds: list[dict], key: str) -> float:
    return statistics.median(figures[key] for figures in rounds)


def report(trees: dict[str, str], repeat: int, elements: int, rounds: int, segfaults: dict[str, tuple[int, int]]) -> None:
    restarts: dict[str, list[dict]] = {label: [] for label in trees}
    colds: dict[str, list[dict]] = {label: [] for label in trees}
    for round_ in range(rounds):
        order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]  # neither tree always goes first
        for label in order:
            restarts[label].append(measure(trees[label], "restart", repeat))
            colds[label].append(measure(trees[label], "cold", elements))
    crashes = {label: measure(trees[label], "segfault", *size) for label, size in segfaults.items()}
    labels = list(trees)
    print(f"| measure | {' | '.join(labels)} |" + (" after/before |" if len(labels) == 2 else ""))
    print("|---|" + "---|" * (len(labels) + (len(labels) == 2)))

    def row(title: str, values: dict[str, float], unit: str, scale: float = 1.0) -> None:
        cells = " | ".join(f"{values[label] * scale:.{1 if unit == 'ms' else 2}f} {unit}" if label in values else "-"
                           for label in labels)
        ratio = (f" {values['after'] / values['before']:.3f} |" if len(labels) == 2 and "before" in values
                 and "after" in values else (" - |" if len(labels) == 2 else ""))
        print(f"| {title} | {cells} |{ratio}")

    row(f"restart cost: kill -> the replacement answers (median of {repeat} kills, median of {rounds} rounds)",
        {label: median_of(restarts[label], "median") for label in labels}, "ms", 1000)
    row(f"cold start: the first run's call, {elements:,} elements at cost 0 (median of {rounds})",
        {label: median_of(colds[label], "run") for label in labels}, "s")
    row("cold start: the whole process (interpreter, imports, inputs, run, exit)",
        {label: median_of(colds[label], "process") for label in labels}, "s")
    for label, (size, poisoned) in segfaults.items():
        print(f"| {label}: {size:,} elements, {poisoned} of them segfaulting, warm pool | "
              f"{crashes[label]['seconds']:.2f} s, {crashes[label]['restarts']} worker restarts |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (for the tests)")
    parser.add_argument("--baseline", metavar="TREE", help="another checkout to measure in the same run")
    parser.add_argument("--segfault-baseline", action="store_true", help="also the baseline's 5%% segfault run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of restart cost and cold start")
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)  # one measurement, in a fresh process
    args = parser.parse_args(argv)
    if args.measure:
        name, *numbers = args.measure
        figures = MEASURES[name](*map(int, numbers))
        import chunkmap

        print(json.dumps({**figures, "chunkmap": chunkmap.__file__}))
        return
    trees = {"after": TREE}
    if args.baseline:
        trees = {"before": os.path.abspath(args.baseline), **trees}
    if args.quick:
        report(trees, 3, 10_000, 1, {"after": (1_000, 20)})
        return
    segfaults = {label: (10_000, 500) for label in trees if label == "after" or args.segfault_baseline}
    report(trees, 20, 100_000, args.rounds, segfaults)


if __name__ == "__main__":
    main()
