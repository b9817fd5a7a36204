"""Where checkpoint records live: the :class:`ChunkStore` interface and its local implementations.

A store maps string keys (``run/record``) to bytes. Every implementation gives the same
guarantees, which :class:`chunkmap.testing.ChunkStoreTests` checks:

- ``put`` is atomic: a reader sees the whole old value or the whole new one, never a mix;
- ``create`` writes only if the key is absent, atomically, and says whether it did;
- ``lease`` gives one holder at a time the right to write a run (another caller gets
  :class:`~chunkmap.errors.CheckpointBusyError` naming the holder), and a lease left by a dead
  process can be taken over;
- failures of the medium (full disk, permissions, a directory where a file should be) raise
  :class:`~chunkmap.errors.CheckpointError` naming the location and leave no partial file;
- a store pickles as its constructor arguments;
- a store that holds connections may have ``close()``, which a :class:`~chunkmap.Checkpoint`
  that opened it from a URL calls when its run ends.

:class:`DirectoryStore` (a path) and :class:`MemoryStore` live here;
:class:`chunkmap.redis.checkpoint.RedisChunkStore` is the third.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Protocol

from ..errors import CheckpointBusyError, CheckpointError, OptionError
from . import lease as leases

__all__ = ["ChunkStore", "Lease", "DirectoryStore", "MemoryStore", "open_store"]

#: how long taking a lease retries while another process only peeks at it (``holder``)
BUSY_RETRY = 0.25


class Lease(Protocol):
    """The right to write one run's records, held until :meth:`release`."""

    def check(self) -> bool:
        """True while held; False if it had been lost (the store lost data) and was taken again.

        Raises :class:`~chunkmap.errors.CheckpointBusyError` if another run took it meanwhile.
        """
        ...

    def release(self) -> None: ...


class ChunkStore(Protocol):
    """Key-value storage for checkpoints; see the module docstring for the guarantees."""

    location: str

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def create(self, key: str, data: bytes) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...

    def lease(self, key: str, holder: dict[str, Any]) -> Lease: ...

    def holder(self, key: str) -> dict[str, Any] | None: ...


class DirectoryStore:
    """A :class:`ChunkStore` in a directory: one file per key, written to a temporary name and renamed.

    Leases are ``flock`` locks on a file, which the kernel releases when the holding process
    dies, however it dies. On network file systems they need working ``flock`` (NFSv4 and
    Lustre have it; some older NFS mounts do not): use a Redis store there.

    Examples
    --------
    >>> import tempfile
    >>> store = DirectoryStore(tempfile.mkdtemp())
    >>> store.put("run/chunk-1", b"data"); store.get("run/chunk-1"), store.get("run/chunk-2")
    (b'data', None)
    >>> store.create("run/chunk-1", b"other"), list(store.keys("run/"))
    (False, ['run/chunk-1'])
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.location = os.fspath(path)

    def __reduce__(self):
        return (DirectoryStore, (self.location,))

    def __repr__(self) -> str:
        return f"DirectoryStore({self.location!r})"

    def _file(self, key: str) -> Path:
        return self.path / key

    def _failed(self, doing: str, key: str, exc: OSError) -> CheckpointError:
        reason = exc.strerror or str(exc)
        advice = {
            errno.ENOSPC: "free some space there, or give run() another checkpoint= location",
            errno.EDQUOT: "free some space there, or give run() another checkpoint= location",
            errno.EFBIG: "the file size limit (ulimit -f) is reached; raise it or use another location",
            errno.EACCES: "make it writable, or give run() another checkpoint= location",
            errno.EROFS: "the file system is read-only; give run() another checkpoint= location",
            errno.EISDIR: "a directory is where a record should be; remove it",
        }.get(exc.errno, "check the location, or give run() another checkpoint= location")
        return CheckpointError(
            f"cannot {doing} {key!r} in the checkpoint directory {self.location}: {reason}; {advice}. "
            f"Finished chunks already stored there are kept"
        )

    def get(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._failed("read", key, exc) from None

    def _write_temporary(self, key: str, data: bytes) -> Path:
        target = self._file(key)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(data)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise self._failed("write", key, exc) from None
        return temporary

    def put(self, key: str, data: bytes) -> None:
        temporary = self._write_temporary(key, data)
        try:
            os.replace(temporary, self._file(key))
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise self._failed("write", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        temporary = self._write_temporary(key, data)
        try:
            os.link(temporary, self._file(key))  # atomic, and fails if the name exists
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._failed("write", key, exc) from None
        finally:
            temporary.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        """Remove ``key``; the last key of a folder takes the folder (and writes a kill left in it) along."""
        target = self._file(key)
        try:
            target.unlink(missing_ok=True)
            folder = target.parent
            if folder != self.path and all(entry.name.startswith(".") for entry in folder.iterdir()):
                for leftover in folder.glob(".*.tmp"):
                    leftover.unlink(missing_ok=True)
                folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._failed("delete", key, exc) from None

    def keys(self, prefix: str) -> Iterator[str]:
        folder = prefix.rpartition("/")[0]
        base = self.path / folder if folder else self.path
        for root, directories, files in os.walk(base):
            directories[:] = sorted(name for name in directories if not name.startswith("."))
            relative = Path(root).relative_to(self.path).as_posix()
            for name in sorted(files):
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix) and not name.startswith("."):
                    yield key

    def lease(self, key: str, holder: dict[str, Any]) -> FileLease:
        return FileLease(self, key, holder)

    def holder(self, key: str) -> dict[str, Any] | None:
        try:
            fd = os.open(self._file(key), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return leases.decode_holder(os.pread(fd, 1 << 16, 0))
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


class FileLease:
    """A :class:`Lease` as an exclusive ``flock`` on the file of ``key``, holding the holder record."""

    def __init__(self, store: DirectoryStore, key: str, holder: dict[str, Any]) -> None:
        self.store, self.key, self.holder = store, key, holder
        self.fd = self._take()

    def _take(self) -> int:
        path = self.store._file(self.key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)  # the umask decides
        except OSError as exc:
            raise self.store._failed("lock", self.key, exc) from None
        if not leases.flock_within(fd, BUSY_RETRY):
            other = leases.decode_holder(os.pread(fd, 1 << 16, 0))
            os.close(fd)
            run = self.key.rpartition("/")[0]
            raise CheckpointBusyError(leases.busy_message(self.store.location, run, other), other)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, leases.encode_holder(self.holder), 0)
        except OSError as exc:
            os.close(fd)
            raise self.store._failed("lock", self.key, exc) from None
        return fd

    def check(self) -> bool:
        try:
            same = os.stat(self.store._file(self.key)).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return True
        os.close(self.fd)  # the file was removed under us (the run's folder deleted): lock it again
        self.fd = self._take()
        return False

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = -1


class MemoryStore:
    """A :class:`ChunkStore` in this process's memory: for tests and for runs that need no durability.

    Examples
    --------
    >>> store = MemoryStore()
    >>> store.create("run/manifest", b"m"), store.create("run/manifest", b"n"), store.get("run/manifest")
    (True, False, b'm')
    """

    location = "memory"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.leases: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        return (MemoryStore, ())  # its constructor arguments: a copy elsewhere starts empty

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.data[key] = bytes(data)

    def create(self, key: str, data: bytes) -> bool:
        with self._lock:
            if key in self.data:
                return False
            self.data[key] = bytes(data)
            return True

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str) -> Iterator[str]:
        yield from sorted(key for key in list(self.data) if key.startswith(prefix))

    def lease(self, key: str, holder: dict[str, Any]) -> MemoryLease:
        return MemoryLease(self, key, holder)

    def holder(self, key: str) -> dict[str, Any] | None:
        return self.leases.get(key)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self.data)} keys)"


class MemoryLease:
    """A :class:`Lease` of a :class:`MemoryStore`: one holder per key within the process."""

    def __init__(self, store: MemoryStore, key: str, holder: dict[str, Any]) -> None:
        self.store, self.key, self.holder = store, key, dict(holder, token=uuid.uuid4().hex)
        self._take()

    def _take(self) -> None:
        with self.store._lock:
            other = self.store.leases.setdefault(self.key, self.holder)
        if other is not self.holder:
            run = self.key.rpartition("/")[0]
            raise CheckpointBusyError(leases.busy_message(self.store.location, run, other), other)

    def check(self) -> bool:
        current = self.store.leases.get(self.key)
        if current is self.holder:
            return True
        self._take()
        return False

    def release(self) -> None:
        with self.store._lock:
            if self.store.leases.get(self.key) is self.holder:
                del self.store.leases[self.key]


def open_store(location: Any) -> ChunkStore:
    """The store behind a checkpoint location: a path, a ``redis://`` URL or a :class:`ChunkStore`."""
    if isinstance(location, (str, os.PathLike)):
        text = os.fspath(location)
        if text.startswith(("redis://", "rediss://", "unix://")):
            from ..redis.checkpoint import RedisChunkStore

            return RedisChunkStore(text)
        return DirectoryStore(text)
    methods = ("get", "put", "create", "delete", "keys", "lease", "holder")
    if all(callable(getattr(location, name, None)) for name in methods):
        return location
    missing = [name for name in methods if not callable(getattr(location, name, None))]
    raise OptionError(
        f"checkpoint must be a directory path, a redis:// URL, a chunkmap.Checkpoint or a store with "
        f"{'/'.join(methods)}; got {type(location).__name__} {location!r:.80}"
        + (f" (it has no {', '.join(missing)})" if len(missing) < len(methods) else "")
    )
