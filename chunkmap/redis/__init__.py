"""numpy arrays in Redis: an array store and a replay buffer on streams.

Needs the ``redis`` extra (``pip install 'chunkmap[redis]'``). Both classes pickle as their
constructor arguments, so they can be handed to worker processes and dask workers.

- :class:`RedisArrayStore` -- put/get arrays by key, many per round trip, delete by prefix.
- :class:`ReplayBuffer` -- many producers append steps (dicts of arrays) to a bounded stream;
  trainers read new steps or the latest N as stacked arrays.
- :data:`DEFAULT_TIMEOUT` -- seconds both wait for a connection and for each read or write
  unless given ``socket_timeout=`` / ``socket_connect_timeout=``; a timeout raises
  :class:`~chunkmap.errors.StoreTimeoutError` once, without a retry.
"""

from __future__ import annotations

from ._client import DEFAULT_TIMEOUT
from .replay import ReplayBuffer
from .store import RedisArrayStore

__all__ = ["RedisArrayStore", "ReplayBuffer", "DEFAULT_TIMEOUT"]
