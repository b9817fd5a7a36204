"""Benchmark of chunkmap.shm: token handoff, pipeline throughput, memory of a shared array.

Run ``python -m benchmarks.bench_shm [--quick] [--json PATH]``. In one run it measures:

- **handoff**: cost per token through a :class:`~chunkmap.shm.SlotPool` of 2 one-element slots,
  one producer and one consumer process (get_free + publish, get_filled + release), vs the seed's
  two ``multiprocessing.Queue`` of slot indices; plus the cost of unpickling a SharedArray
  reference in a process that already maps it (the per-task cost of a chunk task);
- **pipeline**: 2 slots of 500 MB float32 (8 MB with --quick); the producer fills a whole slot
  (``fill``), the consumer reads it all (``sum``); steady-state time per item vs each stage alone
  on the same kind of memory (in one process), and vs a ``multiprocessing.Queue`` carrying the
  arrays (``np.full`` then ``put``; ``get`` then ``sum``);
- **memory**: a parent and a spawned child both reading a 1 GB array (64 MB with --quick):
  shared through a SharedArray vs sent to the child through a queue (a copy); the growth of the
  summed PSS (proportional set size: shared pages are split between the processes that map
  them), USS and RSS of the two processes from before the array existed (each process measures
  itself with psutil) to when both hold it -- i.e. without the interpreters and numpy.

Times are steady state: the consumer timestamps each item it finishes, and the first two items
(one per slot: page-table faults of the first touch) are left out. Figures depend on the load of
the machine: both pipeline stages need a core each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

import numpy as np

from chunkmap.shm import SharedArray, SlotPool

TARGETS = {
    "handoff_ms": 0.2,
    "pipeline_vs_slower_stage": 0.85,
    "pipeline_vs_queue": 15.0,
}


# -- children (module-level: importable by spawned processes) ----------------------------------

def _pool_producer(pool: SlotPool, items: int, start) -> None:
    start.wait()
    with pool.producing():
        for k in range(items):
            with pool.get_free(timeout=120) as slot:
                slot.array.fill(k)


def _pool_consumer(pool: SlotPool, start, out) -> None:
    start.wait()
    stamps = []
    with pool.consuming():
        for slot in pool.filled(timeout=120):
            with slot:
                slot.array.sum()
            stamps.append(time.perf_counter())
    out.put(stamps)


def _seed_producer(q_free, q_used, items: int, start) -> None:
    start.wait()
    for _ in range(items):
        q_used.put(q_free.get())
    q_used.put(None)


def _seed_consumer(q_free, q_used, start, out) -> None:
    start.wait()
    stamps = []
    while (i := q_used.get()) is not None:
        q_free.put(i)
        stamps.append(time.perf_counter())
    out.put(stamps)


def _queue_producer(q, n: int, items: int, start) -> None:
    start.wait()
    for k in range(items):
        q.put(np.full(n, k, np.float32))
    q.put(None)


def _queue_consumer(q, start, out) -> None:
    start.wait()
    stamps = []
    while (a := q.get()) is not None:
        a.sum()
        stamps.append(time.perf_counter())
    out.put(stamps)


def _memory() -> dict[str, int]:
    import psutil

    m = psutil.Process().memory_full_info()
    return {"pss": m.pss, "uss": m.uss, "rss": m.rss}


def _memory_child(kind: str, payload, ready, done, out) -> None:
    before = _memory()
    a = payload.array if kind == "shared" else payload.get()
    a.sum()  # touch every page
    after = _memory()
    out.put((before, after))
    ready.set()
    done.wait(120)


# -- measurements ------------------------------------------------------------------------------

def _get(q, procs, timeout: float):
    """``q.get()``, but fail early if one of ``procs`` died (a broken import in a spawned child)."""
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"no result: {[(p.name, p.exitcode) for p in procs]}") from None


def _steady_per_item(stamps: list[float], skip: int = 2) -> float:
    s = stamps[skip - 1 :] if len(stamps) > skip else stamps
    return (s[-1] - s[0]) / max(len(s) - 1, 1)


def _run_pair(ctx, producer, pargs, consumer, cargs) -> list[float]:
    start = ctx.Event()
    out = ctx.Queue()
    procs = [ctx.Process(target=producer, args=(*pargs, start)), ctx.Process(target=consumer, args=(*cargs, start, out))]
    for p in procs:
        p.start()
    time.sleep(0.2)
    start.set()
    stamps = _get(out, procs, 600)
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"{p.name} exited with {p.exitcode}")
    return stamps


def handoff(tokens: int) -> dict[str, float]:
    """Per-token time (ms) through a SlotPool and through the seed's two token queues."""
    ctx = multiprocessing.get_context("fork")
    with SlotPool(2, 1, np.float32) as pool:
        pool_ms = 1e3 * _steady_per_item(_run_pair(ctx, _pool_producer, (pool, tokens), _pool_consumer, (pool,)))
    q_free, q_used = ctx.Queue(), ctx.Queue()
    for i in range(2):
        q_free.put(i)
    seed_ms = 1e3 * _steady_per_item(_run_pair(ctx, _seed_producer, (q_free, q_used, tokens), _seed_consumer, (q_free, q_used)))
    import pickle

    with SharedArray.create((1000, 1000), np.float32) as sa:
        ref = pickle.dumps(sa.rows(10, 20))
        pickle.loads(ref)
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            pickle.loads(ref).array
        attach_us = 1e6 * (time.perf_counter() - t) / n
    return {"pool_ms": pool_ms, "seed_queues_ms": seed_ms, "attach_cached_us": attach_us}


def _time(f, repeat: int) -> float:
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pipeline(mb: int, items: int, queue_items: int) -> dict[str, float]:
    """Seconds per item: pool pipeline, each stage alone, multiprocessing.Queue of arrays."""
    n = mb * 2**20 // 4
    ctx = multiprocessing.get_context("fork")
    with SharedArray.create(n, np.float32) as sa:
        a = sa.array
        write = _time(lambda: a.fill(1.0), 5)
        read = _time(lambda: a.sum(), 5)
    with SlotPool(2, n, np.float32) as pool:
        pool_s = _steady_per_item(_run_pair(ctx, _pool_producer, (pool, items), _pool_consumer, (pool,)))
    q = ctx.Queue()
    queue_s = _steady_per_item(_run_pair(ctx, _queue_producer, (q, n, queue_items), _queue_consumer, (q,)))
    return {"mb": mb, "write_alone_s": write, "read_alone_s": read, "pool_s": pool_s, "queue_s": queue_s}


def memory(mb: int) -> dict[str, dict[str, int]]:
    """PSS/USS/RSS of parent + spawned child both holding an ``mb`` MB array: shared vs copied."""
    ctx = multiprocessing.get_context("spawn")
    n = mb * 2**20 // 8
    res = {}
    for kind in ("shared", "queue"):
        ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
        parent_before = _memory()
        if kind == "shared":
            holder = SharedArray.create(n, np.float64)
            a = holder.array
            payload = holder
        else:
            a = np.empty(n, np.float64)
            payload = ctx.Queue()
        a.fill(1.0)
        child = ctx.Process(target=_memory_child, args=(kind, payload, ready, done, out))
        child.start()
        if kind == "queue":
            payload.put(a)
        child_before, child_after = _get(out, [child], 300)
        assert ready.wait(60)
        parent_after = _memory()
        done.set()
        child.join(60)
        # what holding the array costs the two processes (interpreter and numpy excluded)
        res[kind] = {k: parent_after[k] - parent_before[k] + child_after[k] - child_before[k] for k in parent_after}
        res[kind + "_total_pss"] = parent_after["pss"] + child_after["pss"]
        del a
        if kind == "shared":
            holder.unlink()
            holder.close()
            del payload, holder
    res["mb"] = mb
    return res


# -- report -------------------------------------------------------------------------------------

def report(h: dict, p: dict, m: dict) -> str:
    slower = max(p["write_alone_s"], p["read_alone_s"])
    mb = m["mb"]
    rows = [
        ("handoff per token", f"{h['pool_ms']:.3f} ms", f"seed 2 queues {h['seed_queues_ms']:.3f} ms",
         f"{h['seed_queues_ms'] / h['pool_ms']:.2f}", f"<= {TARGETS['handoff_ms']} ms"),
        ("attach a cached reference", f"{h['attach_cached_us']:.1f} us", "", "", ""),
        (f"pipeline 2 x {p['mb']} MB f4, per item", f"{1e3 * p['pool_s']:.1f} ms",
         f"slower stage alone {1e3 * slower:.1f} ms (write {1e3 * p['write_alone_s']:.1f}, read {1e3 * p['read_alone_s']:.1f})",
         f"{slower / p['pool_s']:.2f}", f">= {TARGETS['pipeline_vs_slower_stage']}"),
        ("", "", f"mp.Queue of arrays {1e3 * p['queue_s']:.1f} ms", f"{p['queue_s'] / p['pool_s']:.1f}",
         f">= {TARGETS['pipeline_vs_queue']}"),
    ]
    for key in ("pss", "uss", "rss"):
        rows.append((f"2 processes, {mb} MB array: +{key.upper()}", f"{m['shared'][key] / 2**20:.0f} MB",
                     f"copied through a queue {m['queue'][key] / 2**20:.0f} MB",
                     f"{m['queue'][key] / m['shared'][key]:.2f}" if m["shared"][key] > 2**20 else "-",
                     f"~{mb} MB" if key == "pss" else ""))
    header = ("measure", "chunkmap.shm", "peer", "ratio", "target")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds, to check that it runs")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    if args.quick:
        h = handoff(2000)
        p = pipeline(8, 12, 8)
        m = memory(64)
    else:
        h = handoff(20000)
        p = pipeline(500, 10, 5)
        m = memory(1024)
    print(f"chunkmap.shm benchmark ({'quick' if args.quick else 'full'}; load average {load:.2f} on "
          f"{os.cpu_count()} cores; numpy {np.__version__}, Python {sys.version.split()[0]})")
    print(report(h, p, m))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"handoff": h, "pipeline": p, "memory": m, "load": load, "quick": args.quick}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
