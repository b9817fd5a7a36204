"""How big the chunks of ``chunks="auto"`` are: from a timed pilot of the function on real elements.

No scheduler of its own: :func:`pilot` is handed the backend's ``execute`` (as toolz's ``fold``
takes ``map=``); the rest is numpy-free arithmetic. A run starts with a pilot: generations of
chunks of ``k`` elements (``k`` = 1, 8, 64, ...), one chunk per worker each, timed where the chunk
ran (so the cost of starting and ending a task on the scheduler is left out); it stops when a
generation takes :data:`PILOT_SECONDS` (the first aside). Its results are kept, so the pilot costs
no extra calls. It is never a barrier across the workers: each completed chunk hands out the next
one at once (:class:`Pilot`), a generation is timed when half its chunks are done, and on a
cluster the chunks still running when the pilot has measured enough (:data:`RELEASE`) finish
while the rest of the run is already being handed out. The first generation only warms up
(imports, starting worker processes); the others give the function's time per call ``t`` (timed
around the per-element loop itself) and the overhead per task ``o`` (the rest of each task's
time), see :func:`fit`. The rest of the run is then cut into chunks of :func:`auto_chunk_size`
elements (long enough for the scheduler to keep every worker busy), the last ones shrinking so
that the workers finish together (:func:`chunkmap.plan.layout_ends`).
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from .kernel import ChunkOutput
    from .plan import Chunk, Plan

__all__ = ["PILOT_SECONDS", "PILOT_GROWTH", "RELEASE", "pilot", "Pilot", "measured", "fit", "dispatch_floor", "auto_chunk_size"]

#: a pilot round this long (seconds) measures the function well enough
PILOT_SECONDS = 0.02
#: elements per task grow by this factor from one pilot round to the next
PILOT_GROWTH = 8
#: a pilot round this long (seconds) needs no further round: per-task overhead cannot matter
LONG_ROUND = 1.0
#: per-task overhead may cost at most this share of a chunk's time
OVERHEAD_SHARE = 0.01
#: a task's latency (its time out less its time where it ran: the scheduler's round trip) at most this share
LATENCY_SHARE = 0.02
#: chunks per worker aimed for, so that the last chunks end together (tail under ~2%)
BALANCE_CHUNKS = 32
#: the longest a chunk may take (seconds): progress and checkpoints stay frequent
MAX_CHUNK_SECONDS = 30.0
#: the most elements in a chunk, bounding the memory of chunks in flight
MAX_CHUNK_ELEMENTS = 1 << 20
#: the scheduler's time to hand out one task (seconds): dask.distributed's is ~1 ms (a local one's less)
DISPATCH_SECONDS = 1e-3
#: the share of its time the scheduler may spend handing out chunks (so it keeps every worker busy)
DISPATCH_SHARE = 0.5
#: what the pilot's ``on_output`` returns once it has measured the function: a streaming backend
#: returns from ``execute`` at once, leaving the pilot's chunks in flight to the run's next ``execute``
RELEASE = type("Release", (), {"__repr__": lambda self: "sizing.RELEASE", "__slots__": ()})()


def pilot(
    plan: Plan,
    workers: int,
    execute: Callable[[list[Chunk], Callable[[ChunkOutput], Any]], None],
    deliver: Callable[[ChunkOutput], None],
) -> tuple[list[int], int]:
    """Run the pilot of ``plan`` and size the rest: the layout ``(head ends, chunk size)``.

    ``execute(chunks, on_output)`` evaluates chunks on the run's backend; each pilot output goes
    to ``deliver`` (it is part of the result). A plan the pilot finishes has one chunk size, its
    element count. The head may end with chunks handed to ``execute`` but not delivered (a
    streaming backend's chunks still in flight at :data:`RELEASE`, or a barrier backend's next
    round): they are the run's to execute, like the chunks after them.
    """
    state = Pilot(plan, workers, deliver)
    chunks = state.start()
    while chunks:
        state.sending(chunks)
        execute(chunks, state.on_output)
        chunks = [] if state.released else state.unrun()
    return state.layout()


class Pilot:
    """The pilot's state: generations of growing chunks, handed out one per completed chunk.

    Generation ``g`` is ``workers`` chunks of ``PILOT_GROWTH ** g`` elements, at most
    :data:`LONG_ROUND` seconds of calls at the time per call measured so far and half a worker's
    share of what is left, but at least the :func:`dispatch_floor` (on 1000 workers the scheduler
    needs ~1 s to hand out a generation: its chunks must last that long). :meth:`start` hands
    out generation 0; :meth:`on_output` (the ``deliver`` handed to ``execute``) records a chunk's
    timing and returns the next chunk to run, so that at most ``workers`` chunks are out at a
    time, or :data:`RELEASE` once the generations timed so far are :func:`measured`. A generation
    is timed when half its chunks are done (the median of those): the pilot never waits for its
    slowest chunk. A backend running returned chunks at once (distributed) streams the whole pilot
    in one ``execute``; one ignoring them (the local ones: a round costs them little) runs each
    generation as a round, the chunks returned during a round being the next one.
    """

    def __init__(self, plan: Plan, workers: int, deliver: Callable[[ChunkOutput], None],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.plan, self.workers, self.deliver, self.clock = plan, max(1, workers), deliver, clock
        self.ends: list[int] = []  # of every chunk laid out, handed out in order
        self.chunks: list[Chunk] = []
        self.handed = 0
        self.sizes: list[int] = []  # elements per chunk of each generation
        self.generation: list[int] = []  # of each chunk, by index
        self.done: list[list[float]] = []  # seconds of each generation's completed chunks
        self.laid: list[int] = []  # chunks of each generation
        self.tasks: list[tuple[int, float, float]] = []  # timings after generation 0 (the warm-up)
        self.first: list[tuple[int, float, float]] = []
        self.sent: dict[int, float] = {}  # when each chunk was handed out (perf_counter)
        self.latency: list[float] = []  # of each chunk after generation 0: its time out, less its time where it ran
        self.completed: set[int] = set()
        self.released = False
        self._lock = threading.Lock()

    def start(self) -> list[Chunk]:
        """Generation 0, one chunk per worker."""
        with self._lock:
            return self._hand(self.workers)

    def sending(self, chunks: list[Chunk]) -> None:
        """Note that ``chunks`` are being handed to the backend now (each round of a barrier backend)."""
        now = self.clock()
        with self._lock:
            self.sent.update((chunk.index, now) for chunk in chunks)

    def on_output(self, output: ChunkOutput) -> list[Chunk] | object:
        """Deliver ``output`` and record its timing: the next chunk to run, or :data:`RELEASE`."""
        self.deliver(output)
        with self._lock:
            timing = _timing(output)
            generation = self.generation[output.index]
            self.done[generation].append(timing[1])
            self.completed.add(output.index)
            (self.tasks if generation else self.first).append(timing)
            if generation:
                self.latency.append(max(self.clock() - self.sent[output.index] - output.seconds, 0.0))
            if self.released:
                return []
            if measured(self.rounds()):
                self.released = True
                return RELEASE
            return self._hand(1)

    def rounds(self) -> list[tuple[int, float]]:
        """``(elements per chunk, seconds)`` of the generations timed so far, in order."""
        rounds = []
        for size, laid, done in zip(self.sizes, self.laid, self.done):
            if 2 * len(done) < laid:
                break
            rounds.append((size, sorted(done)[len(done) // 2]))
        return rounds

    def unrun(self) -> list[Chunk]:
        """The chunks handed out without an output yet."""
        with self._lock:
            return [chunk for chunk in self.chunks[:self.handed] if chunk.index not in self.completed]

    def layout(self) -> tuple[list[int], int]:
        """``(head ends, chunk size)``: the chunks handed out, then :func:`auto_chunk_size` for the rest."""
        with self._lock:
            head = self.ends[:self.handed]
            remaining = self.plan.unmasked - head[-1]
            if not remaining:
                return head, self.plan.unmasked
            per_call, overhead = fit(self.tasks or self.first)
            latency = sorted(self.latency)[len(self.latency) // 2] if self.latency else 0.0
            return head, auto_chunk_size(per_call, overhead, remaining, self.workers, latency)

    def _hand(self, count: int) -> list[Chunk]:
        chunks: list[Chunk] = []
        while len(chunks) < count and (self.handed < len(self.chunks) or self._lay_generation()):
            chunks.append(self.chunks[self.handed])
            self.handed += 1
        now = self.clock()
        self.sent.update((chunk.index, now) for chunk in chunks)
        return chunks

    def _lay_generation(self) -> bool:
        """Lay out the next generation's chunks (False when the plan has no more elements)."""
        done = self.ends[-1] if self.ends else 0
        if done >= self.plan.unmasked:
            return False
        size = self.sizes[-1] * PILOT_GROWTH if self.sizes else 1
        elements = sum(count for count, _, _ in self.tasks + self.first)
        loop = sum(seconds for _, _, seconds in self.tasks + self.first)
        if loop > 0:
            per_call, left = loop / elements, self.plan.unmasked - done
            size = min(size, max(1, int(LONG_ROUND / per_call)), max(1, left // (2 * self.workers)))
            size = max(size, int(dispatch_floor(left * per_call, self.workers) / per_call))
        ends = sorted({min(done + size * (i + 1), self.plan.unmasked) for i in range(self.workers)})
        self.chunks += self.plan.head_chunks(self.ends + ends)[len(self.ends):]
        self.ends += ends
        self.generation += [len(self.sizes)] * len(ends)
        self.sizes.append(size)
        self.laid.append(len(ends))
        self.done.append([])
        return True


def _timing(output: ChunkOutput) -> tuple[int, float, float]:
    """``(elements, seconds, loop seconds)`` of an output, as :func:`fit` takes them."""
    return len(output.flat_index), output.seconds, output.evaluation.seconds


def measured(rounds: Sequence[tuple[int, float]]) -> bool:
    """Whether the pilot rounds so far (the first one is a warm-up) time the function well enough.

    Enough when the last round took :data:`PILOT_SECONDS` and at least twice the one before (the
    calls, not the fixed overhead, dominate it: the calls are timed by themselves, so one such
    round after the warm-up is enough), when it took :data:`LONG_ROUND` seconds, or when
    its chunks stopped growing (capped at :data:`LONG_ROUND` seconds of calls).

    Examples
    --------
    >>> measured([(1, 0.3), (8, 0.021)]), measured([(1, 0.3), (8, 0.021), (64, 0.05)])
    (False, True)
    >>> measured([(1, 0.002), (8, 0.009)]), measured([(1, 0.002), (2000, 0.2)])  # calls of 1 ms; 100 us
    (False, True)
    >>> measured([(1, 1.0), (8, 8.0)]), measured([(1, 0.4), (3, 0.9), (3, 0.9)])
    (True, True)
    """
    if len(rounds) < 2:
        return False
    seconds = rounds[-1][1]
    if seconds >= LONG_ROUND:
        return True
    if len(rounds) >= 3 and rounds[-1][0] <= rounds[-2][0]:
        return True
    return seconds >= PILOT_SECONDS and seconds >= 2 * rounds[-2][1]


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


def dispatch_floor(work: float, workers: int, dispatch: float = DISPATCH_SECONDS) -> float:
    """The shortest chunk (seconds) a scheduler handing out a task per ``dispatch`` seconds affords, for ``work`` seconds of calls.

    Examples
    --------
    >>> round(dispatch_floor(1e5, 1000), 3), round(dispatch_floor(10.0, 1000), 3)  # 10^8 and 10^4 calls of 1 ms
    (2.0, 0.1)
    """
    return min(workers * dispatch / DISPATCH_SHARE, math.sqrt(max(work, 0.0) * dispatch))


def auto_chunk_size(per_call: float, overhead: float, remaining: int, workers: int, latency: float = 0.0,
                    dispatch: float = DISPATCH_SECONDS) -> int:
    """Elements per chunk for ``remaining`` elements of ``per_call`` seconds on ``workers`` workers.

    A chunk lasts long enough that the per-task ``overhead`` (where it ran) stays under 1% of it
    and its ``latency`` (the rest of its time out: the scheduler's round trip) under
    :data:`LATENCY_SHARE`, and short enough for :data:`BALANCE_CHUNKS` chunks per worker (at least
    2). The scheduler hands out a task per ``dispatch`` seconds, so a chunk lasts at least
    ``workers * dispatch / DISPATCH_SHARE`` (2 s at 1000 workers: all are kept busy), or, for a run
    too small to keep them all busy, ``sqrt(work * dispatch)`` (which minimises the handing out
    plus a chunk's time), whatever the balance. At most :data:`MAX_CHUNK_SECONDS`, and
    :data:`MAX_CHUNK_ELEMENTS` elements.

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
    work = remaining * per_call
    per_worker = work / max(workers, 1)
    duration = max(overhead / OVERHEAD_SHARE, latency / LATENCY_SHARE, per_worker / BALANCE_CHUNKS)
    duration = max(min(duration, per_worker / 2), dispatch_floor(work, workers, dispatch))
    duration = min(duration, MAX_CHUNK_SECONDS)
    return max(1, min(int(duration / per_call), MAX_CHUNK_ELEMENTS, remaining))
