"""numpy arrays in Redis: an array store and a replay buffer on streams.

Needs the ``redis`` extra (``pip install 'chunkmap[redis]'``). Both classes pickle as their
constructor arguments, so they can be handed to worker processes and dask workers.

- :class:`RedisArrayStore` -- put/get arrays by key, many per round trip, delete by prefix.
- :class:`ReplayBuffer` -- many producers append steps (dicts of arrays) to a bounded stream;
  trainers read new steps or the latest N as stacked arrays.
"""

from __future__ import annotations

from .replay import ReplayBuffer
from .store import RedisArrayStore

__all__ = ["RedisArrayStore", "ReplayBuffer"]
