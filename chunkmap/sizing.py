"""How big the chunks of ``chunks="auto"`` are: from a timed pilot of the function on real elements.

No scheduler of its own: :func:`pilot` is handed the backend's ``execute`` (as toolz's ``fold``
takes ``map=``); the rest is numpy-free arithmetic. A run starts with pilot rounds: each round gives every
worker one chunk of ``k`` elements (``k`` = 1, 8, 64, ...) and is timed by its slowest chunk,
measured where the chunk ran (so the cost of starting and ending a round, which the rest of the
run pays once, is left out); the rounds stop when one takes :data:`PILOT_SECONDS` (the first
round aside). Their results are kept, so the pilot costs no extra calls, and all
workers are busy during it. The first round only warms up (imports, starting worker processes);
the others give the function's time per call ``t`` (timed around the per-element loop itself) and
the overhead per task ``o`` (the rest of each task's time), see :func:`fit`.
The rest of the run is then cut into chunks of :func:`auto_chunk_size` elements, the last ones
shrinking so that the workers finish together (:func:`chunkmap.plan.layout_ends`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from .kernel import ChunkOutput
    from .plan import Chunk, Plan

__all__ = ["PILOT_SECONDS", "PILOT_GROWTH", "pilot", "measured", "fit", "auto_chunk_size"]

#: a pilot round this long (seconds) measures the function well enough
PILOT_SECONDS = 0.02
#: elements per task grow by this factor from one pilot round to the next
PILOT_GROWTH = 8
#: a pilot round this long (seconds) needs no further round: per-task overhead cannot matter
LONG_ROUND = 1.0
#: per-task overhead may cost at most this share of a chunk's time
OVERHEAD_SHARE = 0.01
#: chunks per worker aimed for, so that the last chunks end together (tail under ~2%)
BALANCE_CHUNKS = 32
#: the longest a chunk may take (seconds): progress and checkpoints stay frequent
MAX_CHUNK_SECONDS = 30.0
#: the most elements in a chunk, bounding the memory of chunks in flight
MAX_CHUNK_ELEMENTS = 1 << 20


def pilot(
    plan: Plan,
    workers: int,
    execute: Callable[[list[Chunk], Callable[[ChunkOutput], None]], None],
    deliver: Callable[[ChunkOutput], None],
) -> tuple[list[int], int]:
    """Run pilot rounds of ``plan`` and size the rest: the layout ``(head ends, chunk size)``.

    ``execute(chunks, deliver)`` evaluates chunks on the run's backend; each pilot output goes
    to ``deliver`` (it is part of the result). A plan the pilot finishes has one chunk size, its
    element count.
    """
    head: list[int] = []
    rounds: list[tuple[int, float]] = []
    tasks: list[tuple[int, float, float]] = []
    per_task = 1
    while not head or head[-1] < plan.unmasked:
        done = head[-1] if head else 0
        ends = sorted({min(done + per_task * (i + 1), plan.unmasked) for i in range(workers)})
        outputs: list[ChunkOutput] = []
        execute(plan.head_chunks(head + ends)[len(head):], outputs.append)
        for output in outputs:
            deliver(output)
        if rounds:  # the first round warms up (worker start, imports)
            tasks += _timings(outputs)
        rounds.append((per_task, max(output.seconds for output in outputs)))
        head += ends
        if measured(rounds):
            break
        per_task *= PILOT_GROWTH
    remaining = plan.unmasked - head[-1]
    if not remaining:
        return head, plan.unmasked
    per_call, overhead = fit(tasks or _timings(outputs))
    return head, auto_chunk_size(per_call, overhead, remaining, workers)


def _timings(outputs: list[ChunkOutput]) -> list[tuple[int, float, float]]:
    """``(elements, seconds, loop seconds)`` of each output, as :func:`fit` takes them."""
    return [(len(output.flat_index), output.seconds, output.evaluation.seconds) for output in outputs]


def measured(rounds: Sequence[tuple[int, float]]) -> bool:
    """Whether the pilot rounds so far (the first one is a warm-up) time the function well enough.

    Enough when the last round took :data:`PILOT_SECONDS` and at least twice the one before (the
    calls, not the fixed overhead, dominate it), or when it took :data:`LONG_ROUND` seconds.

    Examples
    --------
    >>> measured([(1, 0.3), (8, 0.021)]), measured([(1, 0.3), (8, 0.021), (64, 0.05)])
    (False, True)
    >>> measured([(1, 1.0), (8, 8.0)])
    True
    """
    if len(rounds) < 2:
        return False
    seconds = rounds[-1][1]
    if seconds >= LONG_ROUND:
        return True
    return len(rounds) >= 3 and seconds >= PILOT_SECONDS and seconds >= 2 * rounds[-2][1]


def fit(tasks: Sequence[tuple[int, float, float]]) -> tuple[float, float]:
    """Seconds per call ``t`` and per-task overhead ``o`` from pilot tasks.

    Each task is ``(elements, seconds, loop seconds)``: how long it took where it ran, and how
    much of that the per-element loop took. ``t`` is the loop time per element over all tasks
    (the big ones dominate); ``o`` the median of what each task spent outside its loop (reading
    and sending its inputs, its result): medians and sums, so that one hiccup on a busy machine
    does not skew the chunk size.

    Examples
    --------
    >>> t, o = fit([(8, 0.0010 + 8e-6, 8e-6), (64, 0.0012 + 64e-6, 64e-6), (64, 0.0090 + 64e-6, 64e-6)])
    >>> round(t * 1e6, 3), round(o * 1e3, 3)
    (1.0, 1.2)
    """
    elements = sum(count for count, _, _ in tasks)
    per_call = sum(loop for _, _, loop in tasks) / max(elements, 1)
    outside = sorted(max(seconds - loop, 0.0) for _, seconds, loop in tasks)
    overhead = outside[len(outside) // 2] if outside else 0.0
    return per_call, overhead


def auto_chunk_size(per_call: float, overhead: float, remaining: int, workers: int) -> int:
    """Elements per chunk for ``remaining`` elements of ``per_call`` seconds on ``workers`` workers.

    A chunk lasts long enough that the per-task ``overhead`` stays under 1% of it, short enough
    for :data:`BALANCE_CHUNKS` chunks per worker (at least 2) and at most
    :data:`MAX_CHUNK_SECONDS`; and it holds at most :data:`MAX_CHUNK_ELEMENTS` elements.

    Examples
    --------
    >>> auto_chunk_size(1.0, 0.001, 40, 2)            # 1 s calls: one per chunk
    1
    >>> auto_chunk_size(100e-6, 0.0003, 40_000, 2)    # 100 us calls: 64 chunks of 625
    625
    >>> auto_chunk_size(150e-9, 0.001, 9_000_000, 2)  # cheap calls: overhead decides
    666666
    """
    per_call = max(per_call, 1e-9)
    per_worker = remaining * per_call / max(workers, 1)
    duration = max(overhead / OVERHEAD_SHARE, per_worker / BALANCE_CHUNKS)
    duration = min(duration, per_worker / 2, MAX_CHUNK_SECONDS)
    return max(1, min(int(duration / per_call), MAX_CHUNK_ELEMENTS))
