"""The ``.npy`` inputs of a job: checked from their headers, then handed to :func:`chunkmap.run` as paths.

A job's inputs reach ``run`` as any user's would: the path of each file, which ``run`` reads in
place, chunk by chunk, through :class:`~chunkmap.npy.NpyReader`. ``run`` reads in place only files
of the inputs' full (broadcast) shape, so a file of a smaller shape that numpy broadcasts along the
others (a row of weights for a table, say) is read whole with ``NpyReader.read`` and passed as an
array; it is smaller than the full shape by at least one broadcast axis. Nothing is opened with
``np.load``: shapes and dtypes come from the headers (:func:`~chunkmap.npy.read_header`).
"""

from __future__ import annotations

import os
import zipfile
from typing import Sequence

import numpy as np

from ..errors import MissingFileError, NpyFormatError, OptionError, ShapeError
from ..npy import NpyHeader, NpyReader, read_header

__all__ = ["job_inputs", "read_headers"]


def read_headers(paths: Sequence[str | os.PathLike[str]]) -> list[NpyHeader]:
    """The header of each ``.npy`` file, checking that their shapes broadcast together.

    Raises
    ------
    chunkmap.errors.OptionError
        No paths.
    chunkmap.errors.MissingFileError
        A file does not exist.
    chunkmap.errors.NpyFormatError
        A file is not a ``.npy`` file (a directory or an ``.npz`` archive is named as such), or
        holds objects.
    chunkmap.errors.ShapeError
        The shapes do not broadcast together.
    """
    if not paths:
        raise OptionError("a job needs at least one input .npy file")
    headers = [_read_header(os.fspath(path)) for path in paths]
    try:
        np.broadcast_shapes(*(header.shape for header in headers))
    except ValueError:
        listed = ", ".join(f"in{number}={os.fspath(path)!r} {header.shape}"
                           for number, (path, header) in enumerate(zip(paths, headers), 1))
        raise ShapeError(
            f"the input shapes do not broadcast to one shape: {listed}; expected equal shapes, or shapes "
            f"numpy can broadcast together such as (3, 4) and (4,)"
        ) from None
    return headers


def _read_header(path: str) -> NpyHeader:
    if os.path.isdir(path):
        raise NpyFormatError(f"input {path!r} is a directory; expected a .npy file written by numpy.save")
    if not os.path.exists(path):
        raise MissingFileError(f"input file {path!r} does not exist; expected a .npy file written by numpy.save")
    if zipfile.is_zipfile(path):
        raise NpyFormatError(
            f"input {path!r} is an .npz archive; expected one .npy file per input: save each array "
            f"with numpy.save"
        )
    return read_header(path)  # NpyFormatError for anything else that is not a .npy file


def job_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[str | np.ndarray]:
    """What to hand :func:`chunkmap.run` for these ``.npy`` files, checked (see :func:`read_headers`).

    Returns
    -------
    list of str or ndarray
        The absolute path of each file of the full broadcast shape (so that workers with another
        working directory find it); the array itself, read whole, for a file broadcast along the
        others.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "table.npy"), np.zeros((2, 3)))
    >>> np.save(os.path.join(folder, "row.npy"), np.arange(3.0))
    >>> table, row = job_inputs([os.path.join(folder, "table.npy"), os.path.join(folder, "row.npy")])
    >>> table == os.path.join(folder, "table.npy"), row
    (True, array([0., 1., 2.]))
    """
    headers = read_headers(paths)
    shape = np.broadcast_shapes(*(header.shape for header in headers))
    return [os.path.abspath(path) if header.shape == shape else NpyReader(path, header).read()
            for path, header in zip(paths, headers)]
