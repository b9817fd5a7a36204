"""pids: a zombie is dead, a PID with another start time is another process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from chunkmap.shm import pids


def test_running_process_is_alive_and_keeps_its_start_time():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = pids.start_time(proc.pid)
        assert started > 0 and pids.alive(proc.pid, started) and pids.alive(proc.pid)
        assert not pids.alive(proc.pid, started + 1)  # the PID now names another process
    finally:
        proc.kill()
        proc.wait()


def test_zombie_is_dead_and_reaped_process_too():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pids.alive(proc.pid) and time.monotonic() < deadline:  # exited, not reaped: a zombie
        time.sleep(0.01)
    os.kill(proc.pid, 0)  # which os.kill still finds
    assert not pids.alive(proc.pid)
    proc.wait()
    assert not pids.alive(proc.pid) and pids.start_time(proc.pid) == 0
