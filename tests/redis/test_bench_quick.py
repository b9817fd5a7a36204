"""The Redis benchmarks' quick modes run, so that they cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_quick(module: str) -> str:
    """The standard output of ``python -m <module> --quick``, which must succeed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_bench_redis_quick(redis_executable):
    stdout = run_quick("benchmarks.bench_redis")
    for needle in ("codec encode", "put p50", "get_many x64", "vs redis-benchmark SET", "seed + redis-py"):
        assert needle in stdout


@pytest.mark.slow
def test_bench_redis_checksum_quick(redis_executable):
    stdout = run_quick("benchmarks.bench_redis_checksum")
    for needle in ("checksum=False", "checksum=True", "put_many x64", "get_many x64", "checksum cost"):
        assert needle in stdout
