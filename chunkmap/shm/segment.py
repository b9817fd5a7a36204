"""Shared-memory segments: create, attach once per process, unlink, and the /dev/shm fallback.

A segment is a POSIX shared-memory object (``/dev/shm/<name>``) or, when /dev/shm is missing or
too small, a file in a temporary directory; either is mapped with ``mmap(MAP_SHARED)``. A segment's
*name* says which: a bare ``chunkmap_...`` token is a POSIX object, an absolute path is a file.

Why not :class:`multiprocessing.shared_memory.SharedMemory`
    On Python <= 3.12 every ``SharedMemory(name)`` -- attachments too -- registers the segment
    with the resource tracker, and a process that exits unlinks (through the tracker) segments
    other processes still use, with a "leaked shared_memory" warning. Here ``_posixshmem.shm_open``
    and :class:`mmap.mmap` are called directly: only the *creating* process registers the segment.

What is guaranteed about cleanup
    - The creating process unlinks the segment when the owning object is unlinked, closed as a
      context manager, garbage collected, or at interpreter exit (a
      :class:`multiprocessing.util.Finalize`, which also runs at the end of a
      ``multiprocessing.Process``, and which a forked child does not inherit). Only the creating
      process ever unlinks automatically, so a forked child exiting never removes its parent's
      segment.
    - If the creating process is killed (SIGKILL), a POSIX segment is unlinked by Python's
      resource tracker when the last process sharing that tracker exits (the tracker then prints
      its "leaked shared_memory" warning: this is the one case where it does, and rightly).
    - Whatever is left by processes that died (files of the fallback, which the tracker cannot
      remove, or segments of a killed process tree) is swept the next time a process in the same
      PID namespace creates a segment in that directory: names carry the PID namespace, the
      creator's PID and its resource tracker's PID, and a name whose creator and tracker no
      longer exist is unlinked. A segment whose tracker still runs is left to the tracker, so
      that it does not find the segment gone and print a second warning ("No such file or
      directory"). The tracker's PID is known in the process that started the tracker and in
      its forked children; a segment created in a spawned child names no tracker and is swept
      as soon as its creator is dead.
    - Attached mappings are never unlinked by their process, so an attaching child killed
      mid-use leaves nothing behind. Unlinking only removes the name: processes that have it
      mapped keep valid memory until they drop it.

Mappings per process
    :func:`attach` keeps a per-process cache name -> ``mmap``: attaching the same segment again
    (1000 tasks carrying the same reference, one after the other) reuses one mapping, and the
    creating process gets its own mapping back. The cache holds the :data:`MAX_MAPPINGS` most
    recently attached segments; each time a new segment is mapped, cached segments whose name
    was unlinked meanwhile are dropped, so a long-lived worker does not pin the memory of
    finished runs for longer than until its next new segment (:func:`forget_mappings` drops
    them at once). A mapping is unmapped once neither the cache nor a numpy view refers to it.

Space
    The segment is reserved with ``posix_fallocate`` at creation: a full /dev/shm (the 64 MB
    default of Docker) then fails at creation, and falls back to a file, instead of killing the
    process with SIGBUS at the first write past the limit. The fallback is announced once per
    process with a :class:`~chunkmap.shm.SharedMemoryFallbackWarning`. Setting the environment
    variable ``CHUNKMAP_SHM_DIR`` to a directory makes every new segment a file there, without a
    warning (the explicit choice).

>>> seg = create(1000)
>>> seg.mmap[:3] = b"abc"
>>> attach(seg.name).mmap is seg.mmap        # same process: the same mapping
True
>>> seg.unlink()
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict
from multiprocessing import resource_tracker, util

from ..errors import MissingFileError, SharedMemoryError, SharedMemoryFallbackWarning
from . import pids

try:  # POSIX shared memory, as multiprocessing.shared_memory uses it
    import _posixshmem
except ImportError:  # pragma: no cover - Windows: files only
    _posixshmem = None

__all__ = ["Segment", "create", "attach", "forget_mappings", "DEV_SHM", "ENV_DIR", "PREFIX", "MAX_MAPPINGS"]

DEV_SHM = "/dev/shm"
"""Where POSIX shared memory lives on Linux; its free space is checked before creating."""
ENV_DIR = "CHUNKMAP_SHM_DIR"
"""Environment variable: a directory where segments are created as memory-mapped files."""
PREFIX = "chunkmap"
"""Every segment name starts with this."""
MAX_MAPPINGS = 64
"""How many attached segments a process keeps mapped for reuse (least recently attached go)."""


_NS = "%x" % pids.namespace()
_MAPPINGS: OrderedDict[str, mmap.mmap] = OrderedDict()  # name -> this process's mapping, LRU order
_OWNED: weakref.WeakValueDictionary[str, Segment] = weakref.WeakValueDictionary()
_WARNED: set[str] = set()  # fallback directories already announced
_SWEPT: set[str] = set()  # directories already swept of dead processes' segments
_LOCK = threading.Lock()


def _reset_lock_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)


class Segment:
    """One mapped segment.

    Made by :func:`create` (this process owns the segment) or :func:`attach`. A segment of the
    creating process is unlinked by :meth:`unlink`, when the object is garbage collected, or at
    exit, whichever comes first.

    Attributes
    ----------
    name : str
        ``chunkmap_...`` (a POSIX shared-memory object) or an absolute path (a file).
    mmap : mmap.mmap or None
        The mapping; ``None`` once :meth:`close` was called.
    """

    __slots__ = ("name", "mmap", "_finalizer", "_creator", "__weakref__")

    def __init__(self, name: str, mm: mmap.mmap, owner: bool = False) -> None:
        self.name = name
        self.mmap: mmap.mmap | None = mm
        self._finalizer = None
        self._creator = os.getpid() if owner else -1
        if owner:
            self._finalizer = util.Finalize(self, _unlink, args=(name, self._creator), exitpriority=10)

    @property
    def size(self) -> int:
        """Size of the segment in bytes."""
        return len(self.mmap) if self.mmap is not None else 0

    @property
    def owner(self) -> bool:
        """True in the process that created the segment, until it is unlinked."""
        return self._creator == os.getpid() and self._finalizer.still_active()

    def close(self) -> None:
        """Drop this object's mapping (it is unmapped once no numpy view of it is left)."""
        self.mmap = None

    def unlink(self) -> None:
        """Remove the segment's name; only the creating process may (once; later calls do nothing).

        Raises
        ------
        SharedMemoryError
            In a process that did not create the segment.
        """
        if self._creator != os.getpid():
            raise SharedMemoryError(
                f"segment {self.name!r} was created by another process; only its creator unlinks it "
                f"(call unlink() there, or let the creator's object be garbage collected)"
            )
        self._finalizer()

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, size={self.size}, owner={self.owner})"


def _is_file(name: str) -> bool:
    return os.path.isabs(name)


def _unlink(name: str, pid: int) -> None:
    """Unlink ``name`` if this is the process ``pid`` that created it (the owner's finalizer)."""
    if os.getpid() != pid:
        return
    _MAPPINGS.pop(name, None)
    _OWNED.pop(name, None)  # later attaches by name fail here as anywhere else
    try:
        if _is_file(name):
            os.unlink(name)
        else:
            _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass
    if not _is_file(name):
        resource_tracker.unregister("/" + name, "shared_memory")


def _free_bytes(path: str) -> int:
    """Free bytes in the file system of ``path`` (0 if it does not exist)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _new_basename(tracker: int = 0) -> str:
    """``chunkmap_<namespace>_<creator pid>_<tracker pid, 0 if none>_<random>``."""
    return f"{PREFIX}_{_NS}_{os.getpid()}_{tracker}_{secrets.token_hex(6)}"


def _tracker_pid() -> int:
    """PID of the resource tracker this process registers segments with (0 if it is not known).

    Only the process that started the tracker (and its forked children) know it: a spawned
    child is handed the tracker's pipe, not its PID.
    """
    resource_tracker.ensure_running()
    return getattr(resource_tracker._resource_tracker, "_pid", None) or 0


def _pids_in_name(rest: str) -> tuple[int, int]:
    """(creator, tracker) from the part of a name after the namespace; tracker 0 if none is named."""
    fields = rest.split("_")
    creator = int(fields[0])
    tracker = int(fields[1]) if len(fields) > 2 and fields[1].isdigit() else 0
    return creator, tracker


def _sweep(directory: str) -> list[str]:
    """Unlink segments in ``directory`` left by dead processes of this PID namespace.

    A segment is left alone while its creator or the resource tracker it registered with lives.
    """
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    head = f"{PREFIX}_{_NS}_"
    for entry in entries:
        if not entry.startswith(head):
            continue
        try:
            creator, tracker = _pids_in_name(entry[len(head):])
        except ValueError:
            continue
        if creator == os.getpid() or pids.alive(creator) or (tracker and pids.alive(tracker)):
            continue
        try:
            if directory == DEV_SHM and _posixshmem is not None:
                _posixshmem.shm_unlink("/" + entry)
            else:
                os.unlink(os.path.join(directory, entry))
            removed.append(entry)
        except OSError:
            pass
    return removed


def _sweep_once(directory: str) -> None:
    if directory not in _SWEPT:
        _SWEPT.add(directory)
        _sweep(directory)


def _map_fd(fd: int, size: int, reserve: bool) -> mmap.mmap:
    os.ftruncate(fd, size)
    if reserve:
        os.posix_fallocate(fd, 0, size)
    return mmap.mmap(fd, size)


def _create_posix(size: int) -> tuple[str, mmap.mmap] | None:
    """A new POSIX segment, or None if /dev/shm is missing or has no room for ``size`` bytes."""
    if _posixshmem is None or _free_bytes(DEV_SHM) < size:
        return None
    _sweep_once(DEV_SHM)
    name = _new_basename(_tracker_pid())
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        mm = _map_fd(fd, size, reserve=True)
    except OSError as exc:
        _posixshmem.shm_unlink("/" + name)
        if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            return None
        raise
    finally:
        os.close(fd)
    resource_tracker.register("/" + name, "shared_memory")
    return name, mm


def _create_file(directory: str, size: int) -> tuple[str, mmap.mmap]:
    _sweep_once(directory)
    path = os.path.join(directory, _new_basename())
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except OSError as exc:
        raise SharedMemoryError(
            f"cannot create a shared array file in {directory!r}: {exc}; set {ENV_DIR} to a writable directory"
        ) from exc
    try:
        mm = _map_fd(fd, size, reserve=True)
    except OSError as exc:
        os.unlink(path)
        raise SharedMemoryError(
            f"cannot reserve {size} bytes for a shared array in {directory!r}: {exc}; free some space "
            f"or set {ENV_DIR} to a directory with room (a tmpfs is fastest)"
        ) from exc
    finally:
        os.close(fd)
    return path, mm


def create(nbytes: int) -> Segment:
    """Create a segment of ``nbytes`` bytes (at least 1), owned by this process.

    Parameters
    ----------
    nbytes : int
        Size in bytes; 0 is rounded up to 1 (a mapping cannot be empty).

    Returns
    -------
    Segment
        Zero-filled, mapped, registered for cleanup.

    Raises
    ------
    SharedMemoryError
        If neither /dev/shm nor the fallback directory has room.

    Warns
    -----
    SharedMemoryFallbackWarning
        Once per process, when /dev/shm is missing or too small and a temporary file is used.
    """
    size = max(int(nbytes), 1)
    forced = os.environ.get(ENV_DIR)
    made = None if forced else _create_posix(size)
    if made is None:
        directory = forced or tempfile.gettempdir()
        if not forced and directory not in _WARNED:
            _WARNED.add(directory)
            warnings.warn(
                f"{DEV_SHM} is missing or has less than {size} bytes free ({_free_bytes(DEV_SHM)}): shared "
                f"arrays are memory-mapped files in {directory!r} instead, which may be slower; enlarge "
                f"{DEV_SHM} (docker run --shm-size=...) or set {ENV_DIR} to a tmpfs directory",
                SharedMemoryFallbackWarning,
                stacklevel=3,
            )
        made = _create_file(directory, size)
    name, mm = made
    seg = Segment(name, mm, owner=True)
    with _LOCK:
        _OWNED[name] = seg
    return seg


def _exists(name: str) -> bool:
    if _is_file(name):
        return os.path.exists(name)
    if os.path.isdir(DEV_SHM):
        return os.path.exists(os.path.join(DEV_SHM, name))
    try:  # pragma: no cover - POSIX shared memory without /dev/shm (macOS)
        os.close(_posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600))
    except OSError:
        return False
    return True  # pragma: no cover


def _prune() -> None:
    """Drop cached mappings of segments that were unlinked, and the least recent beyond the cap."""
    for name in [n for n in _MAPPINGS if not _exists(n)]:
        del _MAPPINGS[name]
    while len(_MAPPINGS) >= MAX_MAPPINGS:
        _MAPPINGS.popitem(last=False)


def forget_mappings() -> int:
    """Drop this process's cached mappings of attached segments; return how many were cached.

    Each is unmapped as soon as no numpy view of it is left. Segments this process created are
    not affected.
    """
    with _LOCK:
        n = len(_MAPPINGS)
        _MAPPINGS.clear()
    return n


def _map_existing(name: str) -> mmap.mmap:
    try:
        if _is_file(name):
            fd = os.open(name, os.O_RDWR)
        else:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    except FileNotFoundError as exc:
        raise MissingFileError(
            f"no shared-memory segment named {name!r}: its creating process has unlinked it or exited; "
            f"keep the SharedArray that created it alive while other processes attach"
        ) from exc
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def attach(name: str) -> Segment:
    """The segment ``name``, mapped once per process.

    In the creating process this is the creator's own :class:`Segment` (so holding it keeps the
    segment alive); elsewhere a new non-owning :class:`Segment` on the process's cached mapping.

    Raises
    ------
    chunkmap.errors.MissingFileError
        If no segment of that name exists (any more).
    """
    with _LOCK:
        seg = _OWNED.get(name)
        if seg is not None and seg.mmap is not None:
            return seg
        mm = _MAPPINGS.get(name)
        if mm is not None and not mm.closed:
            _MAPPINGS.move_to_end(name)
        else:
            _prune()
            mm = _map_existing(name)
            _MAPPINGS[name] = mm
    return Segment(name, mm)
