"""Start a throwaway ``redis-server`` for tests, benchmarks and demos.

``with RedisServer() as server:`` starts one on a free loopback port in a temporary directory
(``server.url`` is its address) and stops it and removes the directory on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import StoreConnectionError
from ..system import free_port

__all__ = ["find_redis_server", "free_port", "RedisServer"]

_SEARCH = ("/usr/bin", "/usr/sbin", "/usr/local/bin")


def find_redis_server(name: str = "redis-server") -> str | None:
    """Return the path of ``name`` on PATH or in /usr/bin, /usr/sbin, /usr/local/bin, or None."""
    found = shutil.which(name)
    if found:
        return found
    for d in _SEARCH:
        p = Path(d, name)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


class RedisServer:
    """A ``redis-server`` on a free loopback port, in its own temporary directory.

    Parameters
    ----------
    executable : str, optional
        Path of redis-server (default: :func:`find_redis_server`).
    persist : bool, default False
        Keep an append-only file (``appendfsync always``) so that a restarted server sees
        what was acknowledged; otherwise ``--save '' --appendonly no``.
    args : sequence of str
        More ``redis-server`` arguments.
    port : int, optional
        Default: a free port.
    """

    def __init__(
        self,
        executable: str | None = None,
        *,
        persist: bool = False,
        args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        exe = executable or find_redis_server()
        if exe is None:
            raise FileNotFoundError(
                "redis-server not found on PATH or in /usr/bin, /usr/sbin; install it "
                "(Debian/Ubuntu: apt-get install redis-server)"
            )
        self.executable = exe
        self.persist = persist
        self.extra = list(args)
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="chunkmap-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--logfile", "redis.log"]
        if self.persist:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv + self.extra

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.proc = subprocess.Popen(
            self._argv(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StoreConnectionError(f"redis-server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # NOAUTH: requirepass
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise StoreConnectionError(f"redis-server did not answer on port {self.port} in {timeout} s")
            time.sleep(0.02)

    def log(self) -> str:
        """The server's log so far."""
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def pause(self) -> None:
        """Stop the server process (SIGSTOP): it no longer reads its sockets."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
