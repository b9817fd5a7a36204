"""Whole programs: nothing left in /dev/shm and no resource-tracker warning, whatever the exit.

Each scenario runs in a fresh interpreter so that its resource tracker's output can be read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from chunkmap.shm import SharedArray, segment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

PROGRAM = """
import multiprocessing, os, sys, time
sys.path.insert(0, {here!r})
import numpy as np
import shm_workers as w
from chunkmap.shm import SharedArray, SlotPool
from chunkmap.shm.demo import run_pipeline

if __name__ == "__main__":
    method, end = sys.argv[1], sys.argv[2]
    sa = SharedArray.from_array(np.zeros(100))
    if end == "bare":  # no multiprocessing object (its semaphores would outlive a killed tree)
        extra = SharedArray.create(10)
        print(sa.name, extra.name, flush=True)
        print("ready", flush=True)
        time.sleep(120)
    pool = SlotPool(2, (10,), "f4")
    print(sa.name, pool._slots[0].name, pool._state.name, flush=True)
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as workers:                       # attach in workers (they unpickle)
        workers.map(w.add_one, [sa] * 4, chunksize=1)
        workers.map(w.mappings_after_attach, [pool._slots[0]] * 4, chunksize=1)
    assert run_pipeline(items=6, shape=(1000,), start_method=method, timeout=30).ok
    print("ready", flush=True)
    if end == "raise":
        raise RuntimeError("the program failed")
    if end == "exit":
        sys.exit(3)
    if end == "sleep":
        time.sleep(120)
"""


def run(tmp_path, method, end, **kw):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM.format(here=HERE))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(
        [sys.executable, str(script), method, end], cwd=str(tmp_path), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def exists(name):
    return os.path.exists(os.path.join(segment.DEV_SHM, name))


@pytest.mark.parametrize(("method", "end", "code"), [("fork", "normal", 0), ("spawn", "raise", 1), ("fork", "exit", 3)])
def test_exit_leaves_nothing_and_no_warning(tmp_path, method, end, code):
    proc = run(tmp_path, method, end)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    names = out.split()[:3]
    assert len(names) == 3 and "ready" in out
    assert not any(exists(n) for n in names)
    assert "leaked" not in err and "resource_tracker" not in err and "Warning" not in err, err
    if end == "raise":
        assert "RuntimeError: the program failed" in err


def test_sigkill_of_owner(tmp_path):
    """The resource tracker unlinks the owner's segments (and says so, which is fair)."""
    proc = run(tmp_path, "fork", "sleep")
    names = proc.stdout.readline().split()
    assert proc.stdout.readline().strip() == "ready"
    assert all(exists(n) for n in names)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 30
    while any(exists(n) for n in names) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(exists(n) for n in names)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert "leaked shared_memory" in err and "No such file" not in err, err


def test_sigkill_of_owner_and_tracker_is_swept_by_next_creator(tmp_path, monkeypatch):
    proc = run(tmp_path, "fork", "bare", start_new_session=True)
    names = proc.stdout.readline().split()
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGKILL)  # the program and its resource tracker
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()
    time.sleep(0.2)
    assert all(exists(n) for n in names)  # nobody was left to clean up...
    monkeypatch.setattr(segment, "_SWEPT", set())
    with SharedArray.create(1):  # ...until the next segment is created in /dev/shm
        assert not any(exists(n) for n in names)


def test_sigkill_of_owner_with_file_fallback_is_swept(tmp_path, monkeypatch):
    monkeypatch.setenv(segment.ENV_DIR, str(tmp_path))
    proc = run(tmp_path, "fork", "bare")
    names = proc.stdout.readline().split()
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.communicate(timeout=30)
    assert all(os.path.exists(n) for n in names)  # the tracker does not know files
    monkeypatch.setattr(segment, "_SWEPT", set())
    with SharedArray.create(1) as sa:
        assert not any(os.path.exists(n) for n in names)
        assert os.path.dirname(sa.name) == str(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["program.py"]


def test_unrelated_process_attaching_does_not_unlink(tmp_path):
    """A process with its own resource tracker (a dask worker, a script) attaches and exits:
    with ``SharedMemory`` on Python <= 3.12 its tracker would unlink the segment and warn."""
    code = (
        "import sys, numpy as np\n"
        "from multiprocessing import resource_tracker\n"
        "resource_tracker.ensure_running()\n"  # its own tracker, as any Python process may have
        "from chunkmap.shm import SharedArray\n"
        "sa = SharedArray.attach(sys.argv[1], 10, 'f8')\n"
        "sa.array[:] += 1\n"
        "print(sa.array.sum())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    with SharedArray.create(10) as sa:
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", code, sa.name], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert exists(sa.name) and sa.array.sum() == 20.0


SURVIVOR = """
import os, sys, time
from chunkmap.shm import SharedArray

if __name__ == "__main__":
    sa = SharedArray.create(100)
    child = os.fork()              # shares the resource tracker, so the tracker outlives the kill
    if child == 0:
        time.sleep(120)
        os._exit(0)
    print(sa.name, child, flush=True)
    time.sleep(120)
"""


def test_sigkill_of_owner_while_its_tracker_lives_gives_only_the_documented_warning(tmp_path, monkeypatch):
    """Another process's sweep leaves a killed owner's segment to its still-running tracker,
    which unlinks it with its one "leaked shared_memory" warning (and no "No such file")."""
    script = tmp_path / "survivor.py"
    script.write_text(SURVIVOR)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        name, child = proc.stdout.readline().split()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        monkeypatch.setattr(segment, "_SWEPT", set())
        with SharedArray.create(1):  # the sweep: the creator is dead, but its tracker is not
            assert exists(name)
        os.kill(int(child), signal.SIGKILL)  # the last process sharing the tracker: it cleans up
        _, err = proc.communicate(timeout=60)  # stderr ends when the tracker has exited
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not exists(name)
    assert err.count("leaked shared_memory") == 1, err
    assert "No such file" not in err and err.count("UserWarning") == 1, err
