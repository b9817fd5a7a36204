"""chunkmap.run against its peers on the seed's workload, in one run.

    python -m benchmarks.bench_run [--quick] [--costs 0,1000,100000] [--only NAME,...]
                                   [--json PATH] [--plot PATH] [--memory-scenario] [--timeout S]

Workload (the seed's): two float64 (n, n) arrays ``a1``, ``a2`` uniform in [0, 1), ~10% of ``a1``
set to -1e11 and masked (``a1 <= -1e10``); ``slowlib.slow_computation(a2[x, y], a1[x, y])`` for
every other element (a SWIG-built C function holding the GIL, with a busy-wait of the given cost
per call), ``InternalError`` (~2.7% of calls) skipped; outputs ``xs, ys, values`` (int64) in C
order. Sizes: cost 0 -> n=3000 (9M elements), 1 us -> n=2000 (4M), 100 us -> n=200 (40k);
other costs -> about 4 s of serial work; ``--quick`` divides n by 10 (elements by 100).

Each contender (:mod:`benchmarks.run_contenders`) runs in its own fresh process
(:mod:`benchmarks.run_child`) that loads the inputs from .npy files into memory. Timing rule,
the same for everyone: the *cold* wall time covers the whole call including any pool or cluster
start-up (the process itself, imports and loading the inputs are outside it); a parallel
contender is then called a second time in the same process (*warm*), reusing whatever it
naturally keeps (its pool, loky's executor, the LocalCluster). Ratios use the cold time.

Memory: the driver samples the contender's whole process tree every 20 ms from a background
thread (:mod:`benchmarks.run_memory`: PSS, shared memory counted once); reported is the peak
during the calls minus the tree's baseline once the inputs are loaded.

Every output is compared (length, dtype, sha1 of xs, ys and values) with the stub's documented
rule evaluated with numpy (:func:`benchmarks.run_contenders.reference`); "agrees" means
identical, and so identical to the serial loops, which are contenders too.

``--memory-scenario``: n=8192 (64M elements, two 512 MB inputs) at cost 0, one (cold) call per
contender, each killed and reported as "timeout" after ``--timeout`` seconds (default 600); with
``--quick``, n=819.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from benchmarks import run_report
from benchmarks.run_child import digest
from benchmarks.run_contenders import ALIASES, CONTENDERS, WORKERS, reference
from benchmarks.run_memory import TreeSampler
from chunkmap.cli.demo import make_inputs
from chunkmap.stub import slowlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_N = {0: 3000, 1000: 2000, 100000: 200}
MEMORY_N = 8192
MASKED_FRACTION = 0.10


def size_for(cost_ns: int, quick: bool) -> int:
    """Side n of the (n, n) inputs for a per-call cost."""
    if cost_ns in FULL_N:
        n = FULL_N[cost_ns]
    else:  # about 4 s of serial work at ~300 ns of overhead per element, at most 9M elements
        n = int(np.sqrt(min(9e6, 4e9 / (cost_ns + 300))))
    return max(4, n // 10) if quick else n


def run_one(name: str, cost_ns: int, paths: tuple[str, str], timeout: float, warm: bool,
            workdir: str, memory: bool = True) -> dict:
    """Run one contender in a fresh process; return its record (times, memory unless not ``memory``, digests)."""
    env = dict(os.environ, SLOWLIB_COST_NS=str(cost_ns), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "benchmarks.run_child", name, str(cost_ns), *paths,
           "--workers", str(WORKERS)] + ([] if warm else ["--no-warm"])
    err_path = os.path.join(workdir, "stderr.txt")
    rec: dict = {"contender": name, "status": "ok", "load_before": os.getloadavg()[0]}
    started = time.perf_counter()
    with open(err_path, "w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
        events: queue.Queue = queue.Queue()

        def reader() -> None:
            for line in proc.stdout:
                try:
                    events.put(json.loads(line))
                except ValueError:
                    pass
            events.put(None)

        threading.Thread(target=reader, daemon=True).start()
        sampler = TreeSampler(proc.pid)
        baseline = None
        result = None
        deadline = started + timeout
        try:
            while True:
                try:
                    ev = events.get(timeout=max(0.01, deadline - time.perf_counter()))
                except queue.Empty:
                    rec["status"] = "timeout"
                    break
                if ev is None:
                    break
                kind = ev["event"]
                if kind == "ready":
                    if memory:
                        baseline = sampler.baseline()
                        sampler.start()
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                elif kind == "start" and memory:
                    sampler.set_phase(ev["phase"])
                elif kind == "end" and memory:
                    sampler.set_phase(None)
                elif kind == "result":
                    result = ev
        finally:
            if sampler._thread.is_alive():
                sampler.stop()
            try:
                proc.wait(timeout=30 if rec["status"] == "ok" else 0.1)
            except subprocess.TimeoutExpired:
                pass
            try:  # the contender's process group: its pools, nannies and workers too
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        err.seek(0)
        stderr = err.read()
    rec["load_after"] = os.getloadavg()[0]
    rec["elapsed_total"] = time.perf_counter() - started
    if rec["status"] == "ok" and (result is None or proc.returncode != 0):
        rec["status"] = "error"
    if rec["status"] != "ok":
        rec["stderr_tail"] = stderr[-3000:]
    if result is not None:
        rec["wall_cold"] = result["wall_cold"]
        rec["wall_warm"] = result.get("wall_warm")
        rec["digest"] = result["digest"]
        rec["digest_warm"] = result.get("digest_warm")
    if baseline is not None:
        rec["mem_baseline_MB"] = baseline / 2**20
        peaks = sampler.peaks
        if peaks:
            rec["mem_peak_MB"] = max(peaks.values()) / 2**20
            rec["mem_peak_delta_MB"] = (max(peaks.values()) - baseline) / 2**20
            rec["mem_peak_cold_delta_MB"] = (peaks.get("cold", baseline) - baseline) / 2**20
        rec["mem_samples"] = sampler.samples
        rec["max_processes"] = sampler.max_procs
    return rec


def run_cost(cost_ns: int, n: int, names: list[str], args, tmp: str) -> dict:
    a1, a2 = make_inputs(n, masked_fraction=MASKED_FRACTION)
    paths = (os.path.join(tmp, "a1.npy"), os.path.join(tmp, "a2.npy"))
    np.save(paths[0], a1)
    np.save(paths[1], a2)
    calls = int(np.count_nonzero(~(a1 <= -1e10)))
    limits = loop_limits(a1, a2, cost_ns, calls)
    ref = reference(a1, a2)
    ref_digest = digest(ref)
    computed = int(ref[2].size)
    inputs_MB = (a1.nbytes + a2.nbytes) / 2**20
    outputs_MB = sum(x.nbytes for x in ref) / 2**20
    del a1, a2, ref
    gc.collect()
    print(f"\n# cost {cost_ns} ns: n={n} ({n * n:,} elements, {calls:,} calls, {computed:,} computed)",
          file=sys.stderr, flush=True)
    rows = []
    for name in names:
        rec = run_one(name, cost_ns, paths, args.timeout, not args.no_warm, tmp, memory=not args.no_memory)
        rec["agrees"] = rec.get("digest") == ref_digest
        if rec.get("digest_warm") is not None:
            rec["agrees"] = rec["agrees"] and rec["digest_warm"] == ref_digest
        rows.append(rec)
        print(f"  {name:28s} {rec['status']:7s} cold {rec.get('wall_cold', float('nan')):8.3f} s  "
              f"warm {rec.get('wall_warm') or float('nan'):8.3f} s  "
              f"mem +{rec.get('mem_peak_delta_MB', float('nan')):8.1f} MB  agrees={rec['agrees']}  "
              f"load {rec['load_after']:.2f}", file=sys.stderr, flush=True)
        if rec["status"] == "error":
            print(rec["stderr_tail"], file=sys.stderr)
    for p in paths:
        os.unlink(p)
    return {"cost_ns": cost_ns, "n": n, "elements": n * n, "calls": calls, "computed": computed,
            "inputs_MB": inputs_MB, "outputs_MB": outputs_MB, "reference": ref_digest, "rows": rows, **limits}


#: elements of the inputs the limit is timed on: at most this many, and about LIMIT_SECONDS of calls
LIMIT_SAMPLE, LIMIT_SECONDS = 1_000_000, 0.5


def loop_limits(a1: np.ndarray, a2: np.ndarray, cost_ns: int, calls: int) -> dict:
    """The physical limit of the workload on ``WORKERS`` cores, timed here in this run.

    ``limit_s``: chunkmap's compiled loop calling the SWIG function (``slowlib.slow_computation``,
    no transfer, no planning) per call on a sample of the unmasked elements, times the calls,
    over ``WORKERS``; ``climit_s``: the same for the C loop calling ``slowlib_compute`` through
    :func:`chunkmap.cfunc` (no Python per element). Each is the best of three timings.
    """
    from chunkmap import stub
    from chunkmap.errors import CError
    from chunkmap.kernel import evaluate_columns
    from benchmarks.run_contenders import set_cost

    set_cost(cost_ns)
    valid = ~(a1 <= -1e10)
    size = min(LIMIT_SAMPLE, calls, max(1000, int(LIMIT_SECONDS / max(cost_ns * 1e-9, 1e-7))))
    columns = [np.ascontiguousarray(a2[valid][:size]), np.ascontiguousarray(a1[valid][:size])]
    per_call = {}
    for key, func, skip in (("limit_s", slowlib.slow_computation, slowlib.InternalError),
                            ("climit_s", stub.compute(), CError)):
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            evaluate_columns(func, columns, (skip,))
            best = min(best, time.perf_counter() - started)
        per_call[key] = best / size
    print(f"  limit: compiled loop {per_call['limit_s'] * 1e9:.1f} ns/call, C loop (cfunc) "
          f"{per_call['climit_s'] * 1e9:.1f} ns/call, on {size:,} elements", file=sys.stderr, flush=True)
    return {key: value * calls / WORKERS for key, value in per_call.items()} | {
        "limit_ns_per_call": per_call["limit_s"] * 1e9, "climit_ns_per_call": per_call["climit_s"] * 1e9}


def machine() -> dict:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    import psutil

    return {"cpu": model, "cores": os.cpu_count(), "ram_GB": psutil.virtual_memory().total / 2**30,
            "python": platform.python_version(), "numpy": np.__version__}


def git_state() -> str:
    """The commit measured, with "+uncommitted chunkmap/" when the package differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "chunkmap"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" + uncommitted chunkmap/ changes" if dirty else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="elements / 100 (n / 10)")
    ap.add_argument("--costs", default="0,1000,100000", help="per-call costs in ns, comma-separated")
    ap.add_argument("--only", default="", help="contenders (names or aliases: "
                    + ",".join(ALIASES) + "), comma-separated")
    ap.add_argument("--json", help="write every figure to this JSON file")
    ap.add_argument("--plot", help="write the throughput plot (PNG) here")
    ap.add_argument("--memory-scenario", action="store_true",
                    help="n=8192 (two 512 MB inputs) at cost 0 instead of --costs")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per contender (default 600 with --memory-scenario, else 1800)")
    ap.add_argument("--no-warm", action="store_true", help="skip the second (warm) call")
    ap.add_argument("--no-memory", action="store_true",
                    help="times only: no memory sampler (reading a process's PSS walks its page "
                         "tables and holds its memory map's lock, which slows a busy tree by up to 5%%)")
    args = ap.parse_args(argv)
    if args.memory_scenario:
        args.no_warm = True  # one call each: the scenario is about the peak of a single run
    if args.timeout is None:
        args.timeout = 600.0 if args.memory_scenario else 1800.0

    names = list(CONTENDERS)
    if args.only:
        names = []
        for item in args.only.split(","):
            item = item.strip()
            name = ALIASES.get(item, item)
            if name not in CONTENDERS:
                ap.error(f"unknown contender {item!r}; known: {', '.join(ALIASES)} "
                         f"or the full names {', '.join(CONTENDERS)}")
            names.append(name)

    if args.memory_scenario:
        plan = [(0, MEMORY_N // 10 if args.quick else MEMORY_N)]
    else:
        costs = [int(float(c)) for c in args.costs.split(",") if c.strip()]
        plan = [(c, size_for(c, args.quick)) for c in costs]

    report = {
        "command": "python -m benchmarks.bench_run " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "memory_scenario": args.memory_scenario,
        "machine": machine(),
        "git": git_state(),
        "load_start": os.getloadavg(),
        "workers": WORKERS,
        "costs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
        for cost_ns, n in plan:
            report["costs"].append(run_cost(cost_ns, n, names, args, tmp))
    report["load_end"] = os.getloadavg()
    run_report.add_ratios(report)
    print(run_report.markdown(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    if args.plot and not args.memory_scenario:
        run_report.plot(report, args.plot)
    ok = all(r["status"] in ("ok", "timeout") and (r["status"] == "timeout" or r["agrees"])
             for c in report["costs"] for r in c["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
