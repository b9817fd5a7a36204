"""The pilot and the auto chunk size on a simulated cluster of many workers (issue 16): no wall clock.

    python -m benchmarks.simulate_pilot [--workers 1000] [--per-call 1e-3] [--elements 1e4,1e6,1e8]
                                        [--overhead 5e-4] [--dispatch 1e-3] [--hop 5e-4] [--cold 0]
                                        [--rounds] [--quick] [--json PATH]

A discrete-event model of dask.distributed driving :class:`chunkmap.sizing.Pilot` and
:func:`chunkmap.sizing.auto_chunk_size` exactly as a run does (the simulated clock is the pilot's):

- the scheduler hands out one task per ``--dispatch`` seconds (serially: its throughput), to a
  worker holding fewer than 2 tasks (dask's queuing, worker-saturation 1.1);
- every message between client, scheduler and worker takes ``--hop`` seconds;
- a worker runs a chunk of k elements in ``--overhead + k * --per-call`` seconds (its first one
  ``--cold`` seconds more: its pool starting), measured where it ran as a real chunk is;
- the client hands the pilot's outputs to ``Pilot.on_output`` as they arrive, submits the chunks it
  returns, and at :data:`~chunkmap.sizing.RELEASE` lays out the rest
  (:func:`chunkmap.plan.layout_ends`, the tail shrinking for the workers) and submits it, the
  pilot's chunks still running carried over. ``--rounds`` simulates instead a backend running the
  pilot's generations as rounds (each waits for all its chunks), as local backends do.

Reported per element count: pilot generations (their chunk sizes) and elements, when the pilot
released, when the last worker started its first chunk, the workers' idle time between their
first start and their last end (a barrier shows here) as a share of ``end * workers``,
the chunk count (tasks) and size, the end (last chunk done) against the ideal
``N * per_call / workers``, and the tail (last end less the first worker's last end).
"""

from __future__ import annotations

import argparse
import heapq
import json
import types

from chunkmap import sizing
from chunkmap.plan import Chunk, layout_ends

#: tasks a worker holds at once (running and queued): dask's ceil(1.1 * 1 thread)
SLOTS = 2


class PlainPlan:
    """The part of a :class:`chunkmap.plan.Plan` the pilot uses, for ``unmasked`` elements and no mask."""

    def __init__(self, unmasked: int) -> None:
        self.unmasked = unmasked

    def head_chunks(self, ends: list[int]) -> list[Chunk]:
        starts = [0, *ends[:-1]]
        return [Chunk(i, start, end, end - start) for i, (start, end) in enumerate(zip(starts, ends))]


class Cluster:
    """The simulated scheduler, workers and client: events on one clock."""

    def __init__(self, workers: int, per_call: float, overhead: float, dispatch: float, hop: float,
                 cold: float) -> None:
        self.workers, self.per_call, self.overhead = workers, per_call, overhead
        self.dispatch, self.hop, self.cold = dispatch, hop, cold
        self.now = 0.0
        self.events: list[tuple[float, int, str, object]] = []
        self.sequence = 0
        self.queue: list[Chunk] = []  # at the scheduler, in submission order
        self.queue_head = 0
        self.scheduler_free = 0.0
        self.held = [0] * workers  # tasks each worker holds
        self.holding = [set(range(workers))] + [set() for _ in range(SLOTS)]  # workers by tasks held
        self.worker_free = [0.0] * workers
        self.started = [False] * workers
        self.idle_until_busy = 0.0
        self.last_end = [0.0] * workers
        self.first_start: list[float | None] = [None] * workers
        self.gaps = [0.0] * workers  # each worker's idle time between its first start and its last end
        self.first_main_start: list[float | None] = [None] * workers
        self.main_from: int | None = None  # the first chunk index of the rest of the run
        self.tasks = 0
        self.busy = 0.0

    def clock(self) -> float:
        return self.now

    def _push(self, at: float, kind: str, payload: object) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (at, self.sequence, kind, payload))

    def submit(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self._push(self.now + self.hop, "arrive", chunk)

    def _assign(self) -> None:
        """Hand out queued tasks to workers with a free slot, one per ``dispatch`` seconds."""
        while self.queue_head < len(self.queue):
            emptiest = next((held for held in range(SLOTS) if self.holding[held]), None)
            if emptiest is None:
                return
            worker = self.holding[emptiest].pop()
            chunk = self.queue[self.queue_head]
            self.queue_head += 1
            self.scheduler_free = max(self.scheduler_free, self.now) + self.dispatch
            self._hold(worker, +1)
            self._push(self.scheduler_free + self.hop, "receive", (worker, chunk))

    def _hold(self, worker: int, change: int) -> None:
        self.held[worker] += change
        self.holding[self.held[worker]].add(worker)

    def _run(self, worker: int, chunk: Chunk) -> None:
        start = max(self.now, self.worker_free[worker])
        if self.first_start[worker] is None:
            self.first_start[worker] = start
        else:
            self.gaps[worker] += start - self.worker_free[worker]
        seconds = self.overhead + chunk.size * self.per_call + (0.0 if self.started[worker] else self.cold)
        self.started[worker] = True
        self.worker_free[worker] = start + seconds
        self.last_end[worker] = start + seconds
        self.busy += chunk.size * self.per_call
        self.tasks += 1
        if self.main_from is not None and chunk.index >= self.main_from and self.first_main_start[worker] is None:
            self.first_main_start[worker] = start
        output = types.SimpleNamespace(index=chunk.index, flat_index=range(chunk.size), seconds=seconds,
                                       evaluation=types.SimpleNamespace(seconds=chunk.size * self.per_call))
        self._push(start + seconds, "done", (worker, output))

    def step(self) -> tuple[str, object] | None:
        """Process events until an output reaches the client: it, or None when nothing is left."""
        while self.events:
            self.now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrive":
                self.queue.append(payload)
                self._assign()
            elif kind == "receive":
                self._run(*payload)
            elif kind == "done":
                worker, output = payload
                self.holding[self.held[worker]].discard(worker)
                self._hold(worker, -1)
                self._assign()
                self._push(self.now + 2 * self.hop, "output", output)
            else:
                return payload
        return None


def simulate(elements: int, workers: int, per_call: float, overhead: float = 5e-4, dispatch: float = 1e-3,
             hop: float = 5e-4, cold: float = 0.0, rounds: bool = False) -> dict:
    """One simulated run: the pilot, then the rest of the layout; the figures of the module docstring."""
    cluster = Cluster(workers, per_call, overhead, dispatch, hop, cold)
    plan = PlainPlan(elements)
    delivered: set[int] = set()
    pilot = sizing.Pilot(plan, workers, lambda output: delivered.add(output.index), clock=cluster.clock)
    in_flight = 0
    chunks = pilot.start()
    while chunks:  # the pilot (sizing.pilot's loop, on the simulated backend)
        pilot.sending(chunks)
        cluster.submit(chunks)
        in_flight += len(chunks)
        while in_flight:
            output = cluster.step()
            in_flight -= 1
            answer = pilot.on_output(output)
            if answer is sizing.RELEASE and not rounds:
                break
            if answer and answer is not sizing.RELEASE and not rounds:
                cluster.submit(answer)
                in_flight += len(answer)
        chunks = [] if pilot.released or not rounds else pilot.unrun()
    released_at = cluster.now
    head, size = pilot.layout()
    ends = layout_ends(elements, head, size, workers)
    rest = plan.head_chunks(ends)[len(head):]
    cluster.main_from = len(head)
    # a barrier backend's pilot leaves the chunks it handed out during its last round to the run;
    # a streaming one's are still in flight
    cluster.submit((pilot.unrun() if rounds else []) + rest)
    while cluster.step() is not None:
        pass
    ideal = elements * per_call / workers
    end = max(cluster.last_end)
    started = [s for s in cluster.first_start if s is not None]
    return {
        "elements": elements, "workers": workers, "per_call": per_call, "mode": "rounds" if rounds else "stream",
        "pilot_generations": len(pilot.sizes), "pilot_sizes": pilot.sizes, "pilot_elements": head[-1],
        "pilot_chunks": len(head), "released_at": released_at,
        "all_started_at": max(started) if len(started) == workers else None, "workers_used": len(started),
        "idle_between_tasks": sum(cluster.gaps) / (end * workers),
        "chunk_size": size, "chunks": len(ends), "tasks": cluster.tasks, "ideal": ideal, "end": end,
        "end_over_ideal": end / ideal, "tail": end - min(cluster.last_end),
        "utilisation": cluster.busy / (end * workers), "work": cluster.busy,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--per-call", type=float, default=1e-3)
    parser.add_argument("--elements", default="1e4,1e5,1e6,1e7,1e8")
    parser.add_argument("--overhead", type=float, default=5e-4)
    parser.add_argument("--dispatch", type=float, default=1e-3)
    parser.add_argument("--hop", type=float, default=5e-4)
    parser.add_argument("--cold", type=float, default=0.0)
    parser.add_argument("--rounds", action="store_true", help="the pilot's generations as rounds (barriers)")
    parser.add_argument("--quick", action="store_true", help="100 workers, 10^4 and 10^6 elements")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.elements = 100, "1e4,1e6"
    rows = [simulate(int(float(n)), args.workers, args.per_call, args.overhead, args.dispatch, args.hop, args.cold,
                     args.rounds) for n in args.elements.split(",")]
    print(f"{args.workers} workers, {args.per_call * 1e3:g} ms per call, overhead {args.overhead * 1e3:g} ms, "
          f"dispatch {args.dispatch * 1e3:g} ms per task, hop {args.hop * 1e3:g} ms, cold {args.cold:g} s, "
          f"pilot {'in rounds' if args.rounds else 'streamed'}")
    print("| elements | pilot gens (sizes) | pilot elements | released (s) | all started (s) | idle between tasks "
          "| chunk size | tasks | end (s) | ideal (s) | end / ideal | tail (s) | utilisation |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        started = "—" if r["all_started_at"] is None else f"{r['all_started_at']:.2f}"
        print(f"| {r['elements']:.0e} | {r['pilot_generations']} {r['pilot_sizes']} | {r['pilot_elements']} "
              f"| {r['released_at']:.2f} | {started} | {r['idle_between_tasks']:.1%} | {r['chunk_size']} "
              f"| {r['tasks']} | {r['end']:.2f} | {r['ideal']:.2f} | {r['end_over_ideal']:.2f} | {r['tail']:.2f} "
              f"| {r['utilisation']:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
