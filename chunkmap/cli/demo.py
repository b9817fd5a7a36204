"""The main job: the seed's problem end to end, on the bundled SWIG library.

Two 2-D float64 arrays, about 10% of the first set to the sentinel ``-1e11`` (masked with
``a1 <= -1e10``), and ``slowlib.slow_computation(a2[x, y], a1[x, y])`` at a chosen per-call
cost, skipping ``slowlib.InternalError``: exactly the seed's ``build_indexes`` loop, run by
:func:`chunkmap.run`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import core
from ..result import Result

__all__ = ["make_inputs", "run_demo", "report"]

SENTINEL = -1e11
MASK_BELOW = -1e10


def make_inputs(
    size: int | tuple[int, ...], seed: int = 0, masked_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The seed's inputs: ``a1, a2`` of shape ``(size, size)`` (or ``size``, a shape), sentinels in ``a1``.

    Uniform float64 values in [0, 1); about ``masked_fraction`` of ``a1`` is ``SENTINEL``
    (masked by ``a1 <= MASK_BELOW``). The test suite makes its seed-like inputs here too.

    Examples
    --------
    >>> a1, a2 = make_inputs(100)
    >>> a1.shape, round(float((a1 <= MASK_BELOW).mean()), 1)
    ((100, 100), 0.1)
    >>> make_inputs((2, 3, 4), seed=1)[1].shape
    (2, 3, 4)
    """
    shape = (size, size) if np.ndim(size) == 0 else tuple(size)
    rng = np.random.default_rng(seed)
    a1 = rng.random(shape)
    a2 = rng.random(shape)
    a1[rng.random(shape) < masked_fraction] = SENTINEL
    return a1, a2


def run_demo(
    size: int = 1000,
    cost_ns: int = 1000,
    scheduler: Any = None,
    chunks: int | str = "auto",
    seed: int = 0,
) -> Result:
    """Run the seed's job with chunkmap and return its :class:`~chunkmap.Result`."""
    from ..backends import resolve
    from ..stub import set_cost, slowlib

    a1, a2 = make_inputs(size, seed)
    with resolve(scheduler) as backend:
        client = getattr(backend, "client", None)
        set_cost(cost_ns, client)
        return core.run(
            slowlib.slow_computation,
            a2,
            a1,
            mask=a1 <= MASK_BELOW,
            skip=slowlib.InternalError,
            chunks=chunks,
            client=client,
            scheduler=None if client else backend.name,
        )


def report(result: Result, cost_ns: int = 0, title: str | None = None) -> str:
    """The demo's summary: a title line, then counts, time and rate, one per line.

    ``title`` replaces the demo's first line (``chunkmap run`` uses it; ``cost_ns`` only appears
    in the demo's title).
    """
    stats = result.stats
    shape = "x".join(map(str, result.shape))

    def share(count: int) -> str:
        return f"({count / stats.elements:.1%})" if stats.elements else ""

    if title is None:
        title = (
            f"chunkmap demo: slowlib.slow_computation over two {shape} float64 arrays, "
            f"{cost_ns / 1000:g} us per call, scheduler={stats.scheduler}"
        )
    lines = [
        title,
        f"elements  {stats.elements:>14,}",
        f"masked    {stats.masked:>14,}  {share(stats.masked)}",
        f"computed  {stats.computed:>14,}  {share(stats.computed)}",
        f"failed    {stats.failed:>14,}  {share(stats.failed)} {result.failures.summary()}",
        f"time      {stats.wall_time:>14.3f} s",
        f"rate      {stats.rate:>14,.0f} calls/s",
    ]
    return "\n".join(lines)
