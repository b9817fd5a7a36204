"""NpyReader: round trips against np.load for every dtype, order and format version."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkmap.errors import MissingFileError, NpyFormatError, OptionError
from chunkmap.npy import NpyReader

NUMERIC = ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "g", "c8", "c16", "G"]
DTYPES = [np.dtype("?"), np.dtype("i1"), np.dtype("u1")] + [
    np.dtype(bo + code) for code in NUMERIC[3:] for bo in "<>"
]
OTHER = [np.dtype("<M8[s]"), np.dtype(">m8[ms]"), np.dtype("S3"), np.dtype("<U2"), np.dtype([("a", ">i2"), ("b", "<f4", (2,))])]
VERSIONS = [(1, 0), (2, 0), (3, 0)]


def _sample(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape) if dtype.kind not in "?MmSUV" else np.zeros(shape, dtype)
    if dtype.kind == "b":
        arr = (raw[: arr.size].reshape(shape) & 1).astype(dtype)
    elif dtype.kind in "Mm":
        arr = raw.view("<i8" if dtype.itemsize == 8 else "u1")[: arr.size].reshape(shape).astype(dtype)
    elif dtype.kind in "SU":
        arr = np.array(["ab", "c", ""] * arr.size, dtype)[: arr.size].reshape(shape)
    elif dtype.kind == "V":
        arr["a"] = np.arange(arr.size).reshape(shape)
        arr["b"] = 0.5
    return arr


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # bitwise: NaNs and -0.0 included


def _check_all_reads(path, expected):
    r = NpyReader(path)
    loaded = np.load(path)
    _same(r.read(), loaded)
    assert r.read().flags.f_contiguous == loaded.flags.f_contiguous
    _same(r.read(), expected)
    flat = np.ascontiguousarray(expected).reshape(-1)
    _same(r.read_flat(0, flat.size), flat)
    if expected.ndim:
        n = len(expected)
        for i in range(-n, n):
            row = r.read_row(i)
            _same(row, np.array(expected[i, ...], order="C"))
            assert row.flags.c_contiguous
        _same(r.read_rows(0, n), np.ascontiguousarray(expected))
        if n > 2:
            _same(r.read_rows(1, n - 1), np.ascontiguousarray(expected[1:-1]))
            _same(r[::2], np.ascontiguousarray(expected[::2]))
        if flat.size > 3:
            _same(r.read_flat(1, flat.size - 2), flat[1:-2])
    return r


@pytest.mark.parametrize("dtype", DTYPES + OTHER, ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_every_dtype_both_orders(tmp_path, dtype, order):
    arr = np.asarray(_sample((4, 3, 2), dtype), order=order)
    path = tmp_path / "a.npy"
    np.save(path, arr)
    r = _check_all_reads(path, arr)
    assert r.fortran_order == (order == "F")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f8", ">f8", ">i4", "?", ">c16"])
def test_every_version(tmp_path, npy_writer, version, order, dtype):
    arr = np.asarray(_sample((5, 2, 3), np.dtype(dtype), seed=1), order=order)
    path = npy_writer(tmp_path / "a.npy", arr, version)
    r = _check_all_reads(path, arr)
    assert r.header.version == version


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (3, 0), (2, 0, 4), (1,), (7,), (1, 1, 5), (5, 1, 1)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_0d_empty_and_degenerate_shapes(tmp_path, shape, order):
    arr = np.asarray(_sample(shape, np.dtype(">f4")), order=order)
    path = tmp_path / "a.npy"
    np.save(path, arr)
    r = _check_all_reads(path, arr)
    if not shape:
        with pytest.raises(IndexError, match="0-d"):
            r.read_row(0)
        with pytest.raises(TypeError):
            len(r)
        _same(r.read_flat(0, 1), arr.reshape(1))


def test_fortran_row_is_the_logical_row(tmp_path):
    arr = np.asfortranarray(np.arange(6 * 4 * 5, dtype="<i8").reshape(6, 4, 5))
    np.save(tmp_path / "f.npy", arr)
    r = NpyReader(tmp_path / "f.npy")
    assert r.fortran_order
    for i in range(6):
        assert np.array_equal(r.read_row(i), np.load(tmp_path / "f.npy")[i])
    for start, stop in [(0, 0), (0, 1), (2, 5), (0, 120), (7, 68), (119, 120)]:
        assert np.array_equal(r.read_flat(start, stop), arr.ravel(order="C")[start:stop])


@pytest.mark.parametrize("gap, block", [(1 << 16, 1 << 22), (0, 1 << 22), (1 << 16, 64)])
def test_fortran_gather_strategies(tmp_path, monkeypatch, gap, block):
    import chunkmap.npy.reader as reader_mod

    monkeypatch.setattr(reader_mod, "_GAP", gap)
    monkeypatch.setattr(reader_mod, "_BLOCK", block)
    arr = np.asfortranarray(_sample((50, 3, 4), np.dtype(">f8")))
    np.save(tmp_path / "f.npy", arr)
    r = NpyReader(tmp_path / "f.npy")
    for start, stop in [(0, 1), (3, 4), (10, 40), (0, 50), (49, 50)]:
        _same(r.read_rows(start, stop), np.ascontiguousarray(arr[start:stop]))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    order=st.sampled_from("CF"),
    data=st.data(),
)
def test_read_flat_matches_ravel(tmp_path_factory, shape, order, data):
    arr = np.asarray(np.arange(int(np.prod(shape)), dtype="<i2").reshape(shape), order=order)
    path = tmp_path_factory.mktemp("flat") / "a.npy"
    np.save(path, arr)
    start = data.draw(st.integers(0, arr.size))
    stop = data.draw(st.integers(start, arr.size))
    assert np.array_equal(NpyReader(path).read_flat(start, stop), arr.ravel()[start:stop])


@pytest.mark.parametrize("order", ["C", "F"])
def test_out_buffers(tmp_path, order):
    arr = np.asarray(np.arange(60, dtype=">f8").reshape(5, 4, 3), order=order)
    np.save(tmp_path / "a.npy", arr)
    r = NpyReader(tmp_path / "a.npy")
    out = np.empty((4, 3), ">f8")
    assert r.read_row(2, out=out) is out and np.array_equal(out, arr[2])
    native = np.empty((4, 3), "<f8")  # the other byte order: swapped in place
    assert r.read_row(3, out=native) is native and np.array_equal(native, arr[3])
    rows = np.empty((2, 4, 3), "<f8")
    assert r.read_rows(1, 3, out=rows) is rows and np.array_equal(rows, arr[1:3])
    flat = np.empty(7, "<f8")
    assert r.read_flat(10, 17, out=flat) is flat and np.array_equal(flat, np.arange(10, 17))
    for bad, match in [
        (np.empty((3, 4)), "shape"),
        (np.empty((4, 3), "<f4"), "dtype"),
        (np.empty((3, 4)).T, "C-contiguous"),
        ([[0.0] * 3] * 4, "numpy array"),
    ]:
        with pytest.raises(OptionError, match=match):
            r.read_row(0, out=bad)
    ro = np.empty((4, 3), ">f8")
    ro.flags.writeable = False
    with pytest.raises(OptionError, match="writeable"):
        r.read_row(0, out=ro)


def test_index_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    r = NpyReader(tmp_path / "a.npy")
    for i in (3, -4):
        with pytest.raises(IndexError, match="out of range"):
            r.read_row(i)
    with pytest.raises(IndexError, match="outside"):
        r.read_rows(2, 4)
    with pytest.raises(IndexError, match="outside"):
        r.read_flat(3, 2)
    with pytest.raises(TypeError):
        r.read_row(1.0)
    assert r[5:9].shape == (0, 2)


def test_no_fd_held_and_pickles_as_path_and_header(tmp_path, fd_count):
    arr = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "a.npy", arr)
    before = fd_count()
    r = NpyReader(tmp_path / "a.npy")
    r.read_row(1)
    r.read_flat(2, 9)
    assert fd_count() == before
    state = r.__reduce__()
    assert state == (NpyReader, (r.path, r.header))
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.header == r.header and np.array_equal(r2.read_flat(0, 12), arr.ravel())
    assert len(pickle.dumps(r)) < 400
    assert "shape=(4, 3)" in repr(r)


def test_pickled_reader_in_another_process(tmp_path):
    import concurrent.futures
    import multiprocessing

    arr = np.asfortranarray(np.arange(60.0).reshape(5, 12))
    np.save(tmp_path / "a.npy", arr)
    r = NpyReader(tmp_path / "a.npy")
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        got = ex.submit(r.read_flat, 7, 31).result(timeout=60)
    assert np.array_equal(got, arr.ravel()[7:31])


def test_missing_and_vanishing_file(tmp_path):
    with pytest.raises(MissingFileError):
        NpyReader(tmp_path / "nope.npy")
    np.save(tmp_path / "a.npy", np.zeros((10, 10)))
    r = NpyReader(tmp_path / "a.npy")
    (tmp_path / "a.npy").unlink()
    with pytest.raises(MissingFileError, match="moved or deleted"):
        r.read_row(0)


def test_file_shrinking_after_header(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((10, 10)))
    r = NpyReader(tmp_path / "a.npy")
    with open(tmp_path / "a.npy", "r+b") as f:
        f.truncate(128 + 8 * 50)
    assert r.read_row(4).shape == (10,)
    with pytest.raises(NpyFormatError, match="truncated"):
        r.read_row(5)
