"""One run's checkpoint in a store: its lease, manifest, records and progress.

The keys of run ``R`` (its id is its :class:`~chunkmap.checkpoint.identity.Identity`)::

    R/lease            held while a process runs R (the holder's host and pid)
    R/manifest.json    created once, if absent: the identity's parts, the chunk layout, what runs
    R/chunk-000000012  one record per finished chunk (:mod:`chunkmap.checkpoint.records`)
    R/progress.json    replaced at most every second: chunks and elements done, failures by kind

A rerun takes the lease (a second live run of the same call gets
:class:`~chunkmap.errors.CheckpointBusyError`), reuses the stored layout (from the manifest, or
from the records when the manifest was lost), accepts only records that prove they belong to
this run, layout and chunk, and says what it refused or found missing; the rest is computed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any, Callable

from ..errors import CheckpointError, CodecError
from ..kernel import KINDS, ChunkOutput
from ..plan import Chunk, Plan
from . import lease as leases
from .identity import Identity
from .records import accept, decode_record, encode_record
from .stores import ChunkStore

__all__ = ["RunCheckpoint", "MANIFEST", "PROGRESS", "LEASE", "RECORD", "layout_of", "read_manifest", "describe"]

MANIFEST, PROGRESS, LEASE = "manifest.json", "progress.json", "lease"
#: the key of a record, under the run's prefix
RECORD = re.compile(r"chunk-(\d{9})")
#: what each identity part means, for notices
PART_NAMES = {"function": "the function (its code, bound state or name)", "arguments": "kwargs",
              "options": "skip, timeout, chunks or outputs", "inputs": "the inputs", "mask": "the mask"}
#: seconds between writes of the progress record
PROGRESS_EVERY = 1.0


def layout_of(plan: Plan) -> dict[str, Any]:
    """A plan's chunk layout as the manifest and every record store it."""
    return {"head": list(plan.head), "chunk_size": plan.chunk_size, "tail": plan.tail, "unmasked": plan.unmasked}


def read_manifest(store: ChunkStore, run_id: str) -> dict[str, Any] | None:
    """The manifest of run ``run_id``, or None if it has none.

    Raises
    ------
    CheckpointError
        It is not the JSON manifest chunkmap writes (edited, damaged, foreign).
    """
    data = store.get(f"{run_id}/{MANIFEST}")
    if data is None:
        return None
    where = f"{store.location}/{run_id}/{MANIFEST}"
    advice = (f"it was edited or damaged; remove the run (`chunkmap remove {store.location} {run_id}`) "
              f"to compute it afresh")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise CheckpointError(f"the checkpoint manifest {where} is not valid JSON ({exc}); {advice}") from None
    layout = manifest.get("layout") if isinstance(manifest, dict) else None
    problem = _layout_problem(layout)
    if problem or manifest.get("run") != run_id or not isinstance(manifest.get("identity"), dict):
        raise CheckpointError(f"the checkpoint manifest {where} is not one chunkmap wrote for this run "
                              f"({problem or 'its run id or identity is wrong'}); {advice}")
    return manifest


def _layout_problem(layout: Any) -> str | None:
    if not isinstance(layout, dict):
        return "it has no layout"
    head = layout.get("head")
    numbers = [layout.get("chunk_size"), layout.get("tail"), layout.get("unmasked")]
    if not (isinstance(head, list) and all(type(value) is int for value in [*head, *numbers])):
        return "its layout is not made of integers"
    if numbers[0] < 1 or numbers[1] < 0 or any(b <= a for a, b in zip([0, *head], head)):
        return "its layout is out of range"
    return None


class RunCheckpoint:
    """The checkpoint of one run: opened (lease taken) before any work, closed at the end.

    Notices (records refused or lost, a fresh run beside others) are collected in
    :attr:`notices` and shown by the caller, in its own thread.
    """

    def __init__(self, store: ChunkStore, identity: Identity, description: dict[str, Any]) -> None:
        self.store = store
        self.identity = identity
        self.run_id = identity.run_id
        self.prefix = f"{self.run_id}/"
        self.description = description
        self.notices: list[str] = []
        self.rejected = 0
        self.layout: dict[str, Any] | None = None
        self._lock = threading.Condition()
        self._closed = False
        self._writing = 0  # saves in flight; close() waits for them
        self._records = 0
        self._elements = 0
        self._failed: Counter[str] = Counter()
        self._written = 0.0
        self._lease = store.lease(self.prefix + LEASE, leases.holder_record())
        try:
            self.manifest = read_manifest(store, self.run_id)
        except BaseException:
            self._lease.release()
            raise

    @property
    def where(self) -> str:
        return f"{self.store.location} (run {self.run_id})"

    def stored_layout(self) -> tuple[list[int], int, int] | None:
        """The layout this run was started with, from its manifest or its records; None if new."""
        layout = self.manifest["layout"] if self.manifest is not None else self._layout_from_records()
        if layout is None:
            self._notice_other_runs()
            return None
        return layout["head"], layout["chunk_size"], layout["tail"]

    def _layout_from_records(self) -> dict[str, Any] | None:
        for key in self.store.keys(self.prefix + "chunk-"):
            try:
                header = decode_record(self.store.get(key) or b"").header
            except CodecError:
                continue
            if header.get("run") == self.run_id and _layout_problem(header.get("layout")) is None:
                self.notices.append(f"the checkpoint {self.where} had lost its manifest; the chunk layout "
                                    f"was recovered from its records")
                return header["layout"]
        return None

    def _notice_other_runs(self) -> None:
        from .status import runs  # the status module reads every run of a location

        others = [run for run in runs(self.store) if run.run_id != self.run_id and run.identity]
        if not others:
            return
        closest = min(others, key=lambda run: len(self.identity.differences(run.identity)))
        differs = ", ".join(PART_NAMES[part] for part in self.identity.differences(closest.identity))
        self.notices.append(
            f"the checkpoint {self.store.location} holds {len(others)} other run(s) but none of this call; "
            f"starting run {self.run_id} beside them. The closest, run {closest.run_id} ({closest.function}, "
            f"started {closest.started_text}), differs in: {differs}"
        )

    def begin(self, plan: Plan) -> None:
        """Record the manifest (create-if-absent) for the layout the run will use."""
        self.layout = layout_of(plan)
        if self.manifest is not None:
            if self.manifest["layout"] != self.layout:
                raise CheckpointError(
                    f"the checkpoint manifest of {self.where} describes a layout of "
                    f"{self.manifest['layout']['unmasked']} elements to compute, and this run has {plan.unmasked}; "
                    f"it was edited or damaged: remove the run (`chunkmap remove {self.store.location} "
                    f"{self.run_id}`) to compute it afresh")
            return
        manifest = self._manifest()
        if not self.store.create(self.prefix + MANIFEST, json.dumps(manifest, indent=1).encode()):
            stored = read_manifest(self.store, self.run_id)
            if stored is None or stored["layout"] != self.layout:
                raise CheckpointError(f"the checkpoint manifest of {self.where} changed while this run held "
                                      f"its lease; another process writes there without taking it")
        self.manifest = manifest

    def _manifest(self) -> dict[str, Any]:
        return {"format": 3, "run": self.run_id, "identity": self.identity.parts, "layout": self.layout,
                **self.description, "started": time.time()}

    def resume(self, plan: Plan, flat_index: Callable[[Chunk], Any]) -> list[ChunkOutput]:
        """The outputs of the stored records that belong to this run, its layout and their chunks.

        ``flat_index(chunk)`` gives a chunk's unmasked flat indices. Refused records are counted
        in :attr:`rejected` and noticed; so are records the progress record says were written
        but that are gone.
        """
        assert self.layout is not None, "begin() first"
        outputs, reasons = [], Counter()
        for key in self.store.keys(self.prefix + "chunk-"):
            reason, output = self._accepted(plan, key, flat_index)
            if reason is None:
                outputs.append(output)
                continue
            reasons[reason] += 1
            self.store.delete(key)  # it can never be used: not noticed again by every later rerun
        self.rejected = sum(reasons.values())
        if reasons:
            listed = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common(4))
            self.notices.append(f"the checkpoint {self.where} held {self.rejected} record(s) that do not belong "
                                f"to this run's chunks ({listed}); they were removed unused, and their chunks "
                                f"are computed again")
        progress = self._read_progress()
        recorded = progress.get("chunks", 0) if isinstance(progress.get("chunks"), int) else 0
        if recorded > len(outputs) + self.rejected:
            self.notices.append(f"the checkpoint {self.where} recorded {recorded} finished chunks but holds "
                                f"{len(outputs) + self.rejected}: the store lost data (a restart without "
                                f"persistence, an eviction, a deletion); the missing chunks are computed again")
        for output in outputs:
            self._count(output)
        return outputs

    def _accepted(self, plan: Plan, key: str, flat_index: Callable[[Chunk], Any]) -> tuple[str | None, Any]:
        """``(None, output)`` for a record that belongs to its chunk, else ``(why not, None)``."""
        match = RECORD.fullmatch(key[len(self.prefix):])
        number = int(match.group(1)) if match else -1
        if not 0 <= number < len(plan.chunks):
            return "filed under a name that is no chunk of the layout", None
        chunk = plan.chunks[number]
        try:
            record = decode_record(self.store.get(key) or b"")
        except CodecError as exc:
            return f"damaged ({exc})", None
        indices = flat_index(chunk)
        reason = accept(record, chunk, indices, self.run_id, self.layout)
        if reason is not None:
            return ("made with another chunk layout" if "layout" in reason else reason), None
        return None, ChunkOutput(number, indices, record.evaluation)

    def _read_progress(self) -> dict[str, Any]:
        data = self.store.get(self.prefix + PROGRESS)
        try:
            progress = json.loads(data) if data else {}
        except ValueError:
            return {}
        return progress if isinstance(progress, dict) else {}

    def _count(self, output: ChunkOutput) -> None:
        with self._lock:
            self._records += 1
            self._elements += len(output.evaluation.status)
            failing = output.evaluation.status[output.evaluation.failures.positions]
            for status, count in Counter(failing.tolist()).items():
                self._failed[KINDS[status]] += count

    def save(self, output: ChunkOutput, chunk: Chunk) -> None:
        """Persist one finished chunk (thread-safe); re-take the lease if the store lost it.

        After :meth:`close` (an interrupted run whose chunks in flight still finish on their
        threads) nothing is written: the lease is gone.
        """
        assert self.layout is not None, "begin() first"
        with self._lock:
            if self._closed:
                return
            self._writing += 1
        try:
            record = encode_record(output, chunk, self.run_id, self.layout)
            self.store.put(f"{self.prefix}chunk-{chunk.index:09d}", record)
            self._count(output)
            if time.monotonic() - self._written >= PROGRESS_EVERY:
                self._write_progress(finished=False)
        finally:
            with self._lock:
                self._writing -= 1
                self._lock.notify_all()

    def _write_progress(self, finished: bool) -> None:
        with self._lock:
            self._written = time.monotonic()
            if not self._lease.check() or (finished and self.store.get(self.prefix + MANIFEST) is None):
                self._lost()
            progress = {"chunks": self._records, "elements": self._elements, "failed": dict(self._failed),
                        "updated": time.time(), "finished": finished}
            self.store.put(self.prefix + PROGRESS, json.dumps(progress).encode())

    def _lost(self) -> None:
        self.notices.append(f"the checkpoint store {self.store.location} lost the lease or manifest of run "
                            f"{self.run_id} during the run (a restart without persistence, an eviction, a "
                            f"deletion); they were written again. This result is exact; records lost with "
                            f"them are computed again by a rerun")
        self.manifest = self._manifest()
        self.store.create(self.prefix + MANIFEST, json.dumps(self.manifest, indent=1).encode())

    def finish(self) -> None:
        """The run completed: record it (and restore the lease and manifest if the store lost them)."""
        self._write_progress(finished=True)

    def close(self) -> None:
        """Stop taking records, wait for those being written, release the lease (also after an
        error or an interrupt)."""
        with self._lock:
            self._closed = True
            while self._writing:
                self._lock.wait()
        self._lease.release()


def describe(func: Any, plan: Plan) -> dict[str, Any]:
    """What a manifest says about the run for people (``chunkmap status``)."""
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    module = getattr(func, "__module__", None)
    return {"function": f"{module}.{name}" if module else name, "shape": list(plan.shape), "elements": plan.elements,
            "unmasked": plan.unmasked}
