"""The errors chunkmap raises.

Every error says what was received, what was expected and, where it can, how to fix it. Each
class also derives from the builtin exception a caller would naturally catch, so
``except ValueError`` keeps working around a call to :func:`chunkmap.run`::

    ChunkmapError(Exception)
    ├── InputError(ValueError)                 the arrays given to run()
    │   ├── ShapeError                         shapes that do not broadcast together
    │   ├── DtypeError(TypeError)              an input dtype chunkmap cannot pass to func
    │   └── MaskError                          a mask of the wrong shape or dtype
    ├── OptionError(ValueError)                a keyword option out of its domain (chunks, skip, kwargs)
    ├── NotCallableError(TypeError)            func is not callable
    ├── SchedulerError(ValueError)             an unknown or contradictory scheduler choice
    │   └── SchedulerUnreachableError(ConnectionError)   nothing answers at the address
    ├── ElementError(RuntimeError)             func raised an exception not listed in skip=
    │   ├── UnpicklableResultError             func returned a value a worker cannot send back
    │   └── OutputCountError(ValueError)       func returned other than one value per declared output
    ├── WorkerStartError(RuntimeError)         worker processes die before evaluating anything
    ├── WorkerImportError(ImportError)         dask workers cannot import a module the run needs
    ├── MissingDependencyError(ImportError)    an optional library a feature needs (xarray, pandas) is missing
    ├── SetupError(RuntimeError)               a Workers setup or a per_worker factory raised
    ├── RunCancelledError(CancelledError)      the run's cancel= event was set (concurrent.futures')
    ├── NotPicklableError(TypeError)           func or setup cannot be sent to worker processes
    ├── MissingFileError(FileNotFoundError)    a file chunkmap was asked to read does not exist
    │   └── MissingArrayError(KeyError)        no .npy file for that array (chunkmap.npy: a name or a path)
    ├── FormatError(ValueError)                bytes that are not what they claim to be
    │   ├── NpyFormatError                     not a readable .npy file (truncated, object dtype, ...)
    │   └── CodecError                         a truncated, corrupted or foreign array payload
    ├── StoreError                             an array store (Redis) failed
    │   ├── StoreConnectionError(ConnectionError)   the store's server cannot be reached
    │   │   └── StoreTimeoutError(TimeoutError)      it did not answer within the timeout
    │   ├── MissingKeyError(KeyError)          no array under that key
    │   └── UnboundedDeleteError(ValueError)   delete_prefix("") on a store without a namespace
    ├── CheckpointError(OSError)               a checkpoint cannot be read, written or trusted
    │   ├── CheckpointBusyError                another live run holds this run's checkpoint
    │   ├── CheckpointUnreachableError(ConnectionError)   the checkpoint's server cannot be reached
    │   └── IdentityError(TypeError)           func or kwargs hold something that cannot be fingerprinted
    ├── ResultWriteError(OSError)              a result file cannot be written (its folder vanished, a full disk)
    ├── OutputStoreError(OSError)              an output= zarr store that holds other data, or values it cannot hold
    ├── SharedMemoryError(OSError)             a shared-memory segment cannot be created, mapped or unlinked
    ├── ClosedError(ValueError)                use of a closed SharedArray or SlotPool
    │   └── PoolClosedError                    the SlotPool was closed, or aborted by an exception
    │       └── PeerDiedError                  a producer or consumer process ended without leaving the SlotPool
    ├── PoolTimeoutError(TimeoutError)         no slot became available within ``timeout``
    ├── SignatureError(ValueError)             a chunkmap.cfunc signature outside the supported set
    ├── CPointerError(TypeError)               not a C function pointer chunkmap.cfunc can call or find again
    └── CError(RuntimeError)                   a chunkmap.cfunc function returned a non-zero error code

    UserWarning
    └── ChunkmapWarning
        ├── CheckpointWarning                  checkpoint records not used, lost, or a new run beside others
        └── SharedMemoryFallbackWarning        /dev/shm is missing or too small: files are used instead
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

__all__ = [
    "ChunkmapError",
    "OutputStoreError",
    "InputError",
    "ShapeError",
    "DtypeError",
    "MaskError",
    "OptionError",
    "NotCallableError",
    "SchedulerError",
    "SchedulerUnreachableError",
    "ElementError",
    "UnpicklableResultError",
    "OutputCountError",
    "WorkerStartError",
    "WorkerImportError",
    "MissingDependencyError",
    "SetupError",
    "RunCancelledError",
    "NotPicklableError",
    "MissingFileError",
    "MissingArrayError",
    "FormatError",
    "NpyFormatError",
    "CodecError",
    "StoreError",
    "StoreConnectionError",
    "StoreTimeoutError",
    "MissingKeyError",
    "UnboundedDeleteError",
    "CheckpointError",
    "CheckpointBusyError",
    "CheckpointUnreachableError",
    "IdentityError",
    "ResultWriteError",
    "SharedMemoryError",
    "ClosedError",
    "PoolClosedError",
    "PeerDiedError",
    "PoolTimeoutError",
    "ChunkmapWarning",
    "CheckpointWarning",
    "SharedMemoryFallbackWarning",
    "SignatureError",
    "CPointerError",
    "CError",
]


class ChunkmapError(Exception):
    """Base class of every error raised by chunkmap."""


class InputError(ChunkmapError, ValueError):
    """The input arrays cannot be used as given."""


class ShapeError(InputError):
    """Input shapes do not broadcast to one shape."""


class DtypeError(InputError, TypeError):
    """An input has a dtype whose elements cannot be passed to ``func`` as Python scalars."""


class MaskError(InputError):
    """``mask`` has the wrong shape or dtype, or the mask callable returned one."""


class OptionError(ChunkmapError, ValueError):
    """A keyword option of :func:`chunkmap.run` is outside its domain."""


class NotCallableError(ChunkmapError, TypeError):
    """``func`` is not callable."""


class SchedulerError(ChunkmapError, ValueError):
    """The scheduler choice is unknown or contradicts ``client=``."""


class SchedulerUnreachableError(SchedulerError, ConnectionError):
    """No dask scheduler answered at the given address."""


class ElementError(ChunkmapError, RuntimeError):
    """``func`` raised an exception that ``skip=`` does not list.

    The original exception is chained as ``__cause__`` (and kept in :attr:`exception_type` and
    :attr:`exception_message` when it cannot cross a process boundary).

    Attributes
    ----------
    coords : tuple of int
        Coordinates of the element in the broadcast input shape.
    inputs : tuple
        The Python scalars ``func`` was called with.
    exception_type : str
        Name of the exception's class.
    exception_message : str
        ``str()`` of the exception.
    """

    def __init__(
        self, coords: tuple[int, ...], inputs: tuple[Any, ...], exception_type: str, exception_message: str
    ) -> None:
        self.coords = tuple(coords)
        self.inputs = tuple(inputs)
        self.exception_type = exception_type
        self.exception_message = exception_message
        super().__init__(
            f"func raised {exception_type}: {exception_message} at element {self.coords} "
            f"called with inputs {self.inputs}; pass skip={exception_type} to record such "
            f"elements in result.failures and go on"
        )

    def __reduce__(self):
        return (
            type(self),
            (self.coords, self.inputs, self.exception_type, self.exception_message),
        )


class UnpicklableResultError(ElementError):
    """``func`` returned a value that cannot be pickled back from a worker process.

    ``exception_type`` is the returned value's type, ``exception_message`` the pickling error.
    """

    def __init__(
        self, coords: tuple[int, ...], inputs: tuple[Any, ...], exception_type: str, exception_message: str
    ) -> None:
        super().__init__(coords, inputs, exception_type, exception_message)
        self.args = (
            f"func returned a {exception_type} at element {self.coords} called with inputs "
            f"{self.inputs}, which cannot be sent back from the worker process ({exception_message}); "
            f"return plain values (numbers, strings, tuples of them: convert inside func), or run "
            f"on scheduler='threads', which keeps the values in this process",
        )


class OutputCountError(ElementError, ValueError):
    """``func`` returned something other than a sequence of one value per name of ``outputs=``.

    ``exception_type`` is the returned value's type, ``exception_message`` what it was and what
    ``outputs=`` expected.
    """

    def __init__(
        self, coords: tuple[int, ...], inputs: tuple[Any, ...], exception_type: str, exception_message: str
    ) -> None:
        super().__init__(coords, inputs, exception_type, exception_message)
        self.args = (
            f"func returned {exception_message}, at element {self.coords} called with inputs {self.inputs}; "
            f"return one value per output name, or change outputs=",
        )


class WorkerStartError(ChunkmapError, RuntimeError):
    """Worker processes die before evaluating any element (their error output says why)."""


class WorkerImportError(ChunkmapError, ImportError):
    """dask workers cannot import a module the run needs, and chunkmap cannot ship it (see :mod:`chunkmap.shipping`).

    ``name`` (as on ``ImportError``) is the module's name.
    """


class MissingDependencyError(ChunkmapError, ImportError):
    """An optional library that a feature needs (xarray, pandas) cannot be imported.

    ``name`` (as on ``ImportError``) is the library's name; the message names the extra to install.
    """


class SetupError(ChunkmapError, RuntimeError):
    """A :class:`~chunkmap.Workers` setup or a :func:`~chunkmap.per_worker` factory raised; the run stopped.

    Its message names the process and carries the original traceback as text (it crosses
    process boundaries).
    """

    @classmethod
    def of(cls, what: str, where: str, exc: BaseException) -> SetupError:
        import traceback

        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        return cls(f"{what} raised {type(exc).__name__}: {exc} in {where}; it must succeed in every "
                   f"process that calls func. Its traceback:\n{trace}")


class RunCancelledError(ChunkmapError, CancelledError):
    """The run stopped because its ``cancel=`` event was set (from another thread)."""


class NotPicklableError(ChunkmapError, TypeError):
    """``func``, ``kwargs`` or a setup cannot be pickled for a scheduler that sends them to worker processes."""


class MissingFileError(ChunkmapError, FileNotFoundError):
    """A file chunkmap was asked to read does not exist."""


class MissingArrayError(MissingFileError, KeyError):
    """No ``.npy`` file holds the array asked for: a name of a :class:`~chunkmap.npy.NpyLibrary`
    or the path of an :class:`~chunkmap.npy.NpyReader`.

    One class for both, wherever the file went missing (before the first read or between two).
    It is a ``FileNotFoundError`` (a file is missing) and a ``KeyError`` (the mapping protocol:
    ``library.get(name)``), but not a :class:`MissingKeyError`, which is about array stores
    (Redis): code that caught ``MissingKeyError`` around an ``NpyLibrary`` catches this class,
    ``KeyError`` or ``FileNotFoundError`` instead.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FormatError(ChunkmapError, ValueError):
    """Bytes (a file or a payload) are not in the format they claim to be."""


class NpyFormatError(FormatError):
    """A file is not a readable .npy array: truncated, corrupt, foreign, or of object dtype."""


class CodecError(FormatError):
    """An encoded array payload is truncated, corrupted, foreign, or holds object data."""


class StoreError(ChunkmapError):
    """An array store (such as Redis) failed."""


class StoreConnectionError(StoreError, ConnectionError):
    """The store's server cannot be reached or dropped the connection."""


class StoreTimeoutError(StoreConnectionError, TimeoutError):
    """The store's server did not answer a read or write (or a connection) within the timeout.

    Raised at once, without a retry: a server that is stopped or overloaded would only make a
    retry wait the timeout again.
    """


class MissingKeyError(StoreError, KeyError):
    """No array is stored under the requested key."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnboundedDeleteError(StoreError, ValueError):
    """A delete by prefix that would remove every key of the database was refused.

    Raised by ``RedisArrayStore.delete_prefix("")`` on a store without a namespace; a
    ``ValueError`` as it was before it had a class of its own.
    """


class CheckpointError(ChunkmapError, OSError):
    """A checkpoint location cannot be read, written or trusted (corrupt manifest, full disk...)."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""


class OutputStoreError(ChunkmapError, OSError):
    """``output=`` names a zarr store that holds another call's result or other data, or values it cannot store."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""


class CheckpointBusyError(CheckpointError):
    """Another live run holds the checkpoint of the same call.

    Attributes
    ----------
    holder : dict
        What the other run recorded about itself: ``host``, ``pid``, ``started``.
    """

    def __init__(self, message: str, holder: dict | None = None) -> None:
        self.holder = dict(holder or {})
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.holder))


class CheckpointUnreachableError(CheckpointError, ConnectionError):
    """The server holding the checkpoint (Redis) cannot be reached or dropped the connection."""


class IdentityError(CheckpointError, TypeError):
    """``func`` or ``kwargs`` hold an object whose state cannot be fingerprinted for a checkpoint."""


class ResultWriteError(ChunkmapError, OSError):
    """A result file (``chunkmap run -o``) cannot be written; the OS error is chained as ``__cause__``."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""


class SharedMemoryError(ChunkmapError, OSError):
    """A shared-memory segment cannot be created, mapped or unlinked."""


class ClosedError(ChunkmapError, ValueError):
    """A closed :class:`~chunkmap.shm.SharedArray` or :class:`~chunkmap.shm.SlotPool` was used."""


class PoolClosedError(ClosedError):
    """The slot pool was closed, or aborted because a producer or consumer failed.

    Attributes
    ----------
    reason : str
        Why the pool was closed (``"closed"``, or the failing party's exception).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the slot pool is closed: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason,))


class PeerDiedError(PoolClosedError):
    """A producer or consumer of the slot pool ended (killed, crashed) without leaving it.

    The party that noticed closed the pool, so every other party gets this error too.

    Attributes
    ----------
    reason : str
        Which party died, and what that means for the data.
    pid : int
        The dead process's PID.
    role : str
        ``"producer"`` or ``"consumer"``.
    """

    def __init__(self, reason: str, pid: int = 0, role: str = "") -> None:
        self.pid = pid
        self.role = role
        super().__init__(reason)

    def __reduce__(self):
        return (type(self), (self.reason, self.pid, self.role))


class PoolTimeoutError(ChunkmapError, TimeoutError):
    """No slot became available within the given timeout."""


class ChunkmapWarning(UserWarning):
    """Base class of the warnings chunkmap emits."""


class CheckpointWarning(ChunkmapWarning):
    """Checkpoint records were not used or were lost, or a new run starts beside other runs.

    The result is still exact: what a checkpoint cannot prove is computed again.
    """


class SharedMemoryFallbackWarning(ChunkmapWarning):
    """/dev/shm is missing or too small, so shared arrays are memory-mapped files instead.

    A ``UserWarning`` (shown by default, unlike ``ResourceWarning``): the fallback works, but
    it writes through to a disk-backed file system, and the usual fix (``docker run
    --shm-size=...``, or ``CHUNKMAP_SHM_DIR`` pointing to a tmpfs) is the user's to apply.
    """


class SignatureError(ChunkmapError, ValueError):
    """A :func:`chunkmap.cfunc` signature is not one of the supported forms, or contradicts the pointer's own."""


class CPointerError(ChunkmapError, TypeError):
    """:func:`chunkmap.cfunc` was given something that is not a C function pointer it can call, or find again in a
    worker process (a library moved or rebuilt, a symbol gone)."""


class CError(ChunkmapError, RuntimeError):
    """A C function of :func:`chunkmap.cfunc` returned a non-zero error code (``skip=CError`` records such elements).

    Attributes
    ----------
    function : str
        The C function's name.
    code : int
        The code it returned.
    meaning : str or None
        What the code means, from ``cfunc(..., errors=)``.
    """

    def __init__(self, function: str, code: int, meaning: str | None = None) -> None:
        self.function = function
        self.code = code
        self.meaning = meaning
        super().__init__(f"{function} returned error code {code}" + (f" ({meaning})" if meaning else ""))

    def __reduce__(self):
        return (type(self), (self.function, self.code, self.meaning))
