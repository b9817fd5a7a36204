"""What trust costs: checkpoints, crash isolation and timeouts, measured on the seed's workload.

    python -m benchmarks.bench_long_runs [--quick]
    python -m benchmarks.bench_long_runs --only checkpoint --baseline /tmp/before  # before/after

``--baseline`` takes another checkout of chunkmap with its extensions built in place
(``git worktree add /tmp/before COMMIT && cd /tmp/before && python setup.py build_ext --inplace``)
and measures the checkpoint overhead of both trees in the same run, interleaved.

- checkpoint overhead: the same run with and without ``checkpoint=`` (a directory), at cost 0 and
  1 us per call, and a rerun that resumes everything (reading and checking every record);
- crash isolation: one poisoned element in a chunk of 10,000 — worker restarts, elements
  re-evaluated, time against the same chunk without the poison;
- timeout: one hung element with ``timeout=1`` — time against the same run without it;
- steady throughput: the rate of the last 10% of a run's chunks against its first 10% (issue 6:
  at least 95%; the seed's user saw it degrade as its result lists grew).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import chunkmap
from chunkmap.cli.demo import make_inputs
from chunkmap.stub import set_cost
from chunkmap.kernel import Execution
from chunkmap.local.isolation import evaluate_isolated
from chunkmap.stub import slowlib
from chunkmap.local.pool import WorkerPool


def timed(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def checkpoint_overhead(size: int, repeat: int, cost_ns: int = 0) -> dict:
    """Median times of the same run without and with a checkpoint, and of a rerun resuming it all."""
    a1, a2 = make_inputs(size)
    mask = a1 <= -1e10
    set_cost(cost_ns)

    def plain():
        chunkmap.run(slowlib.slow_computation, a2, a1, mask=mask, skip=slowlib.InternalError)

    def checkpointed(folder):
        return chunkmap.run(slowlib.slow_computation, a2, a1, mask=mask, skip=slowlib.InternalError, checkpoint=folder)

    def fresh():
        with tempfile.TemporaryDirectory() as folder:
            checkpointed(folder)

    try:
        plain()  # start the worker pool
        without, with_checkpoint = timed(plain, repeat), timed(fresh, repeat)
        with tempfile.TemporaryDirectory() as folder:
            checkpointed(folder)
            resume = timed(lambda: checkpointed(folder), repeat)
    finally:
        set_cost(0)
    return {"elements": a1.size, "cost_ns": cost_ns, "without": without, "with": with_checkpoint,
            "ratio": with_checkpoint / without, "resume": resume}


def crash_isolation(length: int) -> dict:
    a = np.linspace(0.0, 1.0, length)
    b = np.full(length, 0.25)
    with WorkerPool(1) as pool:
        evaluate_isolated([a, b], Execution(slowlib.slow_computation, (slowlib.InternalError,)), pool)  # warm
        started = time.perf_counter()
        evaluate_isolated([a, b], Execution(slowlib.slow_computation, (slowlib.InternalError,)), pool)
        clean = time.perf_counter() - started
        a[length * 2 // 3] = slowlib.CRASH_VALUE
        restarts = pool.restarts
        started = time.perf_counter()
        evaluation = evaluate_isolated([a, b], Execution(slowlib.slow_computation, (slowlib.InternalError,)), pool)
        poisoned = time.perf_counter() - started
        restarts = pool.restarts - restarts
    crashes = [failure for failure in evaluation.failures if failure[1] == "SIGSEGV"]
    assert [position for position, _, _ in crashes] == [length * 2 // 3]
    return {"chunk": length, "restarts": restarts, "re_evaluated": length * 2 // 3, "clean": clean, "poisoned": poisoned}


def timeout_cost(size: int) -> dict:
    a1, a2 = make_inputs(size)
    chunkmap.run(slowlib.slow_computation, a2, a1, skip=slowlib.InternalError)  # warm
    started = time.perf_counter()
    chunkmap.run(slowlib.slow_computation, a2, a1, skip=slowlib.InternalError, timeout=1.0)
    clean = time.perf_counter() - started
    a2[size // 2, size // 2] = slowlib.HANG_VALUE
    started = time.perf_counter()
    result = chunkmap.run(slowlib.slow_computation, a2, a1, skip=slowlib.InternalError, timeout=1.0)
    hung = time.perf_counter() - started
    assert [f.kind for f in result.failures if f.kind == "timeout"] == ["timeout"]
    return {"elements": a1.size, "clean": clean, "hung": hung, "extra": hung - clean}


def steady_throughput(size: int, cost_ns: int) -> dict:
    """Each chunk's rate (its elements over the seconds its worker request took), first 10% against last 10%.

    The chunks are timed around :func:`chunkmap.local.isolation.evaluate_isolated` (request, evaluation
    and response of one chunk); the pilot's rounds are left out, the guided tail is in.
    """
    from chunkmap.local import isolation

    a1, a2 = make_inputs(size)
    set_cost(cost_ns)
    chunkmap.run(slowlib.slow_computation, a2[:10], a1[:10], skip=slowlib.InternalError)  # start the workers
    timings: list[tuple[int, float]] = []
    evaluate = isolation.evaluate_isolated

    def timed_evaluate(inputs, *args, **kwargs):
        started = time.perf_counter()
        evaluation = evaluate(inputs, *args, **kwargs)
        timings.append((len(evaluation.status), time.perf_counter() - started))
        return evaluation

    isolation.evaluate_isolated = timed_evaluate
    try:
        result = chunkmap.run(slowlib.slow_computation, a2, a1, mask=a1 <= -1e10, skip=slowlib.InternalError)
    finally:
        isolation.evaluate_isolated = evaluate
        set_cost(0)
    biggest = max(elements for elements, _ in timings)
    main_phase = timings[next(i for i, (elements, _) in enumerate(timings) if elements == biggest):]
    tenth = max(1, len(main_phase) // 10)

    def rate(chunks: list[tuple[int, float]]) -> float:
        return sum(elements for elements, _ in chunks) / sum(seconds for _, seconds in chunks)

    first, last = rate(main_phase[:tenth]), rate(main_phase[-tenth:])
    return {"elements": len(result.values) + len(result.failures), "cost_ns": cost_ns, "chunks": len(main_phase),
            "first": first, "last": last, "ratio": last / first}


def overhead_rows(overheads: list[dict], repeat: int, label: str = "") -> list[str]:
    return [f"| {label}checkpoint overhead, cost {o['cost_ns'] / 1000:g} us, {o['elements']:,} elements (median of "
            f"{repeat}) | {o['without']:.3f} s without, {o['with']:.3f} s with: ratio {o['ratio']:.2f}; a rerun "
            f"resuming everything {o['resume']:.3f} s |" for o in overheads]


def compare_with(baseline: str, size: int, repeat: int, rounds: int = 2) -> list[str]:
    """The checkpoint overheads of ``baseline`` (another checkout) and of this tree, interleaved."""
    trees = {"before": os.path.abspath(baseline), "after": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    rows = []
    for round_ in range(1, rounds + 1):
        for label, tree in trees.items():
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--json", "--size", str(size),
                                   "--repeat", str(repeat)], env={**os.environ, "PYTHONPATH": tree},
                                  capture_output=True, text=True, check=True, cwd=tree)
            rows += overhead_rows(json.loads(done.stdout), repeat, f"{label} (round {round_}): ")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition (for the tests)")
    parser.add_argument("--only", choices=["checkpoint"], help="measure the checkpoint overhead alone")
    parser.add_argument("--baseline", metavar="TREE", help="another checkout to compare the checkpoint overhead with")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one tree's overheads, for --baseline
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_cost(0)
    size, repeat = (300, 1) if args.quick else (2000, 5)
    size, repeat = args.size or size, args.repeat or repeat
    if args.json:
        print(json.dumps([checkpoint_overhead(size, repeat, cost_ns) for cost_ns in (0, 1000)]))
        return
    print("| measure | figure |")
    print("|---|---|")
    if args.baseline:
        print("\n".join(compare_with(args.baseline, size, repeat)))
    else:
        print("\n".join(overhead_rows([checkpoint_overhead(size, repeat, cost_ns) for cost_ns in (0, 1000)], repeat)))
    if args.only:
        return
    isolation = crash_isolation(10_000)
    hang = timeout_cost(100 if args.quick else 1000)
    steady = steady_throughput(300 if args.quick else 3000, 1000)
    print(f"| one poisoned element in a chunk of {isolation['chunk']:,} | {isolation['restarts']} worker restarts, "
          f"{isolation['re_evaluated']:,} elements evaluated twice; {isolation['poisoned']:.3f} s vs "
          f"{isolation['clean']:.3f} s clean |")
    print(f"| one hung element, timeout=1 s, {hang['elements']:,} elements | {hang['hung']:.2f} s vs "
          f"{hang['clean']:.2f} s clean (+{hang['extra']:.2f} s) |")
    print(f"| steady throughput, cost {steady['cost_ns'] / 1000:g} us, {steady['elements']:,} unmasked elements, "
          f"{steady['chunks']} chunks after the pilot | first 10% of chunks {steady['first']:,.0f} elements/s, "
          f"last 10% {steady['last']:,.0f}/s: last/first {steady['ratio']:.2f} |")


if __name__ == "__main__":
    main()
