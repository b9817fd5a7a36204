"""A real redis-server for the Redis tests: started on a free loopback port, stopped at the end.

When redis-server is missing it is installed with apt-get if we are root; if it is still
missing the tests fail under CI (CI=true) and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from chunkmap.redis.server import RedisServer, find_redis_server


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _ensure_redis_server() -> str:
    exe = find_redis_server()
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, check=False, timeout=600)
        exe = find_redis_server()
    if exe is None:
        msg = "redis-server not found (install Debian's redis-server package: apt-get install redis-server)"
        if _under_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="session")
def redis_exe() -> str:
    return _ensure_redis_server()


@pytest.fixture(scope="session")
def redis_server(redis_exe):
    """One redis-server shared by the session (no persistence)."""
    server = RedisServer(redis_exe).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def own_server(redis_exe):
    """A redis-server of this test's own (append-only file on), which the test may kill."""
    servers: list[RedisServer] = []

    def make(**kwargs) -> RedisServer:
        s = RedisServer(redis_exe, **kwargs).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def namespace() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"
