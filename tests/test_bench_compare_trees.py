"""The tree comparison runs in quick mode (this tree against itself), so it never rots."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_mode_runs_and_times_both_trees():
    completed = subprocess.run([sys.executable, "-m", "benchmarks.compare_trees", ROOT, "--rounds", "1", "--quick"],
                               cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| cost")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "cost 0 us, 90,000 elements", "cost 1 us, 40,000 elements", "cost 100 us, 400 elements"]
    assert all(row.count(" / ") == 2 and row.count(" s |") == 2 for row in rows)  # cold / warm for each tree
