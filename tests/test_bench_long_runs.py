"""The long-runs benchmark runs in quick mode, so it never rots."""

from __future__ import annotations

import subprocess
import sys


def test_quick_mode_runs():
    completed = subprocess.run([sys.executable, "-m", "benchmarks.bench_long_runs", "--quick"],
                               capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "checkpoint overhead" in completed.stdout and "worker restarts" in completed.stdout
