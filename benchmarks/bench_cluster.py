"""chunkmap on a dask.distributed cluster against raw dask submissions of the same work (issue 16).

    python -m benchmarks.bench_cluster [--quick] [--workers 8] [--elements 16000] [--passes 3]
                                       [--sleep-ms 1] [--json PATH]

Workload: :func:`sleepy` (``time.sleep(0.001)``, then ``2 * x + 1``) over ``--elements`` float64
elements, on a ``LocalCluster(n_workers=W, threads_per_worker=1)``: the function sleeps, so the
machine's two cores are not the limit and W workers can overlap W calls. Each pass starts a fresh
cluster and times, in this order:

- ``chunkmap cold``: the first ``chunkmap.run`` on the fresh cluster (each dask worker starts its
  own process pool; the workers' interpreters and imports are outside it, dask's own start-up);
- ``chunkmap warm``: the same call again on the same cluster;
- ``client.map 64 chunks``: the input cut into 64 numpy slices, ``client.map(chunk_loop, slices)``
  and ``client.gather`` (the loop over a slice runs in the dask worker's thread);
- ``dask.bag map_partitions``: ``db.from_sequence(values, npartitions=64).map_partitions(...)``
  computed on the cluster;
- ``ideal``: ``N * t_call / W`` with ``t_call`` the mean of a serial loop of calls timed in this
  process in the same pass.

Reported: the median over passes of each contender's wall time, its ratio to the ideal
(efficiency = ideal / wall) and to the raw ``client.map``, and how many dask workers started a
chunkmap pool during the call (8 cold; a warm run starts none unless chunkmap's or the user's
code changed on disk since, :mod:`chunkmap.local.freshness`). Every contender's values are compared with
the serial loop's (``agrees``). ``--quick``: 2 workers, 400 elements, one pass (a few seconds).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np

#: seconds slept per call (``--sleep-ms`` sets it in the workers through the argument)
SLEEP = 0.001
#: chunks of the raw dask contenders
RAW_CHUNKS = 64


def sleepy(x: float, seconds: float = SLEEP) -> float:
    """The benchmark's function: sleep ``seconds``, then ``2 * x + 1``."""
    time.sleep(seconds)
    return 2.0 * x + 1.0


def chunk_loop(values: Any, seconds: float = SLEEP) -> np.ndarray:
    """:func:`sleepy` over a slice, the raw contenders' task."""
    return np.array([sleepy(float(x), seconds) for x in values], dtype=np.float64)


def pool_identity() -> int | None:
    """On a dask worker: the identity of chunkmap's process pool there (None before its first chunk)."""
    from chunkmap.local import pool

    shared = pool._shared["pool"]
    return None if shared is None else id(shared)


def serial(values: np.ndarray, seconds: float) -> tuple[np.ndarray, float]:
    """The reference loop's values, and its seconds per call."""
    started = time.perf_counter()
    out = chunk_loop(values, seconds)
    return out, (time.perf_counter() - started) / max(len(values), 1)


def contenders(client: Any, values: np.ndarray, seconds: float) -> dict[str, Callable[[], np.ndarray]]:
    """Each contender as a call returning its values in element order (run in this order)."""
    import dask.bag as db

    import chunkmap

    def run_chunkmap() -> np.ndarray:
        result = chunkmap.run(sleepy, values, kwargs={"seconds": seconds}, client=client, progress=False)
        return result.to_dense()

    def raw_map() -> np.ndarray:
        futures = client.map(chunk_loop, np.array_split(values, RAW_CHUNKS), seconds=seconds, pure=False)
        return np.concatenate(client.gather(futures))

    def raw_bag() -> np.ndarray:
        bag = db.from_sequence(values.tolist(), npartitions=RAW_CHUNKS)
        parts = bag.map_partitions(chunk_loop, seconds).to_delayed()
        return np.concatenate(client.compute(parts, sync=True))

    return {"chunkmap cold": run_chunkmap, "chunkmap warm": run_chunkmap,
            f"client.map {RAW_CHUNKS} chunks": raw_map, f"dask.bag map_partitions {RAW_CHUNKS}": raw_bag}


def one_pass(workers: int, elements: int, seconds: float) -> dict:
    """A fresh cluster: every contender timed once, the ideal, and agreement with the serial loop."""
    from distributed import Client, LocalCluster

    values = np.random.default_rng(0).random(elements)
    rows: dict[str, dict] = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(workers)
        for name, call in contenders(client, values, seconds).items():
            before = client.run(pool_identity)
            started = time.perf_counter()
            out = call()
            rows[name] = {"wall": time.perf_counter() - started, "out": out}
            after = client.run(pool_identity)
            rows[name]["pools_started"] = sum(after[w] != before.get(w) for w in after)
    reference, per_call = serial(values[: max(100, elements // 50)], seconds)  # t_call on a quiet client
    expected = 2.0 * values + 1.0
    assert np.array_equal(reference, expected[: len(reference)])
    for row in rows.values():
        out = row.pop("out")
        row["agrees"] = bool(out.shape == expected.shape and np.array_equal(out, expected))
    rows["ideal"] = {"wall": elements * per_call / workers, "agrees": True}
    return {"rows": rows, "t_call": per_call}


def report(passes: list[dict], workers: int, elements: int) -> dict:
    """Medians over passes, ratios to the ideal and to the raw ``client.map``."""
    names = list(passes[0]["rows"])
    raw = f"client.map {RAW_CHUNKS} chunks"
    median = {name: statistics.median(p["rows"][name]["wall"] for p in passes) for name in names}
    rows = [{"contender": name, "wall": median[name], "walls": [p["rows"][name]["wall"] for p in passes],
             "efficiency": median["ideal"] / median[name], "x_raw_map": median[name] / median[raw],
             "pools_started": max(p["rows"][name].get("pools_started", 0) for p in passes),
             "agrees": all(p["rows"][name]["agrees"] for p in passes)} for name in names]
    return {"workers": workers, "elements": elements, "passes": len(passes),
            "t_call": statistics.median(p["t_call"] for p in passes), "rows": rows,
            "machine": platform.node(), "python": platform.python_version()}


def print_table(summary: dict) -> None:
    print(f"{summary['elements']} elements, {summary['workers']} workers of 1 thread, "
          f"t_call {summary['t_call'] * 1e3:.3f} ms, median of {summary['passes']} pass(es)")
    print("| contender | wall (s) | efficiency (ideal / wall) | x raw client.map | pools started | agrees |")
    print("|---|---|---|---|---|---|")
    for row in summary["rows"]:
        print(f"| {row['contender']} | {row['wall']:.2f} | {row['efficiency']:.0%} | {row['x_raw_map']:.2f} "
              f"| {row['pools_started']} | {'yes' if row['agrees'] else 'NO'} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 workers, 400 elements, one pass")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--elements", type=int, default=16_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--sleep-ms", type=float, default=SLEEP * 1e3)
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.elements, args.passes = 2, 400, 1
    passes = [one_pass(args.workers, args.elements, args.sleep_ms / 1e3) for _ in range(args.passes)]
    summary = report(passes, args.workers, args.elements)
    print_table(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main()
