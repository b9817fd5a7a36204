"""NpyLibrary: naming, lazy headers, the LRU byte budget, and 10,000 files under rlimits."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from numpy.lib.format import write_array_header_1_0

from chunkmap.errors import MissingArrayError, MissingFileError, MissingKeyError, OptionError, StoreError
from chunkmap.npy import NpyLibrary, NpyReader


@pytest.fixture
def folder(tmp_path):
    for k in range(6):
        np.save(tmp_path / f"a{k}.npy", np.full((10, 4), k, dtype="<i4"))
    (tmp_path / "notes.txt").write_text("not an array")
    return tmp_path


def test_folder_names_and_lazy_headers(folder, fd_count):
    before = fd_count()
    lib = NpyLibrary(folder)
    assert list(lib) == [f"a{k}" for k in range(6)] and len(lib) == 6 and "a3" in lib
    assert lib.cache_info()["headers"] == 0  # nothing read yet
    assert isinstance(lib["a3"], NpyReader) and lib["a3"].shape == (10, 4)
    assert lib.cache_info()["headers"] == 1
    assert np.array_equal(lib.row("a2", -1), [2, 2, 2, 2])
    assert np.array_equal(lib.rows("a5", 3, 6), np.full((3, 4), 5))
    assert np.array_equal(lib.load("a4"), np.load(folder / "a4.npy"))
    assert lib.path("a1") == os.path.join(folder, "a1.npy")
    assert fd_count() == before
    assert repr(lib).startswith(f"NpyLibrary(folder {str(folder)!r}")
    assert "2 arrays" in repr(NpyLibrary([folder / "a1.npy", folder / "a2.npy"]))


def test_list_and_mapping_sources(folder):
    paths = [folder / "a1.npy", str(folder / "a2.npy")]
    lib = NpyLibrary(paths)
    assert list(lib) == [str(p) for p in paths]
    assert lib.row(str(folder / "a2.npy"), 0)[0] == 2
    lib = NpyLibrary({"x": folder / "a3.npy"})
    assert lib.row("x", 0)[0] == 3


def test_errors(folder):
    lib = NpyLibrary(folder)
    with pytest.raises(MissingArrayError, match="no array named 'zz'") as e:
        lib["zz"]
    assert isinstance(e.value, KeyError) and isinstance(e.value, FileNotFoundError)
    assert isinstance(e.value, MissingFileError) and not isinstance(e.value, (MissingKeyError, StoreError))
    with pytest.raises(MissingFileError):
        NpyLibrary(folder / "nope")
    with pytest.raises(OptionError):
        NpyLibrary(folder, cache_bytes=-1)
    with pytest.raises(OptionError):
        NpyLibrary(3)
    with pytest.raises(MissingArrayError):
        lib.row("../a1", 0)  # names never walk out of the folder
    assert "a0" in lib
    (folder / "a0.npy").unlink()
    with pytest.raises(MissingArrayError):  # resolved without listing: the name is unknown
        NpyLibrary(folder).row("a0", 0)
    assert "a0" not in lib  # the folder as it is now
    with pytest.raises(MissingArrayError, match="'a0'.*a0.npy' does not exist"):
        lib.row("a0", 0)


def test_first_row_does_not_list_the_folder(folder):
    (folder / "a9.npy").mkdir()  # neither listed nor in: not a file
    lib = NpyLibrary(folder)
    assert lib.row("a4", 0)[0] == 4 and "folder" in repr(lib)
    lib2 = pickle.loads(pickle.dumps(lib))
    assert lib2.cache_info()["headers"] == 1 and lib2.row("a2", 1)[0] == 2
    assert len(lib) == 6 and "a9" not in lib and "a9" not in list(lib)
    other = NpyLibrary(folder, pattern="a[12].npy")
    assert list(other) == ["a1", "a2"] and "a1" in other and "a3" not in other
    with pytest.raises(MissingArrayError):
        other.row("a3", 0)


def test_lru_cache_respects_the_budget(folder):
    lib = NpyLibrary(folder, cache_bytes=3 * 160)  # three arrays of 160 bytes
    for k in [0, 1, 2, 0, 3]:  # 3 evicts 1, the least recently used
        assert lib.row(f"a{k}", 1)[0] == k
    info = lib.cache_info()
    assert (info["arrays"], info["bytes"], info["hits"], info["misses"]) == (3, 480, 1, 4)
    assert list(lib._cache) == ["a2", "a0", "a3"]
    row = lib.row("a3", 0)
    assert not row.flags.writeable  # views of cached arrays are read-only
    assert np.array_equal(lib.load("a3"), np.full((10, 4), 3))
    lib.clear_cache()
    assert lib.cache_info()["bytes"] == 0
    small = NpyLibrary(folder, cache_bytes=100)  # arrays larger than the budget bypass the cache
    assert small.row("a1", 0)[0] == 1 and small.cache_info()["arrays"] == 0


def test_iter_rows_and_pickle(folder):
    lib = NpyLibrary(folder, cache_bytes=1000)
    lib.header("a1")
    rows = list(lib.iter_rows(["a1", "a2"]))
    assert len(rows) == 20 and rows[10][0] == 2
    assert len(list(lib.iter_rows())) == 60
    lib2 = pickle.loads(pickle.dumps(lib))
    assert list(lib2) == list(lib) and lib2.cache_bytes == 1000
    assert lib2.cache_info()["headers"] == 1 and lib2.row("a5", 0)[0] == 5


def test_memory_per_file_without_cache(tmp_path):
    import tracemalloc

    n = 500
    for k in range(n):
        np.save(tmp_path / f"m{k:04d}.npy", np.zeros((5, 3)))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        lib = NpyLibrary(tmp_path)
        for key in lib:
            lib.row(key, 4)
        per_file = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert lib.cache_info()["headers"] == n
    assert per_file < 1024, per_file


# -- 10,000 files under RLIMIT_NOFILE and RLIMIT_AS, in a subprocess ------------------------------

N_FILES = 10_000
SHAPE = (500, 30, 3)  # 360 kB of float64 each: 3.6 GB in all, more than a 3 GiB address space


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """10,000 sparse .npy files (header written, data a hole): 3.6 GB apparent, ~40 MB on disk."""
    folder = tmp_path_factory.mktemp("many")
    buf = io.BytesIO()
    write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": SHAPE})
    header = buf.getvalue()
    size = len(header) + int(np.prod(SHAPE)) * 8
    for k in range(N_FILES):
        fd = os.open(folder / f"img{k:05d}.npy", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, header)
        os.ftruncate(fd, size)
        os.close(fd)
    return folder


_CHILD = textwrap.dedent(
    """
    import os, resource, sys
    import numpy as np
    from chunkmap.npy import NpyLibrary
    folder, limit, control = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    if limit == "nofile":
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    else:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    if control:  # the seed's dict of memmaps must fail here, or the test proves nothing
        maps = {}
        try:
            for name in sorted(os.listdir(folder)):
                maps[name] = np.load(os.path.join(folder, name), mmap_mode="r")
        except (OSError, ValueError, MemoryError) as e:
            print("memmap failed after", len(maps), type(e).__name__)
        else:
            print("memmap survived", len(maps))
        del maps
    lib = NpyLibrary(folder, cache_bytes=64 << 20)
    total = 0
    for key in lib:
        total += lib.row(key, 499).size + lib.rows(key, 10, 20).size
    nolib = NpyLibrary(folder)
    for key in list(nolib)[::7]:
        total += nolib.row(key, 250).size
    fds = len(os.listdir("/proc/self/fd"))
    pooled = NpyLibrary(folder, max_open_files=256)  # a descriptor pool, far below 10,000 files
    for key in pooled:
        total += pooled.row(key, 499).size + pooled.rows(key, 10, 20).size
    for key in list(pooled)[::-7]:
        total += pooled.row(key, 250).size
    held = len(os.listdir("/proc/self/fd")) - fds
    pooled.close()
    print("ok", len(lib), total, lib.cache_info()["bytes"] <= 64 << 20, fds, held, pooled.open_files)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["nofile", "as"])
def test_ten_thousand_files_under_rlimit(many_files, limit):
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(many_files), limit, "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("memmap failed after"), lines
    ok, n, total, bounded, fds, held, after = lines[-1].split()
    assert (ok, int(n), bounded) == ("ok", N_FILES, "True")
    assert int(total) == 2 * (N_FILES * (90 + 900) + len(range(0, N_FILES, 7)) * 90)
    assert int(fds) < 16
    assert (int(held), int(after)) == (256, 0)  # the pool at its bound, then released
    assert time.perf_counter() - t < 120
