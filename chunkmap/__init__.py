"""chunkmap: run a slow scalar function over every element of large numpy arrays, in parallel.

>>> import numpy as np, chunkmap
>>> xs, values = chunkmap.run(abs, np.array([-1, 2, -3]), scheduler="sync")
>>> xs.tolist(), values.tolist()
([0, 1, 2], [1, 2, 3])
"""

from . import errors
from .core import run
from .errors import ChunkmapError, ElementError
from .result import Failure, Failures, Result, Stats

__all__ = ["run", "Result", "Failures", "Failure", "Stats", "errors", "ChunkmapError", "ElementError"]
__version__ = "0.1.0"
