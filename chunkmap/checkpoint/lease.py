"""Who holds a run's checkpoint: the holder record of a live run and the test of a dead one.

A run writes into its checkpoint only while it holds the run's *lease*, so two processes starting
the same call never interleave their records. Each store keeps the lease its own way (an
``flock`` on a directory, a key with a time to live in Redis) and stores the holder record that
this module builds: the host, process id and process start time of the run, so that a second run
can name the first in its error and a lease left by a killed process on this host is taken over
at once rather than after a timeout.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Any

__all__ = ["holder_record", "encode_holder", "decode_holder", "is_dead", "holder_text", "busy_message", "flock_within"]


def _start_ticks(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot ('' when unknown): with the
    pid it names one process, as pids are reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def holder_record() -> dict[str, Any]:
    """This process as a lease holder: host, pid, its start ticks and the time the lease was taken."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process": _start_ticks(pid), "since": time.time()}


def encode_holder(holder: dict[str, Any]) -> bytes:
    return json.dumps(holder, sort_keys=True).encode()


def decode_holder(data: bytes | None) -> dict[str, Any]:
    """A holder record read back; ``{}`` when absent or unreadable."""
    try:
        holder = json.loads(data or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def is_dead(holder: dict[str, Any]) -> bool:
    """Whether the holder is a process of this host that no longer runs (its lease is stale)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's process: alive
    return bool(holder.get("process")) and _start_ticks(pid) not in ("", holder["process"])


def flock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, retrying for ``seconds`` while another holds it; whether it was taken."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def holder_text(holder: dict[str, Any]) -> str:
    """Who a holder record names: ``process 123 on host h, started 2026-12-02 04:50:00``."""
    since = holder.get("since")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {started}"


def busy_message(location: str, run_id: str, holder: dict[str, Any]) -> str:
    return (
        f"another run of the same call holds the checkpoint {location} (run {run_id}): "
        f"{holder_text(holder)}. Wait for it "
        f"to finish (`chunkmap status {location}` shows its progress), stop it, or give this run "
        f"another checkpoint location"
    )
