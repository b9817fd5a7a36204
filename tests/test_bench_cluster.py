"""The cluster benchmark runs in quick mode, so it cannot rot: every contender agrees with the serial loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_cluster_quick(tmp_path):
    out = tmp_path / "cluster.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_cluster", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())
    rows = {row["contender"]: row for row in report["rows"]}
    assert set(rows) == {"chunkmap cold", "chunkmap warm", "client.map 64 chunks", "dask.bag map_partitions 64",
                         "ideal"}
    for name, row in rows.items():
        assert row["agrees"], name
        assert row["wall"] > 0 and row["efficiency"] > 0
    assert report["t_call"] >= 1e-3  # a call sleeps 1 ms
    assert "| chunkmap warm |" in proc.stdout


def test_the_contenders_compute_the_serial_loop():
    """The raw contenders' task and the reference are the function's serial loop, element by element."""
    from benchmarks.bench_cluster import chunk_loop, serial, sleepy

    values = np.random.default_rng(3).random(7)
    expected = np.array([sleepy(float(x), 0.0) for x in values])
    np.testing.assert_array_equal(chunk_loop(values, 0.0), expected)
    np.testing.assert_array_equal(serial(values, 0.0)[0], expected)
    np.testing.assert_array_equal(expected, 2.0 * values + 1.0)
