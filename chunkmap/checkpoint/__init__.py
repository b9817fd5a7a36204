"""Checkpoints: every finished chunk persisted, so that a stopped or crashed run resumes exactly.

``run(..., checkpoint=LOCATION)`` stores each finished chunk at ``LOCATION`` (a directory, a
``redis://`` URL, a :class:`ChunkStore`, or a :class:`Checkpoint` naming one of them) under the
run's identity, and a rerun of the same call computes only what is missing. The guarantees:

- **Exact or an error.** A rerun returns what an uninterrupted run returns. A record is used only
  if it is intact (checksums, exact length) and proves that it belongs to this run, this chunk
  layout and the chunk it is filed under (:mod:`~chunkmap.checkpoint.records`); anything else is
  computed again, counted in ``result.stats.rejected`` and reported by a
  :class:`~chunkmap.errors.CheckpointWarning`.
- **The identity is what the run computes** (:mod:`~chunkmap.checkpoint.identity`): the
  function's code and bound state, ``kwargs``, ``skip``, ``timeout``, an explicit ``chunks=``,
  the inputs' contents and the mask. Another call at the same location starts a fresh run beside
  the others, with a notice saying what differs from the closest one.
- **One writer per run.** A run holds its lease while it runs; the same call started elsewhere
  meanwhile raises :class:`~chunkmap.errors.CheckpointBusyError` naming the other process. A
  lease left by a killed process is taken over at once.
- **Lost data is noticed.** A store that lost the run's manifest, lease or records (a Redis
  restart without persistence, an eviction, a deleted folder) is reported; what is missing is
  computed again.
- **Store failures stop the run** with a :class:`~chunkmap.errors.CheckpointError` naming the
  location (a full disk, a read-only folder, a corrupt manifest), leaving no partial file.

:func:`runs`, :func:`run_failures` and :func:`remove` (and ``chunkmap status``, ``chunkmap
failures``, ``chunkmap remove``) inspect and clean a location.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import OptionError
from .identity import Identity, function_digest, run_identity
from .records import decode_record, encode_record
from .run import RunCheckpoint, describe
from .status import RunStatus, remove, run_failures, runs
from .stores import ChunkStore, DirectoryStore, Lease, MemoryStore, open_store

if TYPE_CHECKING:
    from ..kernel import Execution
    from ..plan import Plan

__all__ = ["Checkpoint", "ChunkStore", "Lease", "DirectoryStore", "MemoryStore", "open_store", "runs",
           "run_failures", "remove", "RunStatus", "Identity", "run_identity", "function_digest",
           "RunCheckpoint", "encode_record", "decode_record"]


class Checkpoint:
    """Where a run's checkpoint lives, and optionally the name that identifies its function.

    Parameters
    ----------
    location : str, path or ChunkStore
        A directory, a ``redis://`` URL, or a store.
    name : str, optional
        Identify the function by this name instead of by its code and ``kwargs`` (for functions
        whose state cannot be fingerprinted, such as methods of SWIG objects, or to decide
        yourself when results may be reused). Change the name whenever what the function computes
        changes. The inputs, mask and options stay part of the identity.

    Examples
    --------
    >>> import numpy as np, tempfile, chunkmap
    >>> spec = chunkmap.Checkpoint(tempfile.mkdtemp(), name="abs-v1")
    >>> first = chunkmap.run(abs, np.arange(-2, 2), checkpoint=spec, scheduler="sync")
    >>> again = chunkmap.run(abs, np.arange(-2, 2), checkpoint=spec, scheduler="sync")
    >>> again.stats.resumed, again.values.tolist()
    (4, [2, 1, 0, 1])
    """

    def __init__(self, location: Any, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise OptionError(f"Checkpoint name must be a non-empty string; got {name!r}")
        self.store = open_store(location)
        self.name = name
        self._opened = self.store is not location  # a store passed in is the caller's to close

    def close(self) -> None:
        """Close the connections of the store this Checkpoint opened from a ``redis://`` URL (a store
        passed in is left open; a later run reopens them). :func:`chunkmap.run` closes the
        Checkpoint it makes of a path or URL when it ends."""
        close = getattr(self.store, "close", None)
        if self._opened and close is not None:
            close()

    @classmethod
    def of(cls, checkpoint: Any) -> Checkpoint:
        """The ``checkpoint=`` option of :func:`chunkmap.run` as a Checkpoint."""
        return checkpoint if isinstance(checkpoint, Checkpoint) else cls(checkpoint)

    def open_run(self, plan: Plan, execution: Execution, chunks: int | str) -> RunCheckpoint:
        """Identify the run of ``execution`` over ``plan`` and take its lease in this store.

        Raises
        ------
        CheckpointBusyError
            Another live process runs the same call.
        IdentityError
            The function or its arguments cannot be fingerprinted (name it instead).
        """
        identity = run_identity(execution.func, plan.source, execution.skip, execution.kwargs, execution.timeout,
                                chunks, name=self.name, outputs=execution.outputs)
        return RunCheckpoint(self.store, identity, describe(execution.func, plan))

    def __repr__(self) -> str:
        named = f", name={self.name!r}" if self.name is not None else ""
        return f"Checkpoint({self.store.location!r}{named})"
