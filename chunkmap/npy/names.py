"""How the names of an :class:`~chunkmap.npy.NpyLibrary` map to files, as the folder is now.

Two kinds of source:

- :class:`FolderNames`: the files of a folder that match a pattern, named by file name without
  extension. Nothing is remembered between calls: a name is resolved to ``folder/name.npy``
  without listing the folder when the pattern ends in ``.npy`` (one ``stat`` to know whether it
  exists), and ``len``, iteration and other patterns list the folder at each call (one
  ``scandir``: about a millisecond for 10,000 files, one descriptor held while it runs). So a file
  added later is found, and a removed one is no longer a name.
- :class:`GivenNames`: the paths of a list or a mapping, named once by the caller; a name stays
  while its file may come and go (reading a missing file raises
  :class:`~chunkmap.errors.MissingArrayError`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from typing import Any, Union

from ..errors import MissingArrayError, MissingFileError, OptionError

__all__ = ["FolderNames", "GivenNames", "Names", "missing", "names_of"]


def _plain(key: object) -> bool:
    """True for a string that can only name a file directly inside the folder."""
    return (
        isinstance(key, str)
        and os.sep not in key
        and (os.altsep is None or os.altsep not in key)
        and os.path.splitext(key + ".npy")[0] == key  # "", ".", ".." are no file's stem
    )


class FolderNames:
    """The arrays of a folder: files matching ``pattern``, named without their extension.

    Parameters
    ----------
    folder : str
        An existing folder.
    pattern : str
        ``fnmatch`` pattern of the file names.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp(); names = FolderNames(d, "*.npy")
    >>> "a" in names, names.path("a") == os.path.join(d, "a.npy")
    (False, True)
    >>> np.save(os.path.join(d, "a.npy"), np.zeros(2))
    >>> "a" in names, list(names.listing())
    (True, ['a'])
    >>> os.remove(os.path.join(d, "a.npy")); os.rmdir(d)
    """

    def __init__(self, folder: str, pattern: str) -> None:
        self.folder = folder
        self.pattern = pattern
        self._direct = pattern.endswith(".npy")  # then name k can only be the file k.npy

    @property
    def source(self) -> str:
        """What the library pickles as: the folder."""
        return self.folder

    def listing(self) -> dict[str, str]:
        """Name -> path of every matching file now, sorted by name."""
        with os.scandir(self.folder) as entries:
            found = [e.name for e in entries if fnmatch.fnmatch(e.name, self.pattern) and e.is_file()]
        return {os.path.splitext(n)[0]: f"{self.folder}{os.sep}{n}" for n in sorted(found)}

    def path(self, key: object) -> str | None:
        """The file that holds ``key`` (which may not exist yet), or None: no file can be that name."""
        if self._direct:
            file = f"{key}.npy" if _plain(key) else None
            if file is None or not fnmatch.fnmatch(file, self.pattern):
                return None
            return f"{self.folder}{os.sep}{file}"
        return self.listing().get(key) if isinstance(key, str) else None

    def __contains__(self, key: object) -> bool:
        path = self.path(key)
        return path is not None and os.path.isfile(path)

    def where(self) -> str:
        """Where names are looked up, for messages."""
        return f"in {self.folder!r} (files {self.pattern})"

    def __repr__(self) -> str:
        return f"folder {self.folder!r}"


class GivenNames:
    """The arrays of a list of paths (named by the paths) or of a mapping name -> path.

    Parameters
    ----------
    paths : dict of str to str
        Name -> path.
    """

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths

    @property
    def source(self) -> dict[str, str]:
        """What the library pickles as: the mapping."""
        return self.paths

    def listing(self) -> dict[str, str]:
        """Name -> path, as given."""
        return self.paths

    def path(self, key: object) -> str | None:
        """The file named ``key``, or None."""
        return self.paths.get(key) if isinstance(key, str) else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.paths

    def where(self) -> str:
        """Where names are looked up, for messages."""
        return f"among the {len(self.paths)} arrays given"

    def __repr__(self) -> str:
        return f"{len(self.paths)} arrays"


Names = Union[FolderNames, GivenNames]


def names_of(source: Any, pattern: str) -> Names:
    """The names of a library's ``source``: a folder, an iterable of paths, or a mapping.

    Raises
    ------
    MissingFileError
        ``source`` is a path that is not a folder.
    OptionError
        ``source`` is none of the three.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        if not os.path.isdir(folder):
            raise MissingFileError(f"no folder at {folder!r}; pass a folder of .npy files or a list of paths")
        return FolderNames(folder, pattern)
    if isinstance(source, Mapping):
        return GivenNames({str(k): os.fspath(p) for k, p in source.items()})
    if isinstance(source, Iterable):
        return GivenNames({os.fspath(p): os.fspath(p) for p in source})
    raise OptionError(
        f"source must be a folder, a list of .npy paths or a mapping name -> path; got {type(source).__name__}"
    )


def missing(key: object, names: Names, path: str | None) -> MissingArrayError:
    """The error for a name without a file (``path``: where it was looked for, if anywhere)."""
    if path is None:
        return MissingArrayError(
            f"no array named {key!r} {names.where()}; names are file names without .npy (see list(library))"
        )
    return MissingArrayError(
        f"no array named {key!r} {names.where()}: {path!r} does not exist (was it moved or deleted?); "
        f"list(library) gives the names there now"
    )
