"""Is a process still there? PID liveness that sees through zombies and reused PIDs.

``os.kill(pid, 0)`` succeeds for a *zombie* -- a process that has exited but was not yet reaped
by its parent, which in a container whose PID 1 does not reap is forever -- so on Linux the
process's state is read from ``/proc/<pid>/stat`` instead. A process is also identified by its
start time (in clock ticks since boot, from the same file), so that a new process that happens
to get a dead one's PID is not taken for it. Without ``/proc`` (macOS), ``os.kill`` is the
answer and start times are 0.

>>> import os
>>> alive(os.getpid(), start_time(os.getpid()))
True
"""

from __future__ import annotations

import os

__all__ = ["alive", "namespace", "start_time"]


def namespace() -> int:
    """This process's PID namespace (the inode of ``/proc/self/ns/pid``; 0 if unknown).

    PIDs of processes in other namespaces (containers sharing /dev/shm) mean nothing here.
    """
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        return []  # no such process
    except OSError:
        return None  # no /proc: ask the kernel another way
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int) -> int:
    """When process ``pid`` started, in clock ticks since boot (0 if unknown or not running)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else 0


def alive(pid: int, started: int = 0) -> bool:
    """True if process ``pid`` exists and has not exited (a zombie has).

    Parameters
    ----------
    pid : int
        The process.
    started : int
        Its :func:`start_time` when it was known to be alive; 0 skips the check (a process now
        holding ``pid`` with another start time is a different one, and ``pid`` is dead).
    """
    fields = _stat_fields(pid)
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if not fields or fields[0] in ("Z", "X", "x"):
        return False
    return not started or len(fields) <= 19 or int(fields[19]) == started
