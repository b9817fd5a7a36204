"""Lazy inputs and zarr outputs at scale (issue 14): the plan of 10**10 elements, throughput, a capped client.

    python -m benchmarks.bench_arrays [--quick]

Three measurements, each in a fresh process:

- **plan**: a 10**10-element run over two dask arrays of zeros (chunks of 1000 x 1000) with a
  lazy mask, planned as ``chunkmap.run`` plans it: the boxes, the pickled source (what a cluster
  is sent once), the ``dask.bag`` of one task per box, and the ``output=`` store's metadata
  written to a temporary folder. Wall time and the client's memory (tracemalloc peak, resident).
- **throughput**: the stub at cost 0 over the same 2-D float64 grid (10 % masked as the seed's
  sentinel) as numpy arrays, a dask array, a zarr array, and numpy into an ``output=`` store, on
  ``processes``; elements per second, and each as a ratio of the numpy run.
- **capped**: a zarr input of 10**8 float64 elements (800 MB) into a zarr ``output=`` store, in a
  process whose address space is capped (RLIMIT_AS) below the input's size: wall time and peak
  resident memory.

Two cores here: the figures compare contenders in the same run; they are not a cluster's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

PLAN = """
import json, os, pickle, resource, sys, tempfile, time, tracemalloc
import dask.array as da
from chunkmap.plan import make_plan
from chunkmap.engine import chunk_task_bag, remote_task
from chunkmap.kernel import Execution
from chunkmap.stored import OutputStore

import zarr  # imported before the clock starts, as a notebook has it

side = int(sys.argv[1])
tracemalloc.start()
started = time.perf_counter()
x = da.zeros((side, side), chunks=(1000, 1000))
plan = make_plan([x, x], mask=x < -1, boxes=True).with_chunks("auto").regular()
planned = time.perf_counter()
chunks = plan.chunks
shipped = len(pickle.dumps(plan.source))
bag = chunk_task_bag(chunks, remote_task, plan.source, None)  # the graph a cluster run submits
bagged = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    OutputStore.open(os.path.join(folder, "out.zarr"), plan, Execution(float.__add__), "auto", "processes")
    stored = time.perf_counter()
    metadata = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"elements": plan.elements, "boxes": len(chunks), "plan_s": planned - started,
                  "bag_s": bagged - planned, "store_s": stored - bagged, "shipped_bytes": shipped,
                  "store_metadata_bytes": metadata, "traced_peak_bytes": peak,
                  "resident_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

THROUGHPUT = """
import json, os, shutil, sys, tempfile, time
import numpy as np, dask.array as da, zarr
import chunkmap
from chunkmap.stub import slowlib

side = int(sys.argv[1])
skip = slowlib.InternalError
rng = np.random.default_rng(0)
a1 = rng.uniform(1, 2, (side, side)); a1[rng.random((side, side)) < 0.1] = -1e11
a2 = rng.uniform(1, 2, (side, side))
folder = tempfile.mkdtemp()
z1 = zarr.create_array(store=folder + "/a1.zarr", data=a1, chunks=(side // 8, side))
z2 = zarr.create_array(store=folder + "/a2.zarr", data=a2, chunks=(side // 8, side))
d1, d2 = da.from_array(a1, chunks=(side // 8, side)), da.from_array(a2, chunks=(side // 8, side))
cases = {
    "numpy": lambda: chunkmap.run(slowlib.slow_computation, a2, a1, mask=a1 <= -1e10, skip=skip, progress=False),
    "dask": lambda: chunkmap.run(slowlib.slow_computation, d2, d1, mask=d1 <= -1e10, skip=skip, progress=False),
    "zarr": lambda: chunkmap.run(slowlib.slow_computation, z2, z1, mask=lambda b, a: a <= -1e10, skip=skip,
                                    progress=False),
    "numpy to output=": lambda: chunkmap.run(slowlib.slow_computation, a2, a1, mask=a1 <= -1e10, skip=skip,
                                             progress=False, output=folder + f"/out-{time.monotonic_ns()}.zarr"),
}
cases["numpy"]()  # workers warm, imports done
best = {name: float("inf") for name in cases}
for _ in range(int(sys.argv[2])):
    for name, case in cases.items():
        started = time.perf_counter()
        result = case()
        best[name] = min(best[name], time.perf_counter() - started)
shutil.rmtree(folder)
print(json.dumps({"elements": side * side, "seconds": best}))
"""

CAPPED = """
import json, resource, shutil, sys, tempfile, time
import numpy as np, zarr
import chunkmap

size, cap = int(sys.argv[1]), int(sys.argv[2])
folder = tempfile.mkdtemp()
stored = zarr.create_array(store=folder + "/in.zarr", shape=(size // 10_000, 10_000), chunks=(100, 10_000),
                           dtype="f8")
for start in range(0, stored.shape[0], 100):
    stored[start : start + 100] = np.arange(start * 10_000, (start + 100) * 10_000, dtype=np.float64).reshape(100, -1)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
started = time.perf_counter()
result = chunkmap.run(float.__add__, zarr.open_array(folder + "/in.zarr"), 1.0, mask=lambda x, y: x % 7 == 0,
                      scheduler="threads", workers=2, progress=False, output=folder + "/out.zarr")
seconds = time.perf_counter() - started
out = zarr.open_array(folder + "/out.zarr/values")
assert result.stats.computed == size - (size + 6) // 7, result.stats
assert out[5, 2] == 5 * 10_000 + 2 + 1.0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
shutil.rmtree(folder)
print(json.dumps({"elements": size, "input_bytes": size * 8, "cap_bytes": cap, "seconds": seconds,
                  "resident_bytes": peak, "rate": size / seconds}))
"""


def measure(script: str, *args: object) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], capture_output=True,
                          text=True, env={"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(1 << 20), "PATH": "/usr/bin:/bin",
                                          "TMPDIR": tempfile.gettempdir()})
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for the tests")
    quick = parser.parse_args(argv).quick
    plan = measure(PLAN, 10_000 if quick else 100_000)
    print(f"plan: {plan['elements']:.3g} elements in {plan['boxes']:,} boxes: planned in {plan['plan_s']:.3f} s, "
          f"bag in {plan['bag_s']:.3f} s, output store created in {plan['store_s']:.3f} s "
          f"({plan['store_metadata_bytes'] / 1e3:.1f} kB of metadata); source shipped once: "
          f"{plan['shipped_bytes'] / 1e3:.1f} kB; client peak {plan['traced_peak_bytes'] / 1e6:.1f} MB traced, "
          f"{plan['resident_bytes'] / 1e6:.0f} MB resident")
    speed = measure(THROUGHPUT, 400 if quick else 2000, 1 if quick else 3)
    numpy = speed["seconds"]["numpy"]
    for name, seconds in speed["seconds"].items():
        print(f"throughput {name:>17}: {speed['elements'] / seconds / 1e6:6.2f} M elements/s "
              f"({seconds:.3f} s, {numpy / seconds:.2f}x numpy inputs)")
    size = 1_000_000 if quick else 100_000_000
    capped = measure(CAPPED, size, (1 << 30) if not quick else (1 << 30))
    print(f"capped: {capped['elements']:.3g} elements, a {capped['input_bytes'] / 1e6:.0f} MB zarr input into a "
          f"zarr output, address space capped at {capped['cap_bytes'] / 2**30:.2f} GiB: {capped['seconds']:.1f} s "
          f"({capped['rate'] / 1e6:.2f} M elements/s), peak resident {capped['resident_bytes'] / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
