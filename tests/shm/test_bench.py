"""The shared-memory benchmark runs in quick mode, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_shm_quick(tmp_path):
    out = tmp_path / "bench.json"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_shm", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - t < 20 or os.getloadavg()[0] > 2 * os.cpu_count()  # ~5 s when quiet
    assert "handoff per token" in proc.stdout and "mp.Queue of arrays" in proc.stdout
    assert proc.stderr == ""
    res = json.loads(out.read_text())
    assert 0 < res["handoff"]["pool_ms"] < 5
    p = res["pipeline"]
    assert p["pool_s"] < p["queue_s"]  # zero-copy beats pickling arrays through a pipe
    m = res["memory"]
    assert m["shared"]["pss"] < 1.5 * 64 * 2**20 < m["queue"]["pss"]  # shared once, not twice
