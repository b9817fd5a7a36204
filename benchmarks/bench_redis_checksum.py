"""What the Redis store's default data checksum costs: ``checksum=True`` against ``False``, interleaved.

Run ``python -m benchmarks.bench_redis_checksum [--quick] [--passes N]``. It starts its own
redis-server on a free loopback port and, in each pass, measures with 80x80 and 200x200 uint16
arrays (12.8 kB, 80 kB), first without and then with the checksum:

- ``put_many`` / ``get_many`` of 64 arrays per round trip, in arrays per second (best of 5);
- a single ``put`` and ``get``, in microseconds per call (best of 5).

It prints one line per pass, shape and setting, then per shape and measure the cost of the
checksum over the passes as the range of ``1 - checked / unchecked`` throughput.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections import defaultdict

import numpy as np

from chunkmap.redis import RedisArrayStore
from chunkmap.redis.server import RedisServer

SHAPES = {"80x80": (80, 80), "200x200": (200, 200)}
BATCH = 64


def rates(store: RedisArrayStore, a: np.ndarray, number: int) -> dict[str, float]:
    """Arrays per second of ``put_many``, ``get_many``, ``put`` and ``get`` of ``a`` (best of 5)."""
    batch = {f"k{i}": a for i in range(BATCH)}
    keys = list(batch)
    store.put_many(batch)
    store.put("one", a)
    timed = {
        "put_many x64": (lambda: store.put_many(batch), BATCH),
        "get_many x64": (lambda: store.get_many(keys), BATCH),
        "put": (lambda: store.put("one", a), 1),
        "get": (lambda: store.get("one"), 1),
    }
    out = {}
    for name, (call, arrays) in timed.items():
        calls = number if arrays > 1 else number * 10
        out[name] = calls * arrays / min(timeit.repeat(call, number=calls, repeat=5))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds, to check that it runs")
    ap.add_argument("--passes", type=int, default=None, help="interleaved passes (default 5, quick 1)")
    args = ap.parse_args(argv)
    passes = args.passes or (1 if args.quick else 5)
    number = 2 if args.quick else 200
    t0 = time.perf_counter()
    costs: dict[tuple[str, str], list[float]] = defaultdict(list)
    with RedisServer() as server:
        stores = {c: RedisArrayStore(server.url, namespace=f"bench-crc{int(c)}:", checksum=c) for c in (False, True)}
        for p in range(passes):
            for shape_name, shape in SHAPES.items():
                a = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
                measured = {c: rates(s, a, number) for c, s in stores.items()}
                for c, r in measured.items():
                    line = "  ".join(f"{k} {v / 1e3:8.1f} k/s" for k, v in r.items())
                    print(f"pass {p} {shape_name:8} checksum={c!s:5}  {line}")
                for k in measured[False]:
                    costs[shape_name, k].append(1 - measured[True][k] / measured[False][k])
        for s in stores.values():
            s.delete_prefix()
            s.close()
    print(f"{'case':8} {'measure':14} checksum cost (1 - checked/unchecked throughput), range over {passes} passes")
    for (shape_name, k), c in costs.items():
        print(f"{shape_name:8} {k:14} {100 * min(c):6.1f}% .. {100 * max(c):6.1f}%")
    print(f"({'quick' if args.quick else 'full'} mode, {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
