"""The chunkmap.run benchmark runs in quick mode with every contender, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_run_quick(tmp_path):
    from benchmarks.run_contenders import CONTENDERS

    out = tmp_path / "bench.json"
    plot = tmp_path / "plot.png"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_run", "--quick", "--costs", "0,1000", "--no-warm",
         "--json", str(out), "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=230,
    )
    elapsed = time.perf_counter() - t
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(out.read_text())
    assert [c["cost_ns"] for c in report["costs"]] == [0, 1000]
    for cost in report["costs"]:
        rows = {r["contender"]: r for r in cost["rows"]}
        assert set(rows) == set(CONTENDERS)
        for name, r in rows.items():
            assert r["status"] == "ok", (cost["cost_ns"], name, r.get("stderr_tail"))
            assert r["agrees"], (cost["cost_ns"], name, r["digest"], cost["reference"])
            assert r["wall_cold"] > 0 and r["throughput"] > 0
            assert r["mem_samples"] >= 1 and "mem_peak_delta_MB" in r
        assert rows["serial (best loop)"]["x_serial"] == pytest.approx(1.0)
        assert cost["best_peer"] in rows
    assert "| **chunkmap** |" in proc.stdout and plot.stat().st_size > 10_000
    assert elapsed < 60 or os.getloadavg()[0] > 2, f"quick mode took {elapsed:.0f} s"


def test_reference_matches_the_serial_loop():
    """The harness's vectorised reference is the seed's serial loop, exactly."""
    from benchmarks.bench_run import make_inputs
    from benchmarks.run_child import digest
    from benchmarks.run_contenders import BestSerial, SeedSerial, reference

    a1, a2 = make_inputs(40)
    a1[0, :3] = [float("nan"), 1e300, -1e10]  # not masked: computed and failing; masked
    ref = digest(reference(a1, a2))
    assert digest(SeedSerial(0)(a1, a2)) == ref == digest(BestSerial(0)(a1, a2))
    assert ref["values"]["dtype"] == "int64" and 1000 < ref["values"]["len"] < 1600
