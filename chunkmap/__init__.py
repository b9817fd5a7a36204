"""chunkmap: run a slow scalar function over every element of large numpy arrays, in parallel.

>>> import numpy as np, chunkmap
>>> xs, values = chunkmap.run(abs, np.array([-1, 2, -3]), scheduler="sync")
>>> xs.tolist(), values.tolist()
([0, 1, 2], [1, 2, 3])
"""

from typing import TYPE_CHECKING, Any

from . import errors
from .cfunc import cfunc  # the function: it shadows the module's name here (import chunkmap.cfunc for the module)
from .errors import ChunkmapError, ElementError
from .result import Failure, Failures, Result, Stats
from .workers import Workers, per_worker

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .core import run

__all__ = ["run", "cfunc", "Checkpoint", "Workers", "per_worker", "shutdown", "Result", "Failures", "Failure", "Stats",
           "errors", "ChunkmapError", "ElementError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # run() (and all it imports) loads on first use: a worker process importing chunkmap.local.child
    # starts without it (~0.15 s less per worker start)
    if name == "run":
        from .core import run

        return run
    if name == "Checkpoint":
        from .checkpoint import Checkpoint

        return Checkpoint
    raise AttributeError(f"module 'chunkmap' has no attribute {name!r}")


def shutdown() -> None:
    """Stop chunkmap's local worker processes now; the next run that needs them starts fresh ones.

    They stop by themselves when this process exits. A run restarts them on its own when they
    would be stale: after ``os.environ`` or ``sys.path`` changed, or the user's modules were
    reloaded or edited.
    """
    from .local.pool import shutdown as stop

    stop()
