"""The fast read paths: C and Python positional reads, and the bounded descriptor pool.

Every read is checked against ``np.load``; descriptors are counted in ``/proc/self/fd``.
"""

from __future__ import annotations

import gc
import os
import pickle
import random
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from chunkmap._extensions import pure_python_requested
from chunkmap.errors import ClosedError, MissingArrayError, MissingFileError, NpyFormatError, OptionError
from chunkmap.npy import NpyLibrary, NpyReader, _io, _pread_py
from chunkmap.npy.fdpool import FdPool, fd_limit

IMPLS = ["c", "python"] if _io.EXTENSION.compiled is not None else ["python"]
FUNCTIONS = ("pread_path", "pread_fd", "open_ro", "pool_read", "entry_evict")


@pytest.fixture(params=IMPLS)
def impl(request, monkeypatch):
    """Run the test with the C functions, then with their Python twins (captured at construction)."""
    module = _io.EXTENSION.twin if request.param == "python" else _io.EXTENSION.compiled
    for name in FUNCTIONS:
        monkeypatch.setattr(_io, name, getattr(module, name))
    return request.param


def _targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


def _held(paths) -> set[str]:
    """Which of ``paths`` this process has open."""
    real = {os.path.realpath(p): os.fspath(p) for p in paths}
    return {real[t] for t in _targets() if t in real}


@pytest.fixture
def folder(tmp_path):
    """20 arrays of shape (6, 4, 3), a0 ... a19, array k = k*1000 + arange."""
    for k in range(20):
        np.save(tmp_path / f"a{k}.npy", k * 1000.0 + np.arange(72.0).reshape(6, 4, 3))
    return tmp_path


# -- the two implementations of pread_path / pread_fd ------------------------------------------
def test_pread_functions_same_contract(tmp_path, fd_count, impl):
    pread_path, pread_fd = _io.pread_path, _io.pread_fd
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(range(100)))
    bp = os.fsencode(p)
    n0 = fd_count()
    buf = bytearray(10)
    assert pread_path(bp, buf, 5) == 10 and bytes(buf) == bytes(range(5, 15))
    arr = np.zeros((2, 2), "u2")
    assert pread_path(bp, arr, 0) == 8 and arr.tobytes() == bytes(range(8))
    assert pread_path(bp, bytearray(20), 90) == 10  # end of file: a short count, no error
    assert pread_path(bp, bytearray(5), 200) == 0
    assert pread_path(bp, bytearray(0), 0) == 0
    with pytest.raises(FileNotFoundError) as e:
        pread_path(bp + b".missing", buf, 0)
    assert e.value.filename == bp + b".missing"
    with pytest.raises(IsADirectoryError):
        pread_path(os.fsencode(tmp_path), buf, 0)
    with pytest.raises(TypeError):
        pread_path(os.fspath(p), buf, 0)  # str: the callers pass bytes
    with pytest.raises(ValueError):
        pread_path(bp, buf, -1)
    with pytest.raises((ValueError, TypeError, BufferError)):
        pread_path(bp, b"read-only", 0)
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        pread_path(bp, ro, 0)
    assert fd_count() == n0  # nothing leaked, errors included
    fd = os.open(p, os.O_RDONLY)
    try:
        buf = bytearray(4)
        assert pread_fd(fd, buf, 96) == 4 and bytes(buf) == bytes(range(96, 100))
        assert pread_fd(fd, bytearray(8), 96) == 4
        with pytest.raises(ValueError):
            pread_fd(fd, buf, -5)
        with pytest.raises(TypeError):
            pread_fd("3", buf, 0)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        pread_fd(fd, buf, 0)  # closed descriptor: EBADF


def test_implementation_is_c_when_built():
    assert _io.EXTENSION.compiled is not None, "chunkmap.npy._pread did not import: pip install -e ."
    assert _io.EXTENSION.implementation == ("python" if pure_python_requested() else "c")
    assert _io.pread_path is _io.EXTENSION.active.pread_path


def test_open_ro_same_contract(tmp_path, fd_count, impl):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    n0 = fd_count()
    fd = _io.open_ro(os.fsencode(p))
    try:
        assert fd_count() == n0 + 1 and os.pread(fd, 8, 0) == b"abc"
        assert not os.get_inheritable(fd)  # O_CLOEXEC
        with pytest.raises(OSError):
            os.write(fd, b"x")  # read-only
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError) as e:
        _io.open_ro(os.fsencode(tmp_path / "missing"))
    assert e.value.filename == os.fsencode(tmp_path / "missing")
    with pytest.raises(TypeError, match="bytes"):
        _io.open_ro(os.fspath(p))
    with pytest.raises(ValueError):
        _io.open_ro(b"a\0b")
    assert fd_count() == n0


# -- round trips through both implementations, with and without a pool -------------------------
DTYPES = ["?", "i1", "<u2", ">i4", "<i8", ">u8", "<f2", ">f4", "<f8", ">f8", "g", ">c8", "<c16", "<M8[s]", "S3"]


@pytest.mark.parametrize("pool", [0, 3])
@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trips_against_np_load(tmp_path, impl, pool, order):
    rng = np.random.default_rng(3)
    names = []
    for k, code in enumerate(DTYPES):
        dt = np.dtype(code)
        raw = rng.integers(0, 256, size=5 * 4 * 3 * dt.itemsize, dtype=np.uint8)
        if dt.kind in "biufc":
            arr = raw.view(dt).reshape(5, 4, 3) if dt.kind != "b" else (raw[:60] & 1).astype(bool).reshape(5, 4, 3)
        else:
            arr = np.zeros((5, 4, 3), dt)
        np.save(tmp_path / f"x{k}.npy", np.asfortranarray(arr) if order == "F" else arr)
        names.append(f"x{k}")
    with NpyLibrary(tmp_path, max_open_files=pool) as lib:
        for _ in range(3):
            for name in random.Random(0).sample(names, len(names)):
                ref = np.load(tmp_path / f"{name}.npy")
                for i in range(-5, 5):
                    got = lib.row(name, i)
                    assert got.dtype == ref.dtype and got.tobytes() == np.ascontiguousarray(ref[i]).tobytes()
                assert lib.rows(name, 1, 4).tobytes() == np.ascontiguousarray(ref[1:4]).tobytes()
                assert lib.load(name).tobytes() == ref.tobytes()
                flat = lib[name].read_flat(7, 31)
                assert flat.tobytes() == np.ascontiguousarray(ref).reshape(-1)[7:31].tobytes()
                out = np.empty((4, 3), ref.dtype.newbyteorder())
                lib[name].read_row(2, out=out)
                assert np.array_equal(out, ref[2], equal_nan=ref.dtype.kind in "fc") or ref.dtype.kind in "MS"
            assert lib.open_files <= pool


def test_pooled_reads_of_empty_and_0d(tmp_path, impl):
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    np.save(tmp_path / "z.npy", np.array(4.5))
    np.save(tmp_path / "r.npy", np.zeros((3, 0)))
    with NpyLibrary(tmp_path, max_open_files=2) as lib:
        assert lib.rows("e", 0, 0).shape == (0, 3)
        assert lib.load("z") == 4.5 and lib["z"].read_flat(0, 1)[0] == 4.5
        assert lib.row("r", 2).shape == (0,)
        with pytest.raises(IndexError):
            lib.row("e", 0)


def test_missing_and_truncated_through_the_pool(tmp_path, impl):
    np.save(tmp_path / "a.npy", np.arange(12.0).reshape(4, 3))
    r = NpyReader(tmp_path / "a.npy", pool=None)
    with NpyLibrary(tmp_path, max_open_files=2) as lib:
        lib.header("a")
        os.truncate(tmp_path / "a.npy", 128 + 3 * 8)
        with pytest.raises(NpyFormatError, match="truncated"):
            lib.row("a", 3)
        assert lib.row("a", 0).tolist() == [0.0, 1.0, 2.0]
        with pytest.raises(MissingArrayError):
            lib.row("nope", 0)
    os.remove(tmp_path / "a.npy")
    with pytest.raises(MissingFileError):
        r.read_row(0)


# -- the pool: bound, LRU eviction, close, finaliser, pickling ----------------------------------
def test_pool_bound_and_lru_eviction(folder, fd_count, impl):
    paths = [os.fspath(folder / f"a{k}.npy") for k in range(20)]
    n0 = fd_count()
    lib = NpyLibrary(folder, max_open_files=3)
    assert lib.open_files == 0 and fd_count() == n0
    for k in range(20):
        assert lib.row(f"a{k}", 5)[0, 0] == k * 1000 + 60
        assert fd_count() - n0 == lib.open_files == min(k + 1, 3)
    assert _held(paths) == set(paths[17:])  # the three most recent
    lib.row("a17", 0)  # a17 becomes the most recent: a18 is the oldest now
    lib.row("a0", 0)
    assert _held(paths) == {paths[17], paths[19], paths[0]}
    lib.rows("a1", 0, 6)  # range reads go through the pool too
    assert _held(paths) == {paths[17], paths[0], paths[1]}
    info = lib.cache_info()
    assert info["open_files"] == 3
    lib.close()
    assert fd_count() == n0 and lib.open_files == 0
    lib.close()  # idempotent


def test_default_library_holds_nothing(folder, fd_count, impl):
    n0 = fd_count()
    lib = NpyLibrary(folder)
    for k in range(20):
        lib.row(f"a{k}", 1)
    assert fd_count() == n0 and lib.open_files == 0 and lib._pool is None


def test_close_context_and_finaliser(folder, fd_count):
    n0 = fd_count()
    with NpyLibrary(folder, max_open_files=5) as lib:
        reader = lib["a1"]
        for k in range(8):
            lib.row(f"a{k}", 0)
        assert fd_count() == n0 + 5
    assert fd_count() == n0
    with pytest.raises(ClosedError):
        lib.row("a1", 0)
    with pytest.raises(ClosedError):
        reader.read_row(0)  # a pooled reader shares its library's fate
    assert "closed" in repr(lib)
    plain = NpyLibrary(folder)
    r = plain["a2"]
    plain.close()
    assert r.read_row(0)[0, 0] == 2000  # a reader holding nothing keeps working
    with pytest.raises(ClosedError):
        plain.row("a2", 0)
    lib = NpyLibrary(folder, max_open_files=4)
    for k in range(6):
        lib.row(f"a{k}", 0)
    assert fd_count() == n0 + 4
    del lib, reader
    gc.collect()
    assert fd_count() == n0  # the finaliser closed them


def test_options_and_rlimit_bound(folder):
    with pytest.raises(OptionError):
        NpyLibrary(folder, max_open_files=-1)
    with pytest.raises(OptionError):
        NpyLibrary(folder, max_open_files=2.5)
    with pytest.raises(OptionError):
        NpyLibrary(folder, max_open_files=True)
    with pytest.raises(OptionError, match="open-files limit"):
        NpyLibrary(folder, max_open_files=fd_limit() + 1)
    with pytest.raises(OptionError):
        NpyReader(folder / "a0.npy", pool=3)
    with NpyLibrary(folder, max_open_files=fd_limit()) as lib:  # the largest allowed
        assert lib.row("a3", 0)[0, 0] == 3000


def test_pickles_without_descriptors(folder, fd_count):
    with NpyLibrary(folder, max_open_files=3) as lib:
        lib.row("a4", 0)
        lib2 = pickle.loads(pickle.dumps(lib))
        assert lib2.max_open_files == 3 and lib2.open_files == 0 and lib2._pool is not lib._pool
        assert lib2.row("a4", 1)[0, 0] == 4012 and lib2.open_files == 1
        r = pickle.loads(pickle.dumps(lib["a4"]))
        assert r.pool is None and r.read_row(1)[0, 0] == 4012
        lib2.close()
        assert "max_open_files=3" in repr(lib)


def test_busy_descriptor_is_closed_by_its_last_reader(tmp_path, fd_count, monkeypatch):
    """A descriptor evicted while a read uses it stays open until that read ends (Python twin:
    the eviction happens inside the read)."""
    for name in "abc":
        (tmp_path / name).write_bytes(name.encode() * 16)
    monkeypatch.setattr(_io, "pool_read", _pread_py.pool_read)
    monkeypatch.setattr(_io, "entry_evict", _pread_py.entry_evict)
    pool = FdPool(1)
    real = _pread_py._fill
    seen = {}

    def slow(fd, buf, offset):
        if not seen:
            seen["fd"] = fd
            for other in "bc":  # evicts a's descriptor while it is in use
                assert pool.pread(os.fsencode(tmp_path / other), bytearray(2), 0) == 2
            os.fstat(fd)  # still open: not closed under the read
            seen["evicted_open"] = True
        return real(fd, buf, offset)

    monkeypatch.setattr(_pread_py, "_fill", slow)
    n0 = fd_count()
    buf = bytearray(4)
    assert pool.pread(os.fsencode(tmp_path / "a"), buf, 3) == 4 and bytes(buf) == b"aaaa"
    assert seen["evicted_open"]
    assert pool.open_count == 1 and fd_count() == n0 + 1  # a's closed by its reader, c held
    assert _held([tmp_path / "a"]) == set() and _held([tmp_path / "c"]) == {os.fspath(tmp_path / "c")}
    pool.close()
    assert fd_count() == n0 and pool.closed
    with pytest.raises(ClosedError):
        pool.pread(os.fsencode(tmp_path / "a"), buf, 0)


def test_entry_functions(tmp_path, fd_count, impl):
    """pool_read / entry_evict: idle entries close at eviction, busy ones at their last read."""
    from collections import OrderedDict

    pool_read, evict = _io.pool_read, _io.entry_evict
    p = tmp_path / "f"
    p.write_bytes(bytes(range(50)))
    bp = os.fsencode(p)
    n0 = fd_count()
    idle = [os.open(p, os.O_RDONLY), 0, False]
    table = OrderedDict([(b"other", [-1, 0, False]), (bp, idle)])
    buf = bytearray(5)
    assert pool_read(table, bp, buf, 10) == 5 and bytes(buf) == bytes(range(10, 15))
    assert list(table) == [b"other", bp] and idle[1:] == [0, False]
    table.move_to_end(b"other")
    assert pool_read(table, bp, buf, 48) == 2 and list(table) == [b"other", bp]  # moved to the end
    assert pool_read(table, b"missing", buf, 0) is None
    assert pool_read(table, b"other", buf, 0) is None  # a closed entry is a miss
    with pytest.raises(ValueError):
        pool_read(table, bp, buf, -1)
    evict(idle)
    assert idle[0] == -1 and fd_count() == n0
    busy = [os.open(p, os.O_RDONLY), 1, False]  # as if a read were in flight
    evict(busy)
    assert busy[0] >= 0 and busy[1:] == [1, True] and fd_count() == n0 + 1
    busy[1] = 0  # that read's end, replayed by one more read through it
    assert pool_read(OrderedDict([(bp, busy)]), bp, buf, 0) == 5
    assert busy[0] == -1 and fd_count() == n0  # its last reader closed it
    bad = OrderedDict([(bp, [os.open(p, os.O_RDONLY), 0, False])])
    fd = bad[bp][0]
    os.close(fd)
    with pytest.raises(OSError):
        pool_read(bad, bp, buf, 0)  # EBADF surfaces, and the user count is restored
    assert bad[bp][1] == 0


def test_threads_share_a_small_pool(folder, fd_count, impl):
    refs = {f"a{k}": np.load(folder / f"a{k}.npy") for k in range(20)}
    n0 = fd_count()
    lib = NpyLibrary(folder, max_open_files=4)
    errors = []

    def work(seed):
        rng = random.Random(seed)
        try:
            for _ in range(400):
                name, i = f"a{rng.randrange(20)}", rng.randrange(6)
                if not np.array_equal(lib.row(name, i), refs[name][i]):
                    errors.append((name, i))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lib.open_files <= 4 and fd_count() - n0 == lib.open_files  # between calls: the bound
    lib.close()
    assert fd_count() == n0


_FORK = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from chunkmap.npy import NpyLibrary, _io
    if sys.argv[2] == "python":
        for name in ("pread_path", "pread_fd", "open_ro", "pool_read", "entry_evict"):
            setattr(_io, name, getattr(_io.EXTENSION.twin, name))
    folder = sys.argv[1]
    def nfds():
        return len(os.listdir("/proc/self/fd"))
    lib = NpyLibrary(folder, max_open_files=3)
    for k in range(5):
        lib.row(f"a{k}", 0)
    parent_fds = nfds()
    pid = os.fork()
    if pid == 0:  # the child: an empty pool of its own, correct reads, bounded
        code = 0
        try:
            if lib.open_files != 0 or nfds() != parent_fds - 3:
                code = 3
            for k in range(20):
                if lib.row(f"a{k}", 2)[0, 0] != k * 1000 + 24:
                    code = 4
            if lib.open_files != 3 or nfds() != parent_fds:
                code = 5
            lib.close()
            if nfds() != parent_fds - 3:
                code = 6
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, os.WEXITSTATUS(status)
    assert lib.open_files == 3 and nfds() == parent_fds  # the parent's pool is untouched
    assert [float(lib.row(f"a{k}", 1)[0, 0]) for k in (2, 3, 4)] == [2012.0, 3012.0, 4012.0]
    lib.close()
    assert nfds() == parent_fds - 3
    print("ok")
    """
)


@pytest.mark.parametrize("which", IMPLS)
def test_fork_gives_the_child_its_own_pool(folder, which):
    proc = subprocess.run(
        [sys.executable, "-c", _FORK, str(folder), which], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


_LIMITS = textwrap.dedent(
    """
    import os, resource, sys
    import numpy as np
    from chunkmap.errors import OptionError
    from chunkmap.npy import NpyLibrary
    folder = sys.argv[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    try:
        NpyLibrary(folder, max_open_files=33)
    except OptionError as e:
        print("refused", "ulimit -n 64" in str(e))
    lib = NpyLibrary(folder, max_open_files=32)
    for k in range(20):
        lib.row(f"a{k}", 0)
    print("held", lib.open_files)
    lib.close()
    lib = NpyLibrary(folder, max_open_files=30)
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))  # lowered later: the pool follows
    for k in range(20):
        lib.row(f"a{k}", 0)
    print("lowered", lib.open_files)
    """
)


def test_pool_follows_the_open_files_limit(folder):
    proc = subprocess.run([sys.executable, "-c", _LIMITS, str(folder)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == ["refused True", "held 20", "lowered 8"]
