"""Who writes an ``output=`` store: one run at a time, the holder named, a dead holder's store taken over.

Two runs writing the same store would write and count the same boxes, so a run holds the
store's *lease* from the moment it opens the store until it ends (also on an error or Ctrl-C).
The holder record (:func:`chunkmap.checkpoint.lease.holder_record`: host, pid, process start,
since) is kept in the group's ``chunkmap-lease`` attribute, where a refused run reads whom to
name; how the lease itself is held depends on the store:

- a local path (or a zarr ``LocalStore``): an exclusive ``flock`` on the store's folder, which
  the kernel drops when the holder dies, however it dies (SIGKILL included): a rerun after a
  kill takes the store over at once and resumes;
- any other zarr store (in memory, fsspec): the record alone. A record whose holder still runs
  refuses the run; one left by a dead process of this host (:func:`~chunkmap.checkpoint.lease.is_dead`)
  is taken over. Two runs opening such a store in the same instant are not told apart, and a
  holder on another host that died leaves a record to remove by hand (the error says how).
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoint import lease as leases
from .errors import OutputStoreError

__all__ = ["OutputLease", "local_path", "ATTRIBUTE"]

#: the group attribute holding the holder record while a run holds the store
ATTRIBUTE = "chunkmap-lease"
#: how long taking a held ``flock`` retries before the run is refused (seconds)
BUSY_RETRY = 0.25


def local_path(output: Any) -> str | None:
    """The folder of ``output`` when it is a local path or a zarr ``LocalStore``, else None."""
    if isinstance(output, (str, os.PathLike)) and "://" not in os.fspath(output):
        return os.fspath(output)
    root = getattr(output, "root", None)
    return os.fspath(root) if type(output).__name__ == "LocalStore" and root is not None else None


class OutputLease:
    """The lease of the store at ``output`` (see the module docstring): lock, check, hold, release.

    :meth:`lock` is taken before the store is opened (for a local path: the ``flock``, so that
    two runs never create or check the group at once); :meth:`check` refuses a store held by the
    record of another live run; :meth:`hold` writes this run's record once the store is known
    to be this run's; :meth:`release` removes the record (if still this run's) and drops the
    ``flock``.
    """

    def __init__(self, output: Any, where: str) -> None:
        self.where = where
        self.path = local_path(output)
        self.holder = leases.holder_record()
        self.group: Any = None
        self._fd = -1

    def lock(self, read_holder: Any) -> None:
        """Take the ``flock`` of a local store; ``read_holder()`` gives the record of a run that holds it."""
        if self.path is None:
            return
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise OutputStoreError(f"output={self.where!r} cannot be locked for this run ({error.strerror or error}); "
                                   f"expected a folder this process can create and read") from None
        if not leases.flock_within(fd, BUSY_RETRY):
            os.close(fd)
            raise self._busy(read_holder() or {})
        self._fd = fd

    def check(self, group: Any) -> None:
        """Refuse a store that another live run holds by its record alone (the stores without a ``flock``)."""
        other = group.attrs.get(ATTRIBUTE)
        if self.path is None and isinstance(other, dict) and other and not leases.is_dead(other):
            raise self._busy(other)

    def hold(self, group: Any) -> None:
        """Record this run as the holder in ``group`` (once the store is known to be this run's)."""
        self.group = group  # first: a Ctrl-C while the record is written still has it removed
        group.attrs[ATTRIBUTE] = self.holder

    def release(self) -> None:
        """Remove this run's holder record and drop the ``flock`` (also when the run failed; idempotent).

        The record is read from the store again: an interrupted write may have reached the store
        and not the group's copy of its attributes.
        """
        group, self.group = self.group, None
        try:
            if group is not None:
                group = type(group).open(group.store)
                if group.attrs.get(ATTRIBUTE) == self.holder:
                    del group.attrs[ATTRIBUTE]
        finally:
            if self._fd >= 0:
                os.close(self._fd)  # closing the only descriptor drops the flock
                self._fd = -1

    def _busy(self, other: dict[str, Any]) -> OutputStoreError:
        remove = "" if self.path is not None else (
            f"; if that process is gone (on another host), delete the group attribute {ATTRIBUTE!r} of the store")
        return OutputStoreError(
            f"output={self.where!r} is being written by another run: {leases.holder_text(other)}. Two runs into one "
            f"store would write and count the same boxes; wait for it to finish (rerunning then resumes from its "
            f"boxes), stop it, or pass another output= path{remove}")
