"""Header parsing: versions 1, 2, 3; corrupt, truncated, foreign and object-dtype files."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from chunkmap.errors import MissingFileError, NpyFormatError
from chunkmap.npy import NpyHeader, read_header
from chunkmap.npy.header import parse_header


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_versions_and_orders(tmp_path, npy_writer, version, order):
    arr = np.asarray(np.arange(24, dtype=">i2").reshape(2, 3, 4), order=order)
    path = npy_writer(tmp_path / "a.npy", arr, version)
    h = read_header(path)
    assert h == NpyHeader(version, np.dtype(">i2"), (2, 3, 4), order == "F", h.data_offset)
    assert h.data_offset % 64 == 0 and h.data_offset == os.path.getsize(path) - arr.nbytes


def test_matches_numpy_writer(tmp_path):
    arr = np.zeros((5, 7), "<c8")
    np.save(tmp_path / "a.npy", arr)
    h = read_header(tmp_path / "a.npy")
    assert (h.version, h.dtype, h.shape, h.fortran_order) == ((1, 0), arr.dtype, (5, 7), False)
    assert h.nbytes == arr.nbytes and h.row_shape == (7,) and h.row_size == 7


def test_version3_utf8_field_names(tmp_path, npy_writer):
    arr = np.zeros(3, dtype=[("\u00e9t\u00e9", "<f4"), ("\u4e2d", "u1")])
    h = read_header(npy_writer(tmp_path / "a.npy", arr, (3, 0)))
    assert h.version == (3, 0) and h.dtype == arr.dtype


def test_long_header_needs_a_second_read(tmp_path, npy_writer):
    dt = np.dtype([(f"field_{k:04d}", "<f4") for k in range(400)])  # header > 4096 bytes
    path = npy_writer(tmp_path / "a.npy", np.zeros(2, dt), (2, 0))
    assert read_header(path).dtype == dt


def test_0d_header_has_no_rows():
    h = NpyHeader((1, 0), np.dtype("<f8"), (), False, 128)
    assert h.size == 1 and h.nbytes == 8
    with pytest.raises(IndexError, match="0-d"):
        h.row_shape


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="no .npy file") as e:
        read_header(tmp_path / "nope.npy")
    assert isinstance(e.value, FileNotFoundError)


def _npy_bytes(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _v1(text: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "magic"),
        (b"PK\x03\x04 this is a zip", "magic"),
        (b"\x93NUMPY\x04\x00\x10\x00", "version 4.0"),
        (b"\x93NUMPY\x02\x00\x10", "ends inside its header"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'", "ends inside its header"),
        (b"\x93NUMPY\x01\x00\x08\x00__import", "not a Python literal"),
        (b"\x93NUMPY\x01\x00\x0a\x00[1, 2, 3]\n", "lacks the keys"),
        (_v1(b"{'descr':'<f8','fortran_order':0,'shape':(1,)}"), "not a bool"),
        (_v1(b"{'descr':'<f8','fortran_order':False,'shape':(-1,)}"), "non-negative"),
        (_v1(b"{'descr':'<f8','fortran_order':False,'shape':[1]}"), "non-negative"),
        (_v1(b"{'descr':'<zz','fortran_order':False,'shape':(1,)}"), "not a numpy dtype"),
        (_v1(b"{'descr':'<f8','fortran_order':False,'shape':(1,),'x':1}"), "lacks the keys"),
        (_v1(b"\xff\xfe"), "not a Python literal"),
        (b"\x93NUMPY\x01\x00\xff\xff{", "ends inside its header"),
    ],
)
def test_corrupt_files(tmp_path, data, match):
    path = tmp_path / "bad.npy"
    path.write_bytes(data)
    with pytest.raises(NpyFormatError, match=match) as e:
        read_header(path)
    assert isinstance(e.value, ValueError) and "bad.npy" in str(e.value)


def test_object_dtype_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npy"
    path.write_bytes(_npy_bytes(np.array([{"a": 1}, None], dtype=object), allow_pickle=True))
    with pytest.raises(NpyFormatError, match="Python objects"):
        read_header(path)
    nested = np.zeros(2, dtype=[("x", "<f8"), ("o", object)])
    path.write_bytes(_npy_bytes(nested, allow_pickle=True))
    with pytest.raises(NpyFormatError, match="Python objects"):
        read_header(path)


@pytest.mark.parametrize("cut", [1, 8, 799])
def test_truncated_data(tmp_path, cut):
    data = _npy_bytes(np.zeros((10, 10), "<f8"))
    (tmp_path / "t.npy").write_bytes(data[:-cut])
    with pytest.raises(NpyFormatError, match="truncated"):
        read_header(tmp_path / "t.npy")


def test_parse_header_asks_for_more_bytes():
    data = _npy_bytes(np.zeros(3))
    assert parse_header(data[:20]) == 128
    assert parse_header(data).shape == (3,)


def test_header_pickles():
    import pickle

    h = NpyHeader((2, 0), np.dtype(">u4"), (3, 0, 2), True, 192)
    assert pickle.loads(pickle.dumps(h)) == h
