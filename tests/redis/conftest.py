"""The Redis tests' servers: the kit's session server (chunkmap.testing.plugin), servers of a test's own.

When redis-server is missing it is installed with apt-get if we are root; if it is still
missing the tests fail under CI (CI=true) and are skipped elsewhere, saying how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from chunkmap.redis.server import RedisServer, find_redis_server
from chunkmap.testing.plugin import redis_server, redis_url, require_redis_server  # noqa: F401


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """The kit's fixture, after installing Debian's redis-server package when it is missing and we are root."""
    if find_redis_server() is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, check=False, timeout=600)
    return require_redis_server()


@pytest.fixture
def own_server(redis_executable):
    """A redis-server of this test's own, which the test may kill: ``own_server(persist=..., args=...)``."""
    servers: list[RedisServer] = []

    def make(**kwargs) -> RedisServer:
        server = RedisServer(redis_executable, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def namespace() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"
