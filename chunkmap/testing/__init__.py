"""Test kits shipped with chunkmap, for its own test suite and for anyone writing a store.

- :class:`ChunkStoreTests` -- the conformance suite of a checkpoint store
  (:class:`~chunkmap.checkpoint.ChunkStore`). The directory, memory and Redis stores pass it.
- :class:`ArrayStoreTests` -- the conformance suite of an array store (numpy arrays under keys,
  as :class:`chunkmap.redis.RedisArrayStore`, which passes it).
- :func:`serial_reference` -- what :func:`chunkmap.run` must return (coordinates, values and
  their dtype, failures), computed by the seed's plain serial loop, independently of chunkmap's
  engine; :func:`assert_matches_reference` compares a :class:`~chunkmap.Result` with it.
- :mod:`chunkmap.testing.plugin` -- pytest fixtures starting a real ``redis-server``
  (``redis_server``, ``redis_url``).
- :func:`free_port` -- a free loopback port, for servers and schedulers started by tests.

The seed's inputs (two float arrays, ~10% sentinels ``-1e11`` in the first, masked with
``a1 <= -1e10``) are :func:`chunkmap.cli.demo.make_inputs`.

A suite is used by subclassing it in a pytest module and saying how to make a fresh, empty
store::

    from chunkmap.testing import ChunkStoreTests

    class TestMyStore(ChunkStoreTests):
        def make_store(self):
            return MyStore(...)

Importing this package needs numpy only (pytest is imported when a test runs; redis-py never).
"""

from __future__ import annotations

from ..system import free_port
from .reference import (
    Reference,
    assert_matches_reference,
    serial_reference,
    values_array,
)
from .stores import ArrayStoreTests, ChunkStoreTests

__all__ = ["ArrayStoreTests", "ChunkStoreTests", "Reference", "assert_matches_reference", "free_port",
           "serial_reference", "values_array"]
