"""One contender in a fresh process: ``python -m benchmarks.run_child`` (started by bench_run).

    python -m benchmarks.run_child NAME COST_NS A1.npy A2.npy [--workers 2] [--no-warm]

Protocol (one JSON object per line on the original stdout; the contender's own prints go to
stderr): ``{"event": "ready"}`` once the inputs are loaded (np.load, in memory) and the
contender's libraries imported; the driver takes its memory baseline and answers ``go`` on
stdin; then ``start``/``end`` events around the cold call (``open()`` + first call: pool
start-up included) and the warm call (a second call on the same inputs), and finally
``{"event": "result", ...}`` with the wall times and a digest of each output array.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import os
import sys
import time

import numpy as np

PRELOAD = {
    "dask.bag (seed recipe)": ["dask.bag"],
    "joblib (loky)": ["joblib"],
    "mpire": ["mpire"],
    "dask.array map_blocks": ["dask.array"],
    "distributed LocalCluster": ["distributed"],
    "chunkmap": ["chunkmap"],
    "chunkmap threads+nogil": ["chunkmap"],
    "chunkmap cfunc": ["chunkmap"],
}


def digest(out) -> dict:
    """Length, dtype and sha1 of each of xs, ys, values."""
    d = {}
    for key, arr in zip(("xs", "ys", "values"), out):
        arr = np.asarray(arr)
        d[key] = {
            "len": int(arr.size),
            "dtype": str(arr.dtype),
            "sha1": hashlib.sha1(np.ascontiguousarray(arr).view(np.uint8).data).hexdigest(),
        }
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("cost_ns", type=int)
    ap.add_argument("a1")
    ap.add_argument("a2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-warm", action="store_true")
    args = ap.parse_args(argv)

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the contender prints goes to stderr
    sys.stdout = sys.stderr

    def send(event: str, **kw) -> None:
        proto.write(json.dumps({"event": event, "t": time.perf_counter(), **kw}) + "\n")
        proto.flush()

    from benchmarks.run_contenders import CONTENDERS, set_cost

    set_cost(args.cost_ns)  # the environment too, so every pool started later inherits it
    for mod in PRELOAD.get(args.name, []):
        importlib.import_module(mod)
    a1 = np.load(args.a1)
    a2 = np.load(args.a2)
    contender = CONTENDERS[args.name](args.cost_ns, args.workers)
    gc.collect()
    send("ready", pid=os.getpid())
    if sys.stdin.readline().strip() != "go":
        return 2

    def timed(phase: str, call) -> tuple[float, dict]:
        """Wall time of ``call()`` between the phase's start and end events, and its output's digest."""
        send("start", phase=phase)
        t0 = time.perf_counter()
        out = call()
        t1 = time.perf_counter()
        send("end", phase=phase)
        return t1 - t0, digest(out)

    def first_call():
        contender.open()  # pool or cluster start-up is part of the cold call
        return contender(a1, a2)

    result: dict = {"name": args.name}
    result["wall_cold"], result["digest"] = timed("cold", first_call)
    gc.collect()
    if contender.parallel and not args.no_warm:
        result["wall_warm"], result["digest_warm"] = timed("warm", lambda: contender(a1, a2))
    contender.close()
    send("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
