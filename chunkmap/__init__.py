"""chunkmap: run a slow scalar function over every element of large numpy arrays, in parallel."""

from . import errors
from .errors import ChunkmapError

__all__ = ["errors", "ChunkmapError"]
__version__ = "0.1.0"
