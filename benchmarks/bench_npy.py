"""Row access to many .npy files: chunkmap.npy against the seed's three recipes, in one run.

    python -m benchmarks.bench_npy [--quick] [--files N] [--accesses K] [--dir DIR] [--json PATH]

N files of shape (500, 30, 3) float64 (N=2000, or 100 with --quick) are written to a temporary
folder. Each contender builds its structure over all N files, then serves K random
(file, row) accesses, each timed alone with ``perf_counter_ns``:

- ``np.load each time``  -> ``np.load(path)[i]``
- ``dict of arrays``     -> ``d[name][i]`` after loading everything (the seed's "hard cache")
- ``dict of memmaps``    -> ``np.array(m[name][i])`` (a copy, so that the row's pages are read)
- ``NpyLibrary``         -> ``lib.row(name, i)``, no cache, no descriptor held: open + pread +
                            close in one C call
- ``NpyLibrary, Python I/O`` -> the same through the pure-Python fallback (os.open, os.preadv,
                            os.close): what the C call saves
- ``NpyLibrary pool M``  -> ``NpyLibrary(folder, max_open_files=M)``: an LRU pool of M held
                            descriptors, M = N/4 (smaller than the working set: with uniform random
                            accesses 3 of 4 miss) and M = N (covers it; capped at half ulimit -n)
- ``NpyLibrary+LRU``     -> no pool, a 64 MiB cache of whole arrays
- ``preadv, fd held``    -> a reference: os.preadv on descriptors opened beforehand, no pool logic
                            (needs N descriptors, so only when N <= half ulimit -n)

Columns: time to first row (building the structure over N files + one row), hot per-row latency
p50/p99 (every file read whole first, so the page cache holds them all) and their ratio to ``np.load each time``, cold p50/p99 (a fresh structure, every file
written back and evicted with ``posix_fadvise(DONTNEED)``, plus ``/proc/sys/vm/drop_caches`` with
``--drop-caches``; then distinct files read once each),
Python heap and address space per file held (tracemalloc, psutil VMS), open descriptors held.
A second table times :class:`chunkmap.npy.RowIterator`: first row, and per-row wait over
50 files in steady state. Figures depend on the machine; a busy machine inflates p99.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from chunkmap.npy import NpyLibrary, RowIterator, _io
from chunkmap.npy.fdpool import fd_limit

SHAPE = (500, 30, 3)


def make_files(folder: str, n: int, seed: int = 0) -> list[str]:
    """Write ``n`` random float64 arrays of SHAPE; return their names (without .npy)."""
    rng = np.random.default_rng(seed)
    names = [f"arr{k:05d}" for k in range(n)]
    base = rng.standard_normal(SHAPE)
    for k, name in enumerate(names):
        np.save(os.path.join(folder, name + ".npy"), base + k)
    return names


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def vms() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().vms
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        return 0


def evict(paths: list[str], drop_caches: bool = False) -> str:
    """Drop the files from the page cache (written back first); return how."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if not drop_caches:
        return "posix_fadvise(DONTNEED) per file"
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return "posix_fadvise(DONTNEED) + drop_caches"
    except OSError:
        return "posix_fadvise(DONTNEED) (drop_caches not permitted)"


def warm(paths: list[str]) -> None:
    """Read every file whole, so that the page cache holds them all (the hot measurements)."""
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


# -- contenders: build(folder, names) -> state ; access(state, name, i) -> row ----------------------
def _load_build(folder, names):
    return {n: os.path.join(folder, n + ".npy") for n in names}


def _load_access(paths, name, i):
    return np.load(paths[name])[i]


def _dict_build(folder, names):
    return {n: np.load(os.path.join(folder, n + ".npy")) for n in names}


def _dict_access(d, name, i):
    return d[name][i]


def _memmap_build(folder, names):
    return {n: np.load(os.path.join(folder, n + ".npy"), mmap_mode="r") for n in names}


def _memmap_access(d, name, i):
    return np.array(d[name][i])


def _lib_build(folder, names):
    return NpyLibrary(folder)


def _lib_access(lib, name, i):
    return lib.row(name, i)


def _lru_build(folder, names):
    return NpyLibrary(folder, cache_bytes=64 << 20)


class _PythonIOLibrary(NpyLibrary):
    """A library whose readers use the pure-Python twins of the C read functions."""

    def __getitem__(self, key):
        r = self._readers.get(key)
        if r is None:  # readers capture _io.pread_path when they are created
            saved = _io.pread_path
            _io.pread_path = _io.EXTENSION.twin.pread_path
            try:
                r = super().__getitem__(key)
            finally:
                _io.pread_path = saved
        return r


def _python_io_build(folder, names):
    return _PythonIOLibrary(folder)


def _pool_build(size):
    def build(folder, names):
        return NpyLibrary(folder, max_open_files=size)

    return build


def _fd_build(folder, names):
    return {n: os.open(os.path.join(folder, n + ".npy"), os.O_RDONLY) for n in names}


def _fd_access(fds, name, i, _row=int(np.prod(SHAPE[1:])) * 8):
    out = np.empty(SHAPE[1:])
    os.preadv(fds[name], [out], 128 + i * _row)
    return out


def _close(state) -> None:
    """Release what a contender's structure holds (descriptors of the pool or of the fd dict)."""
    if isinstance(state, NpyLibrary):
        state.close()
    elif isinstance(state, dict) and state and isinstance(next(iter(state.values())), int):
        for fd in state.values():
            os.close(fd)


def contenders(n: int) -> list[tuple[str, Callable, Callable]]:
    """The contenders for ``n`` files (pool sizes and the held-fd reference depend on n)."""
    limit = fd_limit()
    pools = sorted({min(limit, max(1, n // 4)), min(limit, n)})
    out: list[tuple[str, Callable, Callable]] = [
        ("np.load each time", _load_build, _load_access),
        ("dict of arrays", _dict_build, _dict_access),
        ("dict of memmaps", _memmap_build, _memmap_access),
        ("NpyLibrary", _lib_build, _lib_access),
        ("NpyLibrary, Python I/O", _python_io_build, _lib_access),
    ]
    out += [(f"NpyLibrary pool {m}", _pool_build(m), _lib_access) for m in pools]
    out.append(("NpyLibrary+LRU 64MiB", _lru_build, _lib_access))
    if n <= limit:
        out.append(("preadv, fd held", _fd_build, _fd_access))
    return out


def _timed(access, state, pairs) -> np.ndarray:
    ns = np.empty(len(pairs), np.int64)
    clock = time.perf_counter_ns
    for k, (name, i) in enumerate(pairs):
        t = clock()
        access(state, name, i)
        ns[k] = clock() - t
    return ns


def measure(label, build, access, folder, names, paths, hot_pairs, cold_pairs, cold_ok, drop=False) -> dict:
    gc.collect()
    t = time.perf_counter_ns()
    state = build(folder, names)
    access(state, names[len(names) // 2], 0)
    first = (time.perf_counter_ns() - t) / 1e6
    _close(state)
    del state
    gc.collect()
    fds0, vms0 = open_fds(), vms()
    tracemalloc.start()
    heap0 = tracemalloc.get_traced_memory()[0]
    state = build(folder, names)
    for name in names:  # every file held: headers parsed, memmaps opened
        access(state, name, 1)
    gc.collect()  # what is held, not the garbage (ast.literal_eval leaves cycles) gen 0 has not freed yet
    heap = (tracemalloc.get_traced_memory()[0] - heap0) / len(names)
    tracemalloc.stop()
    held_vms = (vms() - vms0) / len(names)
    held_fds = open_fds() - fds0
    if label.startswith("NpyLibrary+LRU"):
        heap = float("nan")  # the cache holds whole arrays by design: not "nothing cached"
    warm(paths)  # an earlier contender's cold phase evicted the files
    _timed(access, state, hot_pairs[: len(hot_pairs) // 10])  # warm-up
    hot = _timed(access, state, hot_pairs) / 1e3
    cold = None
    if cold_ok and label != "dict of arrays":
        # a fresh structure (mapped pages of the old memmaps would survive eviction), headers
        # read, then every file evicted: each timed access reads the disk
        _close(state)
        del state
        state = build(folder, names)
        if isinstance(state, NpyLibrary):
            for name in names:
                state.header(name)
        evict(paths, drop)
        cold = _timed(access, state, cold_pairs) / 1e3
    _close(state)
    del state
    return {
        "method": label,
        "first_row_ms": first,
        "hot_p50_us": float(np.percentile(hot, 50)),
        "hot_p99_us": float(np.percentile(hot, 99)),
        "cold_p50_us": None if cold is None else float(np.percentile(cold, 50)),
        "cold_p99_us": None if cold is None else float(np.percentile(cold, 99)),
        "heap_per_file_B": heap,
        "vms_per_file_B": held_vms,
        "fds_held": held_fds,
    }


def measure_iterator(folder: str, names: list[str], n_files: int) -> dict:
    paths = [os.path.join(folder, n + ".npy") for n in names[:n_files]]
    t = time.perf_counter_ns()
    it = RowIterator(paths)
    next(it)
    first = (time.perf_counter_ns() - t) / 1e3
    waits = []
    clock = time.perf_counter_ns
    for _ in range(2000):  # a consumer doing ~20 us of work per row
        t0 = clock()
        row = next(it, None)
        waits.append(clock() - t0)
        if row is None:
            break
        end = clock() + 20_000
        while clock() < end:
            pass
    rest = time.perf_counter_ns()
    n = sum(1 for _ in it)
    per_row = (time.perf_counter_ns() - rest) / max(1, n) / 1e3
    w = np.array(waits[100:]) / 1e3
    return {
        "first_row_us": first,
        "wait_p50_us": float(np.percentile(w, 50)),
        "wait_p99_us": float(np.percentile(w, 99)),
        "drain_per_row_us": per_row,
    }


def _fmt(v, spec=".1f"):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(v, spec)


def report(results: list[dict], it: dict, n: int, k: int, how: str) -> str:
    ref = next(r for r in results if r["method"] == "np.load each time")
    lines = [
        f"{n} files of shape {SHAPE} float64, {k} random row accesses; cold = {how}",
        "",
        f"{'method':24} {'1st row ms':>10} {'p50 us':>8} {'p99 us':>8} {'x np.load':>9} "
        f"{'cold p50':>9} {'cold p99':>9} {'heap B/file':>11} {'VM B/file':>10} {'fds':>5}",
    ]
    for r in results:
        lines.append(
            f"{r['method']:24} {_fmt(r['first_row_ms'], '.2f'):>10} {_fmt(r['hot_p50_us']):>8} "
            f"{_fmt(r['hot_p99_us']):>8} {ref['hot_p50_us'] / r['hot_p50_us']:>8.1f}x "
            f"{_fmt(r['cold_p50_us']):>9} {_fmt(r['cold_p99_us']):>9} {_fmt(r['heap_per_file_B'], '.0f'):>11} "
            f"{_fmt(r['vms_per_file_B'], '.0f'):>10} {r['fds_held']:>5}"
        )
    lines += [
        "",
        f"RowIterator over 50 files: first row {it['first_row_us']:.0f} us; wait per row with a "
        f"20 us consumer p50 {it['wait_p50_us']:.2f} us, p99 {it['wait_p99_us']:.2f} us; "
        f"drain {it['drain_per_row_us']:.2f} us/row",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_npy", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 files, 2000 accesses (seconds)")
    ap.add_argument("--files", type=int, help="number of files (default 2000, quick 100)")
    ap.add_argument("--accesses", type=int, help="timed accesses per method (default 20000, quick 2000)")
    ap.add_argument("--dir", help="parent folder of the temporary files (default: the system tmp)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache measurements")
    ap.add_argument(
        "--drop-caches", action="store_true", help="also write /proc/sys/vm/drop_caches (root; whole machine)"
    )
    args = ap.parse_args(argv)
    n = args.files or (100 if args.quick else 2000)
    k = args.accesses or (2000 if args.quick else 20000)
    folder = tempfile.mkdtemp(prefix="bench_npy_", dir=args.dir)
    try:
        names = make_files(folder, n)
        paths = [os.path.join(folder, x + ".npy") for x in names]
        rng = random.Random(1)
        hot = [(rng.choice(names), rng.randrange(SHAPE[0])) for _ in range(k)]
        cold = [(x, rng.randrange(SHAPE[0])) for x in rng.sample(names, min(n, 200 if args.quick else 1000))]
        how = "not measured" if args.no_cold else evict(paths[:1], args.drop_caches)
        results = []
        for label, build, access in contenders(n):
            results.append(
                measure(label, build, access, folder, names, paths, hot, cold, not args.no_cold, args.drop_caches)
            )
        it = measure_iterator(folder, names, min(50, n))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(report(results, it, n, k, how))
    out = {
        "files": n,
        "accesses": k,
        "cold": how,
        "io": _io.EXTENSION.implementation,
        "results": results,
        "iterator": it,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
