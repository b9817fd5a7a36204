"""One run at a time into an ``output=`` store: a second live client is refused, a dead one's store is taken over.

The clients are real processes; their function waits for a "go" file, so that the first run is
still running (holding the store) when the second one opens it, however loaded the machine is.
Every store is read back with zarr and compared with the serial loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import zarr

import chunkmap
from chunkmap.errors import ElementError, OutputStoreError
from chunkmap.output_lease import ATTRIBUTE
from chunkmap.testing import serial_reference

CLIENT = """
import os, sys, time
import numpy as np
import chunkmap

GO = sys.argv[2]

def gated_sum(x, y):
    open(GO + ".started", "a").close()  # the run is computing
    while not os.path.exists(GO):
        time.sleep(0.005)
    if x < -1:
        raise ValueError("below -1")
    return x + y

rng = np.random.default_rng(5)
a, b = rng.normal(size=(30, 20)), rng.normal(size=(20,))
result = chunkmap.run(gated_sum, a, b, skip=ValueError, scheduler="threads", workers=2, progress=False,
                      output=sys.argv[1], chunks=60)
print(result.stats.resumed, result.stats.computed, result.stats.failed)
"""


def plain_sum(x, y):
    if x < -1:
        raise ValueError("below -1")
    return x + y


def client(store, go) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(CLIENT), str(store), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holder_of(store) -> dict | None:
    """The lease attribute of the store's group, read from its zarr.json without zarr (None when absent)."""
    try:
        with open(os.path.join(store, "zarr.json")) as metadata:
            return json.load(metadata).get("attributes", {}).get(ATTRIBUTE)
    except (OSError, ValueError):
        return None


def wait_for(condition, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def assert_serial(store) -> None:
    """The store holds what the serial loop computes for CLIENT's inputs."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(30, 20)), rng.normal(size=(20,))
    reference = serial_reference(plain_sum, a, b, skip=ValueError)
    values = np.full(a.shape, np.nan)
    values[reference.coords] = reference.values
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["values"][...], values)
    assert (np.asarray(group["status"][...]) == 2).sum() == len(reference.failures)
    assert (np.asarray(group["boxes"][...])[:, 0] >= 0).all()


def test_two_clients_at_once_one_is_refused_and_the_store_equals_the_serial_loop(tmp_path):
    store, go = tmp_path / "out.zarr", tmp_path / "go"
    first, second = client(store, go), client(store, go)
    wait_for(lambda: first.poll() is not None or second.poll() is not None)
    refused, winner = (first, second) if first.poll() is not None else (second, first)
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 1 and "OutputStoreError" in stderr, stderr[-2000:]
    assert f"is being written by another run: process {winner.pid} on host" in stderr, stderr[-2000:]
    assert "started 20" in stderr and "pass another output= path" in stderr
    assert holder_of(store)["pid"] == winner.pid  # the refused run left the record as it was
    go.touch()
    stdout, stderr = winner.communicate(timeout=120)
    assert winner.returncode == 0, stderr[-2000:]
    assert stdout.split()[0] == "0"  # nothing resumed: the refused run wrote nothing
    assert holder_of(store) is None  # released at the end
    assert_serial(store)
    again = client(store, go)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr[-2000:]
    resumed, computed, failed = map(int, stdout.split())
    assert resumed == computed + failed == 600  # every box taken from the store, none written twice


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_or_interrupted_holder_leaves_a_store_the_rerun_takes_over(tmp_path, stop):
    store, go = tmp_path / "out.zarr", tmp_path / "go"
    holder = client(store, go)
    wait_for(lambda: os.path.exists(f"{go}.started"))
    assert holder_of(store)["pid"] == holder.pid
    holder.send_signal(stop)
    if stop == signal.SIGKILL:
        holder.wait(60)
        assert holder.returncode == -signal.SIGKILL
        assert holder_of(store)["pid"] == holder.pid  # a killed holder cannot clean up: its record stays
    else:
        wait_for(lambda: holder_of(store) is None, 60)  # Ctrl-C released the store (its threads still wait)
    go.touch()
    _, stderr = holder.communicate(timeout=60)
    if stop == signal.SIGINT:
        assert holder.returncode in (1, -signal.SIGINT) and "KeyboardInterrupt" in stderr, stderr[-2000:]
        assert "finished boxes are kept in output=" in stderr
    rerun = client(store, go)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr[-2000:]
    assert holder_of(store) is None
    assert_serial(store)


def sum_failing_once(x, y):
    if x == 20 and os.environ.pop("CHUNKMAP_TEST_FAIL", None):  # state outside the run's identity
        raise KeyError("an error not in skip=")
    return plain_sum(x, y)


def test_a_run_that_fails_releases_the_store_for_the_next(tmp_path, monkeypatch):
    a = np.arange(-3.0, 30.0)
    monkeypatch.setenv("CHUNKMAP_TEST_FAIL", "1")
    with pytest.raises(ElementError, match="KeyError"):
        chunkmap.run(sum_failing_once, a, 1.0, skip=ValueError, scheduler="threads", progress=False,
                     output=tmp_path / "o.zarr", chunks=5)
    assert holder_of(tmp_path / "o.zarr") is None
    result = chunkmap.run(sum_failing_once, a, 1.0, skip=ValueError, scheduler="threads", progress=False,
                          output=tmp_path / "o.zarr", chunks=5)
    assert (result.stats.computed, result.stats.failed) == (31, 2)
    assert 0 < result.stats.resumed < 33  # the boxes finished before the error were kept
    with pytest.raises(OutputStoreError, match="another call"):  # refused for what it holds, not as busy
        chunkmap.run(plain_sum, a + 1, 1.0, skip=ValueError, scheduler="sync", progress=False,
                     output=tmp_path / "o.zarr")
    assert holder_of(tmp_path / "o.zarr") is None


def blocked(x, y):
    """x + y once the file named by CHUNKMAP_TEST_GO exists (state outside the run's identity)."""
    go = os.environ["CHUNKMAP_TEST_GO"]
    open(go + ".started", "a").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    return x + y


def test_a_store_in_memory_is_held_by_its_record(tmp_path, monkeypatch):
    """Not a folder: the holder record alone guards it; a live holder refuses, a dead one's record is taken over."""
    memory = zarr.storage.MemoryStore()
    go = tmp_path / "go"
    monkeypatch.setenv("CHUNKMAP_TEST_GO", str(go))
    first = threading.Thread(target=chunkmap.run, args=(blocked, np.arange(10.0), 1.0),
                             kwargs={"scheduler": "threads", "progress": False, "output": memory, "chunks": 5})
    first.start()
    try:
        wait_for(lambda: os.path.exists(f"{go}.started"))
        with pytest.raises(OutputStoreError, match=f"process {os.getpid()} on host .*delete the group attribute"):
            chunkmap.run(plain_sum, np.arange(10.0), 1.0, scheduler="sync", progress=False, output=memory)
    finally:
        go.touch()
        first.join(60)
    gone = subprocess.run([sys.executable, "-c", "import json; from chunkmap.checkpoint.lease import holder_record;"
                           "print(json.dumps(holder_record()))"], capture_output=True, text=True, check=True)
    group = zarr.open_group(memory)
    group.attrs[ATTRIBUTE] = json.loads(gone.stdout)  # the record of a process that has exited
    result = chunkmap.run(blocked, np.arange(10.0), 1.0, scheduler="threads", progress=False, output=memory,
                          chunks=5)
    assert result.stats.resumed == 10
    assert ATTRIBUTE not in zarr.open_group(memory).attrs
