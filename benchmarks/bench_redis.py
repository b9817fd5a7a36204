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

Then the single-request floor, 80x80 (12.8 kB), under each ``--pin`` condition, interleaved
and repeated ``--repeat`` times (median p50/p99 and the spread of the p50s):

- ``redis-benchmark -c 1 -P 1 -d 12800 -t set,get`` (the server's own client, in C);
- a raw-socket Python client sending a prebuilt ``SET``/``GET`` (no redis-py, no codec), and
  the same ``SET`` sent after 5 us of busy work (a client that does anything between requests
  lets the server go back to sleep first), and with the same busy-poll as ``spin``;
- ``RedisArrayStore.put``/``get``, the same with ``spin`` (``--spin``, seconds), and over the
  server's Unix socket instead of TCP loopback;

where the conditions are ``none`` (no affinity), ``same`` (client, redis-benchmark and the
server's threads on one core), ``split`` (server on one core, client on another) and the opt-in
``awake`` (no affinity, every core kept busy by a ``nice -n 19`` spinning process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
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
CONDITIONS = ("none", "same", "split", "awake")
DEFAULT_CONDITIONS = ("none", "same", "split")


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


# -- the single-request floor ------------------------------------------------------------------

def redis_benchmark_single(port: int, nbytes: int, requests: int) -> dict[str, tuple[float, float]]:
    """``redis-benchmark -c 1 -P 1``: {"SET": (p50 us, p99 us), "GET": ...} from its CSV."""
    exe = find_redis_server("redis-benchmark")
    if exe is None:
        return {}
    out = subprocess.run(
        [exe, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-P", "1", "-d", str(nbytes),
         "-t", "set,get", "-n", str(requests), "--csv", "--precision", "3"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    lines = [[c.strip('"') for c in line.split(",")] for line in out.splitlines()]
    head = lines[0]
    i50, i99 = head.index("p50_latency_ms"), head.index("p99_latency_ms")
    return {c[0]: (float(c[i50]) * 1e3, float(c[i99]) * 1e3) for c in lines[1:] if c[0] in ("SET", "GET")}


class RawClient:
    """The floor of a Python client: a prebuilt SET and GET on a bare socket, one reused buffer."""

    def __init__(self, port: int, key: bytes, value: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.set_cmd = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        self.get_cmd = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        self.get_len = len(b"$%d\r\n" % len(value)) + len(value) + 2
        self.buf = bytearray(max(self.get_len, 1 << 16))
        self.view = memoryview(self.buf)
        self.set()
        assert self.buf[:5] == b"+OK\r\n"
        self.get()
        assert self.buf[self.get_len - 2 - len(value):self.get_len - 2] == value

    def set(self) -> None:
        self.sock.sendall(self.set_cmd)
        self.sock.recv_into(self.buf)

    def set_after_work(self, us: float = 5.0) -> None:
        """``set`` after ``us`` microseconds of busy work, about what a real client does between
        requests (store.put's own Python is ~5 us): the server has gone back to sleep by then."""
        end = time.perf_counter() + us * 1e-6
        while time.perf_counter() < end:
            pass
        self.set()

    def set_spin(self, spin: float) -> None:
        """``set``, polling for the reply for up to ``spin`` seconds (as ``RedisArrayStore(spin=)``)."""
        self.sock.sendall(self.set_cmd)
        end = time.perf_counter() + spin
        while True:
            try:
                self.sock.recv_into(self.buf, 0, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                if time.perf_counter() >= end:
                    break
                os.sched_yield()
        self.sock.recv_into(self.buf)

    def get(self) -> None:
        self.sock.sendall(self.get_cmd)
        view, got, n = self.view, 0, self.get_len
        while got < n:
            got += self.sock.recv_into(view[got:])

    def close(self) -> None:
        self.sock.close()


def _set_affinity(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process ``pid`` (0: this thread) to ``cpus``."""
    if pid == 0:
        os.sched_setaffinity(0, cpus)
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def condition(name: str, server_pid: int):
    """Client (this thread and its children) and server placed as ``name`` says, then restored."""
    allowed = sorted(os.sched_getaffinity(0))
    spinners: list[subprocess.Popen] = []
    try:
        if name == "same":
            _set_affinity(server_pid, {allowed[0]})
            _set_affinity(0, {allowed[0]})
        elif name == "split":
            _set_affinity(server_pid, {allowed[0]})
            _set_affinity(0, {allowed[1]})
        elif name == "awake":
            for cpu in allowed:
                spinners.append(subprocess.Popen(
                    ["nice", "-n", "19", sys.executable, "-c",
                     f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]))
            time.sleep(0.2)
        elif name != "none":
            raise ValueError(f"unknown condition {name!r}; expected one of {CONDITIONS}")
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()
        _set_affinity(0, set(allowed))
        _set_affinity(server_pid, set(allowed))


FLOOR_MEASURES = (
    "redis-benchmark SET", "raw socket SET", "raw SET after 5us work", "raw socket SET spin", "store.put",
    "store.put spin", "store.put unix",
    "redis-benchmark GET", "raw socket GET", "store.get", "store.get spin", "store.get unix",
)


def floor_once(server, nbytes_shape, n: int, spin: float) -> dict[str, tuple[float, float]]:
    """One pass of every single-request measure: {measure: (p50 us, p99 us)}."""
    a = np.arange(np.prod(nbytes_shape), dtype=np.uint16).reshape(nbytes_shape)
    out = {}
    rb = redis_benchmark_single(server.port, a.nbytes, n)
    if rb:
        out["redis-benchmark SET"], out["redis-benchmark GET"] = rb["SET"], rb["GET"]
    raw = RawClient(server.port, b"bench:raw", a.tobytes())
    try:
        out["raw socket SET"] = latencies_us(raw.set, n)
        out["raw SET after 5us work"] = latencies_us(raw.set_after_work, n)
        out["raw socket SET spin"] = latencies_us(lambda: raw.set_spin(spin), n)
        out["raw socket GET"] = latencies_us(raw.get, n)
    finally:
        raw.close()
    unix = os.path.join(server.dir, "redis.sock")
    stores = [("", server.url, {}), (" spin", server.url, {"spin": spin})]
    if os.path.exists(unix):
        stores.append((" unix", f"unix://{unix}?db=0", {}))
    for suffix, url, kw in stores:
        with RedisArrayStore(url, namespace="bench:", **kw) as store:
            store.put("floor", a)
            assert np.array_equal(store.get("floor"), a)
            out["store.put" + suffix] = latencies_us(lambda: store.put("floor", a), n)
            out["store.get" + suffix] = latencies_us(lambda: store.get("floor"), n)
    return out


def run_floor(conditions, repeat: int, quick: bool, spin: float, server=None):
    """Return rows (condition, measure, p50 median, p50 min, p50 max, p99 median, x floor)."""
    n = 500 if quick else 5000
    ncpu = len(os.sched_getaffinity(0))
    conditions = [c for c in conditions if not (c in ("split",) and ncpu < 2)]
    own = server is None
    if own:
        server = RedisServer()
        server.extra += ["--unixsocket", os.path.join(server.dir, "redis.sock"), "--unixsocketperm", "700"]
        server.start()
    try:
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {c: [] for c in conditions}
        for _ in range(repeat):  # interleaved, so that a noisy minute spreads over every condition
            for c in conditions:
                with condition(c, server.proc.pid):
                    runs[c].append(floor_once(server, SHAPES["80x80"], n, spin))
    finally:
        if own:
            server.close()
    rows = []
    for c in conditions:
        floor = {}
        for what in FLOOR_MEASURES:
            vals = [r[what] for r in runs[c] if what in r]
            if not vals:
                continue
            p50s = [v[0] for v in vals]
            p99 = float(np.median([v[1] for v in vals]))
            p50 = float(np.median(p50s))
            kind = "SET" if ("SET" in what or ".put" in what) else "GET"
            if what.startswith("redis-benchmark"):
                floor[kind] = p50
            rows.append((c, what, p50, min(p50s), max(p50s), p99,
                         p50 / floor[kind] if kind in floor else None))
    return rows


def print_floor(rows, repeat: int, spin: float) -> None:
    print()
    print(f"single request, 80x80 uint16 (12.8 kB): p50 = median of {repeat} runs [min-max], p99 = median; "
          f"x floor = p50 / redis-benchmark's p50 (same condition); spin = {spin * 1e6:.0f} us")
    print(f"{'pin':6} {'measure':22} {'p50 us':>8} {'[min':>7} {'max]':>7} {'p99 us':>8} {'x floor':>8}")
    last = None
    for c, what, p50, lo, hi, p99, ratio in rows:
        if last is not None and c != last:
            print()
        last = c
        r = f"{ratio:8.2f}" if ratio is not None else " " * 8
        note = "  [put p50 <= 55 us]" if what == "store.put" else ""
        print(f"{c:6} {what:22} {p50:8.1f} {lo:7.1f} {hi:7.1f} {p99:8.1f} {r}{note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds, to check that it runs")
    ap.add_argument("--pin", default=",".join(DEFAULT_CONDITIONS),
                    help=f"conditions of the single-request floor, comma-separated among {', '.join(CONDITIONS)} "
                         f"(default %(default)s; 'awake' keeps every core busy with nice -n 19 loops)")
    ap.add_argument("--repeat", type=int, default=None, help="passes over the conditions (default 3, quick 1)")
    ap.add_argument("--spin", type=float, default=200e-6, help="store's spin for the 'spin' rows, seconds (default 200e-6)")
    ap.add_argument("--only-floor", action="store_true", help="only the single-request floor")
    args = ap.parse_args(argv)
    conditions = [c.strip() for c in args.pin.split(",") if c.strip()]
    for c in conditions:
        if c not in CONDITIONS:
            ap.error(f"--pin: unknown condition {c!r}; expected some of {', '.join(CONDITIONS)}")
    repeat = args.repeat or (1 if args.quick else 3)
    t0 = time.perf_counter()
    floor_rows = run_floor(conditions, repeat, args.quick, args.spin) if conditions else []
    rows = [] if args.only_floor else run(args.quick)
    print(f"{'case':8} {'measure':34} {'value':>12} {'unit':9} {'ratio':>7}  note")
    for case, what, value, unit, ratio, note in rows:
        r = f"{ratio:7.2f}" if ratio is not None else " " * 7
        print(f"{case:8} {what:34} {value:12.2f} {unit:9} {r}  {note}")
    if floor_rows:
        print_floor(floor_rows, repeat, args.spin)
    print(f"({'quick' if args.quick else 'full'} mode, {time.perf_counter() - t0:.1f} s; ratio > 1 means chunkmap is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
