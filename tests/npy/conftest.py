"""Helpers for the .npy tests: write .npy files in any format version, count threads and fds."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from numpy.lib.format import dtype_to_descr

MAGIC = b"\x93NUMPY"


def write_npy(path, arr: np.ndarray, version: tuple[int, int] = (1, 0), fortran: bool | None = None) -> str:
    """Write ``arr`` as a .npy file of the given format version, by hand (numpy only writes 3.0
    for unicode field names). Fortran order when ``fortran`` (default: arr is F- not C-contiguous)."""
    if fortran is None:
        fortran = arr.flags.f_contiguous and not arr.flags.c_contiguous
    d = {"descr": dtype_to_descr(arr.dtype), "fortran_order": bool(fortran), "shape": arr.shape}
    text = repr(d).encode("utf-8" if version == (3, 0) else "latin-1")
    plen = 10 if version == (1, 0) else 12
    pad = -(plen + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    prefix = MAGIC + bytes(version)
    prefix += len(text).to_bytes(2 if version == (1, 0) else 4, "little")
    with open(path, "wb") as f:
        f.write(prefix + text + arr.tobytes(order="F" if fortran else "C"))
    return os.fspath(path)


@pytest.fixture
def npy_writer():
    return write_npy


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def fd_count():
    return open_fds


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "chunkmap-npy-prefetch" and t.is_alive()]


@pytest.fixture
def live_prefetch_threads():
    return prefetch_threads
