"""What a checkpoint location holds: its runs, how far each got, their failures; removing runs.

Reads only what ``chunkmap status`` needs (manifests, progress records, the list of record keys)
and works on live, killed and finished runs alike; ``failures`` reads the records themselves.
"""

from __future__ import annotations

import dataclasses

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..errors import CheckpointBusyError, CheckpointError, CodecError, OptionError
from ..failures import FailureRecords
from ..kernel import KINDS
from ..plan import Chunk, layout_ends
from ..result import Failures
from . import lease as leases
from .records import Record, accept, decode_record
from .run import LEASE, PROGRESS, RECORD, read_manifest
from .stores import ChunkStore, DirectoryStore, open_store

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
        if self.finished and self.problem is None and self.chunks_done >= self.chunks:
            return "finished"
        return "stopped"


def _time_text(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "?"


def _store(location: Any) -> ChunkStore:
    """The store at ``location``; a directory must exist (a typo is not an empty location)."""
    from . import Checkpoint

    store = location.store if isinstance(location, Checkpoint) else open_store(location)
    if isinstance(store, DirectoryStore) and not store.path.is_dir():
        found = "it is a file" if store.path.exists() else "the path does not exist"
        raise CheckpointError(f"there is no checkpoint directory at {store.location} ({found}); expected the "
                              f"directory given to run(checkpoint=...) or chunkmap run --checkpoint, or a redis:// URL")
    return store


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
    unmasked = elements_done = 0
    if manifest is not None:
        sizes = _chunk_sizes(manifest["layout"])
        done = [index for index in done if index < len(sizes)]
        unmasked, elements_done = manifest["layout"]["unmasked"], int(sum(sizes[index] for index in done))
    elif problem is None:
        problem = "the manifest is missing"
    return RunStatus(
        run_id=run_id,
        function=str((manifest or {}).get("function", "?")),
        shape=tuple((manifest or {}).get("shape", ())),
        chunks=len(_chunk_sizes(manifest["layout"])) if manifest is not None else 0,
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


def _chunk_sizes(layout: dict[str, Any]) -> list[int]:
    """Elements in each chunk of a stored layout."""
    ends = layout_ends(layout["unmasked"], layout["head"], layout["chunk_size"], layout["tail"])
    return np.diff([0, *ends]).tolist()


def _one_run(store: ChunkStore, run_id: str | None) -> str:
    ids = _run_ids(store)
    if not ids:
        raise OptionError(f"the checkpoint {store.location} holds no runs")
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

    Reads every record of the run. Only records that belong to the run's layout and to the chunk
    they are filed under are read; a rerun computes the others again.

    Raises
    ------
    CheckpointError
        The run's manifest is missing or damaged: without its shape the coordinates are unknown.
    """
    store = _store(location)
    run_id = _one_run(store, run)
    manifest = read_manifest(store, run_id)
    if manifest is None:
        raise CheckpointError(f"run {run_id} in {store.location} has lost its manifest, so the coordinates of "
                              f"its failures are unknown; running the same call again restores it")
    sizes = _chunk_sizes(manifest["layout"])
    parts, statuses = [], []
    prefix = f"{run_id}/"
    for key in store.keys(prefix + "chunk-"):
        match = RECORD.fullmatch(key[len(prefix):])
        try:
            record = decode_record(store.get(key) or b"")
        except CodecError:
            continue
        if match is None or not _belongs(record, int(match.group(1)), run_id, manifest["layout"], sizes):
            continue
        failures = record.evaluation.failures
        parts.append(dataclasses.replace(failures, positions=record.failure_flat_index))  # inputs kept
        statuses.append(record.evaluation.status[failures.positions])
    records = FailureRecords.concat(parts)  # records in chunk order: failures in C order
    status = np.concatenate([np.empty(0, np.uint8), *statuses])
    failing = sorted(KINDS)
    codes = np.searchsorted(np.array(failing, np.uint8), status).astype(np.uint8)
    return Failures.from_records(tuple(manifest["shape"]), records, codes, [KINDS[code] for code in failing])


def _belongs(record: Record, index: int, run_id: str, layout: dict[str, Any], sizes: list[int]) -> bool:
    """:func:`~chunkmap.checkpoint.records.accept` as far as it goes without the run's inputs (the
    chunk's range is the record's own, its failures need only lie inside it)."""
    start, stop = record.header.get("start"), record.header.get("stop")
    if index >= len(sizes) or not (isinstance(start, int) and isinstance(stop, int)):
        return False
    return accept(record, Chunk(index, start, stop, sizes[index]), None, run_id, layout) is None


def remove(location: Any, run: str) -> str:
    """Delete one stored run (its id or a prefix). Returns its id.

    Raises
    ------
    CheckpointBusyError
        The run is running: it is not touched.
    """
    store = _store(location)
    run_id = _one_run(store, run)
    prefix = f"{run_id}/"
    try:
        held = store.lease(prefix + LEASE, leases.holder_record())
    except CheckpointBusyError as exc:
        holder = exc.holder
        raise CheckpointBusyError(
            f"run {run_id} in {store.location} is running (process {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}); it was not removed. Stop it or let it finish, then remove it", holder
        ) from None
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
