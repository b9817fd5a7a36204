"""A toy environment simulator, for the replay-buffer notebook, tests and benchmark.

It lives in the package (not in the notebook) because ``spawn`` worker processes must import
the function they run.
"""

from __future__ import annotations

import numpy as np

from .replay import ReplayBuffer

__all__ = ["simulate"]


def simulate(buffer: ReplayBuffer, steps: int, seed: int = 0, shape: tuple[int, int] = (80, 80), batch: int = 16) -> int:
    """Play ``steps`` steps of a random-walk "game" and append them to ``buffer``.

    Each step is ``state`` (a uint16 frame of ``shape``), ``action`` (int64), ``reward``
    (float64) and ``worker`` (the seed). Steps are sent ``batch`` per round trip.

    Returns
    -------
    int
        The number of steps appended.

    Examples
    --------
    >>> class Collect(list):
    ...     def extend(self, steps):
    ...         super().extend(steps)
    >>> out = Collect()
    >>> simulate(out, 3, seed=1, shape=(4, 4))
    3
    >>> sorted(out[0]), out[0]["state"].shape
    (['action', 'reward', 'state', 'worker'], (4, 4))
    """
    rng = np.random.default_rng(seed)
    pos = np.array(shape) // 2
    pending = []
    for _ in range(steps):
        action = int(rng.integers(4))
        pos = (pos + [(0, 1), (1, 0), (0, -1), (-1, 0)][action]) % shape
        state = rng.integers(0, 64, size=shape, dtype=np.uint16)
        state[tuple(pos)] = 65535
        reward = float(-np.hypot(*(pos - np.array(shape) // 2)))
        pending.append({"state": state, "action": np.int64(action), "reward": reward, "worker": np.int64(seed)})
        if len(pending) >= batch:
            buffer.extend(pending)
            pending = []
    if pending:
        buffer.extend(pending)
    return steps
