"""The worker-restart benchmark runs in quick mode, so it never rots."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_mode_runs():
    completed = subprocess.run([sys.executable, "-m", "benchmarks.bench_restarts", "--quick"], cwd=ROOT,
                               capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "restart cost" in completed.stdout and "cold start" in completed.stdout
    assert "20 of them segfaulting" in completed.stdout and "40 worker restarts" in completed.stdout
