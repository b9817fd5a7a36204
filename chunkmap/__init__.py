"""chunkmap: run a slow scalar function over every element of large numpy arrays, in parallel.

>>> import numpy as np, chunkmap
>>> xs, values = chunkmap.run(abs, np.array([-1, 2, -3]), scheduler="sync")
>>> xs.tolist(), values.tolist()
([0, 1, 2], [1, 2, 3])
"""

from typing import TYPE_CHECKING, Any

from . import errors
from .errors import ChunkmapError, ElementError
from .result import Failure, Failures, Result, Stats

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .core import run

__all__ = ["run", "Checkpoint", "Result", "Failures", "Failure", "Stats", "errors", "ChunkmapError", "ElementError"]
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
