"""The lazy-input and output-store benchmark runs in quick mode, so it never rots."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_mode_runs():
    completed = subprocess.run([sys.executable, "-m", "benchmarks.bench_arrays", "--quick"], cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "1e+08 elements in 100 boxes" in completed.stdout
    for contender in ("numpy", "dask", "zarr", "numpy to output="):
        assert f"throughput {contender:>17}:" in completed.stdout
    assert "capped: 1e+06 elements" in completed.stdout
