"""Benchmark of the Redis array store against redis-benchmark and the seed's toRedis/fromRedis.

Run ``python -m benchmarks.bench_redis [--quick]``. It starts its own redis-server on a free
loopback port and measures, in one run against that server:

- codec encode/decode of 80x80 and 200x200 uint16 arrays (12.8 kB, 80 kB);
- single put/get latency p50/p99, chunkmap's store vs the seed's toRedis/fromRedis (with the
  dtype fixed, on a plain ``redis.Redis`` client);
- batched throughput, 64 arrays per round trip (``put_many``/``get_many``) vs
  ``redis-benchmark -c 1 -P 64 -d <bytes> -t set,get`` on the same server, and vs redis-py's own
  pipeline with the seed's encoding;

and prints a table with the ratios (targets from issue 5 in brackets).
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import time
import timeit

import numpy as np

from chunkmap import codec
from chunkmap.redis import RedisArrayStore
from chunkmap.redis.server import RedisServer, find_redis_server

SHAPES = {"80x80": (80, 80), "200x200": (200, 200)}
BATCH = 64


# -- the seed's code, with its dtype bug fixed (the baseline) -----------------------------------

def to_redis(r, a, n):
    """Store given Numpy array 'a' in Redis under key 'n' (seed 000)."""
    h, w = a.shape
    shape = struct.pack(">II", h, w)
    r.set(n, shape + a.tobytes())


def from_redis(r, n, dtype=np.uint16):
    """Retrieve Numpy array from Redis key 'n' (seed 000, dtype fixed)."""
    encoded = r.get(n)
    h, w = struct.unpack(">II", encoded[:8])
    return np.frombuffer(encoded[8:], dtype=dtype).reshape(h, w)


# -- measuring ---------------------------------------------------------------------------------

def per_call_us(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def latencies_us(fn, n: int) -> tuple[float, float]:
    for _ in range(min(200, n)):
        fn()
    ts = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t = clock()
        fn()
        ts[i] = clock() - t
    return float(np.percentile(ts, 50) * 1e6), float(np.percentile(ts, 99) * 1e6)


def rate(fn, items_per_call: int, seconds: float) -> float:
    fn()
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds / 3:
                break
        best = max(best, n * items_per_call / dt)
    return best


def redis_benchmark(port: int, nbytes: int, requests: int) -> dict[str, float]:
    exe = find_redis_server("redis-benchmark")
    if exe is None:
        return {}
    out = subprocess.run(
        [exe, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-P", str(BATCH), "-d", str(nbytes),
         "-t", "set,get", "-n", str(requests), "--csv"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    res = {}
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells[0] in ("SET", "GET"):
            res[cells[0]] = float(cells[1])
    return res


def run(quick: bool) -> list[tuple[str, str, float, str, float | None, str]]:
    """Return rows (case, what, value, unit, ratio, note)."""
    n_lat = 500 if quick else 20000
    secs = 0.3 if quick else 3.0
    rows = []
    with RedisServer() as server:
        import redis

        plain = redis.Redis(host="127.0.0.1", port=server.port)
        store = RedisArrayStore(server.url, namespace="bench:")
        for name, shape in SHAPES.items():
            a = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
            nbytes = a.nbytes
            p = codec.encode(a)
            codec.decode(p)
            number = 2000 if quick else 100000
            enc = per_call_us(lambda: codec.encode(a), number, 3 if quick else 7)
            dec = per_call_us(lambda: codec.decode(p), number, 3 if quick else 7)
            rows.append((name, "codec encode", enc, "us", None, "[<= 1.5 us for 80x80]"))
            rows.append((name, "codec decode", dec, "us", None, "[<= 1.5 us for 80x80]"))

            # single put/get latency, chunkmap vs the seed
            store.put("one", a)
            to_redis(plain, a, "bench:seed")
            put50, put99 = latencies_us(lambda: store.put("one", a), n_lat)
            get50, get99 = latencies_us(lambda: store.get("one"), n_lat)
            sput50, sput99 = latencies_us(lambda: to_redis(plain, a, "bench:seed"), n_lat)
            sget50, sget99 = latencies_us(lambda: from_redis(plain, "bench:seed"), n_lat)
            assert np.array_equal(from_redis(plain, "bench:seed"), store.get("one"))
            rows.append((name, "put p50", put50, "us", sput50 / put50, "vs seed toRedis" + (" [<= 55 us]" if name == "80x80" else "")))
            rows.append((name, "put p99", put99, "us", sput99 / put99, "vs seed toRedis"))
            rows.append((name, "get p50", get50, "us", sget50 / get50, "vs seed fromRedis"))
            rows.append((name, "get p99", get99, "us", sget99 / get99, "vs seed fromRedis"))

            # 64 per round trip
            keys = [f"b/{i}" for i in range(BATCH)]
            items = {k: a for k in keys}
            put_rate = rate(lambda: store.put_many(items), BATCH, secs)
            get_rate = rate(lambda: store.get_many(keys), BATCH, secs)

            def seed_pipe_put():
                pipe = plain.pipeline(transaction=False)
                for k in keys:
                    to_redis(pipe, a, "bench:s" + k)
                pipe.execute()

            def seed_pipe_get():
                pipe = plain.pipeline(transaction=False)
                for k in keys:
                    pipe.get("bench:s" + k)
                for enc_ in pipe.execute():
                    np.frombuffer(enc_[8:], dtype=np.uint16).reshape(struct.unpack(">II", enc_[:8]))

            seed_put = rate(seed_pipe_put, BATCH, secs)
            seed_get = rate(seed_pipe_get, BATCH, secs)
            rb = redis_benchmark(server.port, nbytes, 2000 if quick else 100000)
            rows.append((name, "put_many x64 /s", put_rate, "arrays/s", put_rate / rb["SET"] if rb else None,
                         f"vs redis-benchmark SET {rb.get('SET', 0):.0f}/s" + (" [>= 0.9]" if name == "80x80" else "")))
            rows.append((name, "get_many x64 /s", get_rate, "arrays/s", get_rate / rb["GET"] if rb else None,
                         f"vs redis-benchmark GET {rb.get('GET', 0):.0f}/s" + (" [>= 0.75]" if name == "80x80" else "")))
            rows.append((name, "seed + redis-py pipeline put /s", seed_put, "arrays/s", put_rate / seed_put, "chunkmap / this"))
            rows.append((name, "seed + redis-py pipeline get /s", seed_get, "arrays/s", get_rate / seed_get, "chunkmap / this"))
        store.delete_prefix("")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds, to check that it runs")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.quick)
    print(f"{'case':8} {'measure':34} {'value':>12} {'unit':9} {'ratio':>7}  note")
    for case, what, value, unit, ratio, note in rows:
        r = f"{ratio:7.2f}" if ratio is not None else " " * 7
        print(f"{case:8} {what:34} {value:12.2f} {unit:9} {r}  {note}")
    print(f"({'quick' if args.quick else 'full'} mode, {time.perf_counter() - t0:.1f} s; ratio > 1 means chunkmap is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
