"""Evaluate a chunk in worker processes so that a crash or a hang costs one element, not the run.

A chunk's elements are sent to a worker as one range. When the worker dies, its heartbeat names
the element it was evaluating, ``q``: the range is split into ``[a, q)``, ``[q]`` and
``(q, b)``, each re-run on a fresh worker. ``[q]`` alone dying again confirms it (an innocent
element, e.g. one running when the machine's OOM killer struck, is simply computed), and it is
recorded as a failure of kind ``"crash"``. This is bisection with a pointer: one poisoned element
costs two worker restarts and re-runs its predecessors once, instead of ``log2(chunk)`` rounds.
A hang is detected by a heartbeat that stops moving for ``timeout`` seconds: that element is
recorded as ``"timeout"`` at once (re-running it would hang again) and the rest re-run.
Either failure keeps the element's input values, which the parent has (or reads, for inputs
the worker read itself): the worker that had them is gone.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import replace
from typing import Any

import cloudpickle
import numpy as np

from ..errors import WorkerStartError
from ..failures import FailureRecords, input_columns
from ..kernel import CRASH, TIMEOUT, ChunkOutput, ElementFailure, Evaluation, Execution
from ..plan import Chunk
from ..source import ArraySource
from .pool import WorkerDied, WorkerHung, WorkerOverMemory, WorkerPool, describe_exit, exit_name
from .transport import (ChunkInputs, IndexedColumns, InputBuffer, SourceSlice, chunk_inputs, inputs_length, request,
                        take_back)

__all__ = ["evaluate_chunk", "evaluate_isolated"]


def evaluate_chunk(chunk: Chunk, source: ArraySource, execution: Execution, pool: WorkerPool) -> ChunkOutput:
    """Evaluate one chunk of ``source`` on ``pool``'s workers: its output, timed where it ran.

    Raises
    ------
    ElementError
        ``func`` raised an exception ``skip`` does not list; it names the element.
    WorkerStartError
        A worker died twice before its first element.
    """
    started = time.perf_counter()
    flat_index, inputs = chunk_inputs(source, chunk.start, chunk.stop)
    try:
        evaluation = evaluate_isolated(inputs, execution, pool)
    except ElementFailure as failure:
        raise failure.to_element_error(int(flat_index[failure.position]), source.shape) from failure.__cause__
    return ChunkOutput(chunk.index, flat_index, evaluation, time.perf_counter() - started)


def evaluate_isolated(inputs: ChunkInputs, execution: Execution, pool: WorkerPool) -> Evaluation:
    """Evaluate ``inputs`` as ``execution`` says on ``pool``'s workers, isolating crashes and hangs element by element.

    ``inputs`` are the chunk's unmasked elements: columns, or a
    :class:`~chunkmap.local.transport.SourceSlice` that the workers read themselves.
    ``execution.progress(n)`` is called with the number of elements newly finished, never
    counting an element twice when a range is re-run. With ``execution.max_calls``, a worker is
    replaced once it has made that many calls (a request never takes it past them).

    Raises
    ------
    ElementFailure
        ``func`` raised an exception ``skip`` does not list, or returned a value that cannot be
        pickled.
    SetupError
        The setup or a per-worker factory raised in a worker.
    WorkerStartError
        A worker died twice before its first element (e.g. ``func`` cannot be unpickled).
    KeyboardInterrupt, SystemExit
        ``func`` raised it in a worker.
    """
    length = inputs_length(inputs)
    parts: list[tuple[int, Evaluation]] = []
    todo = [(0, length)] if length else []
    reported = 0
    progress = execution.progress

    def advance(to: int) -> None:
        nonlocal reported
        if to > reported:
            if progress is not None:
                progress(to - reported)
            reported = to

    def blame(start: int, stop: int, position: int, name: str, message: str) -> None:
        """The element at ``position`` of ``[start, stop)`` took its worker down: alone, a crash; else re-run alone."""
        if stop - start == 1:
            parts.append((start, failure(CRASH, name, message, element_inputs(inputs, start))))
            advance(stop)
        else:
            todo[:0] = around(start + position, start, stop)

    setup_deaths = 0
    while todo:
        start, stop = todo.pop(0)
        worker = pool.acquire()
        if execution.max_calls is not None and stop - start > execution.max_calls - worker.calls:
            todo.insert(0, (start + execution.max_calls - worker.calls, stop))
            stop = start + execution.max_calls - worker.calls
        try:
            payload = cloudpickle.dumps((execution.func, execution.skip, execution.kwargs, execution.setup,
                                         execution.outputs, request(inputs, start, stop, pool.buffers[worker.slot])))
            response = worker.evaluate(payload, execution.timeout, execution.cancelled,
                                       lambda position: advance(start + position), execution.max_memory)
            worker.calls += stop - start
            kind, *rest = _reply(response, pool.buffers[worker.slot])  # before the slot's buffer serves again
            if worker_is_spent(worker, execution):
                worker = pool.replace(worker, gently=True)
        except WorkerDied as death:
            worker = pool.replace(worker)
            if death.position < 0:
                setup_deaths += 1
                if setup_deaths > 1:
                    raise WorkerStartError(
                        f"worker processes {describe_exit(death.returncode)} twice before evaluating "
                        f"any element; their error output above says why (often func or its module "
                        f"cannot be imported in a fresh Python process)"
                    ) from None
                todo.insert(0, (start, stop))
                continue
            blame(start, stop, death.position, exit_name(death.returncode),
                  f"the worker process {describe_exit(death.returncode)} while evaluating this element")
            continue
        except WorkerOverMemory as excess:
            worker = pool.replace(worker)
            blame(start, stop, excess.position, "MemoryLimit",
                  f"the worker process held {excess.resident:,} bytes, over max_memory="
                  f"{execution.max_memory:,}, while evaluating this element alone; it was killed")
            continue
        except WorkerHung as hang:
            worker = pool.replace(worker)
            culprit = start + hang.position
            parts.append((culprit, failure(TIMEOUT, "Timeout",
                                           f"the call did not return within {hang.seconds:g} s; its "
                                           f"worker process was killed and replaced",
                                           element_inputs(inputs, culprit))))
            todo[:0] = [r for r in ((start, culprit), (culprit + 1, stop)) if r[0] < r[1]]
            continue
        except BaseException:  # e.g. KeyboardInterrupt in a progress hook: the worker is mid-request
            worker = pool.replace(worker)
            raise
        finally:
            pool.release(worker)
        if kind == "done":
            parts.append((start, rest[0]))
            advance(stop)
        else:
            _raise(kind, rest, start)
    return Evaluation.join(parts, length)


def _reply(response: bytes, buffer: InputBuffer) -> tuple:
    """A worker's response, with the status and values it wrote back into ``buffer`` copied out of it."""
    reply = pickle.loads(response)
    if reply[0] == "done" and len(reply) == 3:
        status, values = take_back(buffer, reply[2])
        return ("done", replace(reply[1], status=status, values=values))
    return reply


def _raise(kind: str, rest: list[Any], start: int) -> None:
    """Raise what a worker's response reports instead of an evaluation (positions shifted by ``start``)."""
    if kind == "raised":
        element_failure, cause = rest
        raise element_failure.shifted(start) from cause
    raise rest[0]  # "setup": the SetupError; "interrupt": KeyboardInterrupt or SystemExit, as on sync


def around(culprit: int, start: int, stop: int) -> list[tuple[int, int]]:
    """``[start, stop)`` split around ``culprit``: before it, it alone, after it (the empty ranges left out)."""
    return [r for r in ((start, culprit), (culprit, culprit + 1), (culprit + 1, stop)) if r[0] < r[1]]


def worker_is_spent(worker: Any, execution: Execution) -> bool:
    """Whether ``worker`` has reached ``max_calls``, or holds more than ``max_memory``, after a request."""
    if execution.max_calls is not None and worker.calls >= execution.max_calls:
        return True
    return execution.max_memory is not None and worker.resident_bytes() > execution.max_memory


def failure(status: int, name: str, message: str, inputs: tuple[np.ndarray, ...] = ()) -> Evaluation:
    """The evaluation of one element that failed with ``status``; ``inputs``: its value in each input column."""
    return Evaluation(np.array([status], np.uint8), np.empty(0, np.float64),
                      FailureRecords.from_tuples([(0, name, message)], inputs))


def element_inputs(inputs: ChunkInputs, position: int) -> tuple[np.ndarray, ...]:
    """The input values of the element at ``position`` of ``inputs``: one 1-element column per input.

    The parent has the columns it sent, or reads the one element of a
    :class:`~chunkmap.local.transport.SourceSlice` that the worker read itself (its worker died
    with the values): a crash or a hang costs one element's read here.
    """
    if isinstance(inputs, IndexedColumns):
        return input_columns(inputs.flats, inputs.flat_index[position : position + 1])
    if not isinstance(inputs, SourceSlice):
        return input_columns(inputs, [position])
    offset = inputs.first + position  # among the unmasked elements of [start, stop)
    if inputs.valid_bits is not None:
        selected = np.unpackbits(inputs.valid_bits, count=inputs.stop - inputs.start)
        offset = int(np.flatnonzero(selected)[offset])
    flat = inputs.start + offset
    return input_columns(inputs.source.columns(flat, flat + 1), [0])
