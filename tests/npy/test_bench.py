"""The .npy benchmark runs in quick mode, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_bench_npy_quick(tmp_path):
    t = time.perf_counter()
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_npy", "--quick", "--dir", str(tmp_path), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NpyLibrary" in proc.stdout and "x np.load" in proc.stdout
    assert time.perf_counter() - t < 60  # ~6 s on a quiet machine
    import json

    res = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    lib = res["NpyLibrary"]
    assert lib["fds_held"] == 0 and res["dict of memmaps"]["fds_held"] == 100
    assert lib["heap_per_file_B"] < 1024
    assert lib["hot_p50_us"] < res["np.load each time"]["hot_p50_us"]
    # the descriptor pools hold exactly their size between calls; the Python-I/O variant nothing
    assert res["NpyLibrary pool 25"]["fds_held"] == 25 and res["NpyLibrary pool 100"]["fds_held"] == 100
    assert res["NpyLibrary, Python I/O"]["fds_held"] == 0
    assert res["NpyLibrary pool 100"]["hot_p50_us"] < res["np.load each time"]["hot_p50_us"]
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # its files are removed
