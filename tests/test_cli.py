"""The demo job and the command line, run as a user would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from chunkmap.cli import demo
from chunkmap.stub import slowlib
from chunkmap.testing import serial_reference


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chunkmap", *args], capture_output=True, text=True, timeout=120)


def counts(output: str) -> dict[str, int]:
    found = re.findall(r"^(elements|masked|computed|failed)\s+([\d,]+)", output, re.M)
    return {name: int(value.replace(",", "")) for name, value in found}


def reference_counts(size: int, seed: int = 0) -> dict[str, int]:
    """The seed's serial loop over the demo's inputs."""
    a1, a2 = demo.make_inputs(size, seed)
    expected = serial_reference(slowlib.slow_computation, a2, a1, mask=a1 <= demo.MASK_BELOW, skip=slowlib.InternalError)
    return {"elements": a1.size, "masked": expected.masked, "computed": len(expected.values),
            "failed": len(expected.failures)}


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_demo_prints_the_reference_counts(scheduler):
    completed = run_cli("demo", "--size", "80", "--cost-ns", "0", "--scheduler", scheduler, "--seed", "3")
    assert completed.returncode == 0, completed.stderr
    assert counts(completed.stdout) == reference_counts(80, seed=3)
    assert re.search(r"^time\s+[\d.]+ s$", completed.stdout, re.M)
    assert re.search(r"^rate\s+[\d,]+ calls/s$", completed.stdout, re.M)
    assert f"scheduler={scheduler}" in completed.stdout


def test_demo_cost_reaches_worker_processes():
    """At 2 ms per call, 40 unmasked calls on 2 workers cannot finish in under 40 ms."""
    completed = run_cli("demo", "--size", "7", "--cost-ns", "2000000", "--scheduler", "processes")
    assert completed.returncode == 0, completed.stderr
    found = counts(completed.stdout)
    calls = found["computed"] + found["failed"]
    seconds = float(re.search(r"^time\s+([\d.]+) s$", completed.stdout, re.M).group(1))
    assert seconds >= calls * 0.002 / os.cpu_count()


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--scheduler", "gpu"], "unknown scheduler 'gpu'"),
        (["demo", "--size", "0"], "expected a positive integer; got 0"),
        (["demo", "--cost-ns", "-1"], "expected an integer >= 0; got -1"),
        (["demo", "--chunks", "many"], "expected 'auto' or a positive integer; got many"),
        (["demo", "--size", "big"], "expected a positive integer; got big"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message):
    completed = run_cli(*args)
    assert completed.returncode == 2
    assert message in completed.stderr


def test_the_chunkmap_command_is_installed():
    script = shutil.which("chunkmap", path=os.path.dirname(sys.executable)) or shutil.which("chunkmap")
    assert script, "pip install should put the chunkmap command next to python"
    completed = subprocess.run([script, "demo", "--size", "20", "--scheduler", "sync"], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0 and counts(completed.stdout) == reference_counts(20)
