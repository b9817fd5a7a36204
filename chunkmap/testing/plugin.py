"""pytest fixtures of chunkmap's test kit: a real ``redis-server`` for the tests of a store.

Use them with ``pytest_plugins = ["chunkmap.testing.plugin"]`` in your top-level
``conftest.py``, or import the ones you need into any ``conftest.py``::

    from chunkmap.testing.plugin import redis_server, redis_url  # noqa: F401

``redis_url`` is the address of one server for the whole session (``redis://127.0.0.1:<port>/0``,
a free port, no persistence), ``redis_server`` the :class:`~chunkmap.redis.server.RedisServer`
itself. Without a redis-server the tests that need one fail under CI (``CI=true``) and are
skipped elsewhere, with a message saying how to install it; a ``conftest.py`` may override
``redis_executable`` to find or install one first. This module imports pytest (it is a pytest
plugin); :mod:`chunkmap.testing` itself does not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["redis_executable", "redis_server", "redis_url", "require_redis_server"]


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_redis_server() -> str:
    """The path of ``redis-server``; without one, fail the calling test under CI and skip it elsewhere."""
    from ..redis.server import find_redis_server

    found = find_redis_server()
    if found is None:
        message = ("redis-server not found on PATH or in /usr/bin, /usr/sbin, /usr/local/bin; install it "
                   "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)")
        if _under_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """The path of the ``redis-server`` the other fixtures start (see :func:`require_redis_server`)."""
    return require_redis_server()


@pytest.fixture(scope="session")
def redis_server(redis_executable: str) -> Iterator[Any]:
    """One real redis-server for the session, on a free loopback port, without persistence."""
    from ..redis.server import RedisServer

    with RedisServer(redis_executable) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: Any) -> str:
    """The URL of :func:`redis_server`: ``redis://127.0.0.1:<port>/0``."""
    return redis_server.url
