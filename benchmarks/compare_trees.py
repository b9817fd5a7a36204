"""chunkmap.run on the seed's workload, this tree against another, interleaved in the same minutes.

``python -m benchmarks.compare_trees /tmp/before [--rounds 2]`` runs, for each cost (0, 1 us,
100 us at 9M, 4M and 40k elements), one fresh process per tree and round, alternating the trees:
each process times the first ``chunkmap.run`` (cold: dask's import and the workers' start
included) and the best of two more (warm). The other tree must be built in place
(``git worktree add /tmp/before REV && cd /tmp/before && python setup.py build_ext --inplace``);
it is put first on ``PYTHONPATH``, so its worker processes import it too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

#: (cost in ns, n): the inputs are n x n, as in benchmarks.bench_run
WORKLOADS = [(0, 3000), (1000, 2000), (100_000, 200)]

CHILD = r"""
import json, sys, time
import chunkmap
from chunkmap.cli.demo import make_inputs
from chunkmap.stub import set_cost, slowlib
cost, n = int(sys.argv[1]), int(sys.argv[2])
a1, a2 = make_inputs(n)
set_cost(cost)
times = []
for _ in range(3):
    started = time.perf_counter()
    chunkmap.run(slowlib.slow_computation, a2, a1, mask=a1 <= -1e10, skip=slowlib.InternalError, progress=False)
    times.append(time.perf_counter() - started)
print(json.dumps({"tree": chunkmap.__file__, "cold": times[0], "warm": min(times[1:])}))
"""


def measure(tree: str | None, cost: int, n: int) -> dict:
    """One fresh process on ``tree`` (None: the installed chunkmap)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", CHILD, str(cost), str(n)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="the other tree, built in place")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="n / 10 (elements / 100)")
    args = parser.parse_args()
    print("| workload | baseline cold / warm | this tree cold / warm |\n|---|---|---|")
    for cost, n in WORKLOADS:
        n = n // 10 if args.quick else n
        runs: dict[str, list[str]] = {"baseline": [], "this": []}
        for _ in range(args.rounds):
            for name, tree in (("baseline", args.baseline), ("this", None)):
                figures = measure(tree, cost, n)
                runs[name].append(f"{figures['cold']:.2f} / {figures['warm']:.2f} s")
        print(f"| cost {cost / 1000:g} us, {n * n:,} elements | {', '.join(runs['baseline'])} | "
              f"{', '.join(runs['this'])} |", flush=True)


if __name__ == "__main__":
    main()
