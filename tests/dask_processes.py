"""Real dask processes for the tests: the `dask` command, and starting, waiting for and stopping them.

A module of its own (not conftest) so that test modules import it by a name no other folder's
conftest shadows.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from distributed import Client


def dask_command() -> list[str]:
    """The `dask` command line of this Python, whether or not its script is on PATH."""
    script = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    return [script] if script else [sys.executable, "-m", "distributed.cli.dask_spec"]


def die_with_parent() -> None:
    """In the child: have Linux send SIGTERM if the test process dies without tearing down."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_workers(address: str, count: int, logs) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout="2s") as client:
                client.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dask cluster did not start; see the logs in {logs}") from None
            time.sleep(0.5)
