"""What a checkpoint location holds: its runs, how far each got, their failures; removing runs.

Reads only what ``chunkmap status`` needs (manifests, progress records, the list of record keys)
and works on live, killed and finished runs alike; ``failures`` reads the records themselves.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..errors import CheckpointError, CodecError, OptionError
from ..failures import FailureRecords
from ..kernel import KINDS
from ..plan import layout_ends
from ..result import Failures
from . import lease as leases
from .records import decode_record
from .run import LEASE, MANIFEST, PROGRESS, RECORD, read_manifest
from .stores import ChunkStore, open_store

__all__ = ["RunStatus", "runs", "run_failures", "remove"]


@dataclass(frozen=True)
class RunStatus:
    """One run of a checkpoint location, as ``chunkmap status`` shows it.

    Attributes
    ----------
    run_id : str
        The run's id (a digest of its identity).
    function : str
        The function's qualified name (``"?"`` when the manifest is missing).
    shape : tuple of int
        The inputs' broadcast shape.
    chunks, chunks_done : int
        Chunks in the run's layout, and records stored.
    unmasked, elements_done : int
        Elements to compute, and those the stored records hold.
    failed : dict
        Failures by kind (``exception``, ``crash``, ``timeout``) as of the last progress record.
    started, updated : float or None
        When the run started, and its last progress record (seconds since the epoch).
    finished : bool
        Whether a run of it completed.
    holder : dict or None
        The live process running it (``host``, ``pid``), or None.
    identity : dict
        The digests of the run's identity parts (see :mod:`chunkmap.checkpoint.identity`).
    problem : str or None
        Why the manifest cannot be read, if it cannot.
    """

    run_id: str
    function: str
    shape: tuple[int, ...]
    chunks: int
    chunks_done: int
    unmasked: int
    elements_done: int
    failed: dict[str, int] = field(default_factory=dict)
    started: float | None = None
    updated: float | None = None
    finished: bool = False
    holder: dict[str, Any] | None = None
    identity: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    @property
    def live(self) -> bool:
        return self.holder is not None

    @property
    def started_text(self) -> str:
        return _time_text(self.started)

    @property
    def updated_text(self) -> str:
        return _time_text(self.updated)

    @property
    def state(self) -> str:
        if self.live:
            return f"running (pid {self.holder.get('pid', '?')} on {self.holder.get('host', '?')})"
        if self.finished and self.chunks_done >= self.chunks:
            return "finished"
        return "stopped"


def _time_text(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "?"


def _store(location: Any) -> ChunkStore:
    from . import Checkpoint

    if isinstance(location, Checkpoint):
        return location.store
    return open_store(location)


def _run_ids(store: ChunkStore) -> list[str]:
    return sorted({key.partition("/")[0] for key in store.keys("") if "/" in key})


def runs(location: Any) -> list[RunStatus]:
    """Every run stored at ``location`` (a directory, a ``redis://`` URL or a store), oldest first.

    Examples
    --------
    >>> import numpy as np, tempfile, chunkmap
    >>> folder = tempfile.mkdtemp()
    >>> _ = chunkmap.run(abs, np.arange(-3, 3), checkpoint=folder, scheduler="sync")
    >>> [(run.function, run.chunks_done == run.chunks, run.state) for run in runs(folder)]
    [('builtins.abs', True, 'finished')]
    """
    store = _store(location)
    found = [_status(store, run_id) for run_id in _run_ids(store)]
    return sorted(found, key=lambda run: (run.started or 0, run.run_id))


def _status(store: ChunkStore, run_id: str) -> RunStatus:
    prefix = f"{run_id}/"
    try:
        manifest, problem = read_manifest(store, run_id), None
    except CheckpointError as exc:
        manifest, problem = None, str(exc)
    done = sorted(int(match.group(1)) for key in store.keys(prefix + "chunk-")
                  if (match := RECORD.fullmatch(key[len(prefix):])))
    try:
        progress = json.loads(store.get(prefix + PROGRESS) or b"{}")
    except ValueError:
        progress = {}
    progress = progress if isinstance(progress, dict) else {}
    chunks = unmasked = elements_done = 0
    if manifest is not None:
        layout = manifest["layout"]
        unmasked = layout["unmasked"]
        ends = layout_ends(unmasked, layout["head"], layout["chunk_size"], layout["tail"])
        sizes = np.diff([0, *ends])
        chunks = len(sizes)
        elements_done = int(sum(int(sizes[index]) for index in done if index < chunks))
    elif problem is None:
        problem = "the manifest is missing"
    return RunStatus(
        run_id=run_id,
        function=str((manifest or {}).get("function", "?")),
        shape=tuple((manifest or {}).get("shape", ())),
        chunks=chunks,
        chunks_done=len(done),
        unmasked=unmasked,
        elements_done=elements_done,
        failed={str(kind): int(count) for kind, count in dict(progress.get("failed", {})).items()},
        started=(manifest or {}).get("started"),
        updated=progress.get("updated"),
        finished=bool(progress.get("finished")),
        holder=store.holder(prefix + LEASE),
        identity=dict((manifest or {}).get("identity", {})),
        problem=problem,
    )


def _one_run(store: ChunkStore, run_id: str | None) -> str:
    ids = _run_ids(store)
    if run_id is None:
        if len(ids) == 1:
            return ids[0]
        raise OptionError(f"the checkpoint {store.location} holds {len(ids)} runs ({', '.join(ids) or 'none'}); "
                          f"name one (run=ID, or --run ID on the command line)")
    matches = [found for found in ids if found.startswith(run_id)]
    if len(matches) != 1:
        raise OptionError(f"the checkpoint {store.location} holds {'no' if not matches else 'several'} run(s) "
                          f"starting with {run_id!r}; its runs are: {', '.join(ids) or 'none'}")
    return matches[0]


def run_failures(location: Any, run: str | None = None) -> Failures:
    """The failures stored by one run (``run``: its id or a prefix; optional when there is one run).

    Reads every record of the run; records that do not decode are left out (a rerun computes
    their chunks again).
    """
    store = _store(location)
    run_id = _one_run(store, run)
    manifest = read_manifest(store, run_id)
    shape = tuple(manifest["shape"]) if manifest else ()
    parts, statuses = [], []
    prefix = f"{run_id}/"
    for key in store.keys(prefix + "chunk-"):
        if not RECORD.fullmatch(key[len(prefix):]):
            continue
        try:
            record = decode_record(store.get(key) or b"")
        except CodecError:
            continue
        if record.header.get("run") != run_id:
            continue
        failures = record.evaluation.failures
        parts.append(FailureRecords(record.failure_flat_index, failures.type_codes, failures.type_names,
                                    failures.blocks, failures.block_counts, failures.text_ends))
        statuses.append(record.evaluation.status[failures.positions])
    records = FailureRecords.concat(parts)  # records in chunk order: failures in C order
    status = np.concatenate([np.empty(0, np.uint8), *statuses])
    failing = sorted(KINDS)
    codes = np.searchsorted(np.array(failing, np.uint8), status).astype(np.uint8)
    return Failures.from_records(shape, records, codes, [KINDS[code] for code in failing])


def remove(location: Any, run: str) -> str:
    """Delete one stored run (its id or a prefix); refuses a run that is live. Returns its id."""
    store = _store(location)
    run_id = _one_run(store, run)
    prefix = f"{run_id}/"
    held = store.lease(prefix + LEASE, leases.holder_record())  # CheckpointBusyError if it runs
    try:
        for key in list(store.keys(prefix)):
            if key != prefix + LEASE:
                store.delete(key)
        store.delete(prefix + LEASE)
    finally:
        held.release()
    return run_id


def iter_failure_rows(failures: Failures) -> Iterator[tuple[tuple[int, ...], str, str, str]]:
    """``(coords, kind, type, message)`` per failure, for tables and CSV."""
    for failure in failures:
        yield failure.coords, failure.kind, failure.type, failure.message
