"""SharedArray in one process: round trips, pickling, views, lifetime, errors."""

from __future__ import annotations

import gc
import os
import pickle

import numpy as np
import pytest
from shm_workers import maps_of

from chunkmap.errors import DtypeError, InputError, MissingFileError
from chunkmap.shm import ClosedError, SharedArray, SharedMemoryError
from chunkmap.shm import segment as seg_mod

pytestmark = pytest.mark.usefixtures("no_leak")

NUMERIC = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128", "clongdouble",
    "datetime64[ns]", "timedelta64[s]", ">i4", "<f8",
]
SHAPES = [(), (0,), (3, 0, 2), (7,), (4, 5), (2, 3, 4, 5)]


def sample(shape, dtype):
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.arange(n, dtype=np.int64) * 7 - 3
    if dt.kind == "b":
        return (raw % 2 == 0).reshape(shape)
    if dt.kind in "Mm":
        return raw.astype(dt).reshape(shape)
    if dt.kind == "u":
        raw = np.abs(raw)
    return (raw.astype(dt) + (1j if dt.kind == "c" else 0)).astype(dt).reshape(shape)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_round_trip_every_dtype(dtype):
    a = sample((4, 5), dtype)
    with SharedArray.from_array(a) as sa:
        assert sa.array.dtype == a.dtype and sa.array.shape == a.shape
        np.testing.assert_array_equal(sa.array, a)
        back = pickle.loads(pickle.dumps(sa))
        assert back.dtype == a.dtype
        np.testing.assert_array_equal(back.array, a)


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_shapes(shape):
    a = sample(shape, "float64")
    with SharedArray.from_array(a) as sa:
        back = pickle.loads(pickle.dumps(sa))
        assert back.shape == shape == back.array.shape
        np.testing.assert_array_equal(back.array, a)
        assert back.array.flags.c_contiguous and back.array.flags.writeable


def test_create_is_zeroed_and_validates():
    with SharedArray.create(5, "int32") as sa:
        assert sa.array.tolist() == [0] * 5 and sa.nbytes == 20 and len(sa) == 5
    with pytest.raises(DtypeError, match="object"):
        SharedArray.create(3, object)
    with pytest.raises(DtypeError):
        SharedArray.create(3, "not a dtype")
    with pytest.raises(InputError, match="negative"):
        SharedArray.create((2, -1))
    with pytest.raises(InputError):
        SharedArray.create("abc")


def test_fortran_and_noncontiguous_inputs_are_copied_in_c_order():
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))[:, ::2]
    with SharedArray.from_array(a) as sa:
        np.testing.assert_array_equal(sa.array, a)
        assert sa.array.flags.c_contiguous


def test_pickle_is_constant_size():
    with SharedArray.create(10, "f4") as small, SharedArray.create((1000, 1000), "f4") as big:
        assert len(pickle.dumps(big)) < len(pickle.dumps(small)) + 10 < 200


def test_attach_in_creating_process_shares_the_mapping():
    with SharedArray.create(100, "f8") as sa:
        others = [pickle.loads(pickle.dumps(sa)) for _ in range(1000)]
        others[0].array[3] = 5.0
        assert sa.array[3] == 5.0
        assert maps_of(sa.name) == 1
        assert {o.array.__array_interface__["data"][0] for o in others} == {sa.array.__array_interface__["data"][0]}
        assert not any(o.owner for o in others) and sa.owner


def test_attachment_keeps_segment_alive_in_creating_process():
    sa = SharedArray.create(10, "i8")
    name = sa.name
    att = SharedArray.attach(name, 10, "i8")
    del sa
    gc.collect()
    assert os.path.exists(os.path.join(seg_mod.DEV_SHM, name))
    del att
    gc.collect()
    assert not os.path.exists(os.path.join(seg_mod.DEV_SHM, name))


def test_rows_pickle_with_offset():
    with SharedArray.from_array(np.arange(24).reshape(6, 4)) as sa:
        part = pickle.loads(pickle.dumps(sa.rows(2, 4)))
        assert part.offset == 2 * 4 * 8
        np.testing.assert_array_equal(part.array, np.arange(8, 16).reshape(2, 4))
        part.array[:] = -1
        assert (sa.array[2:4] == -1).all()
        assert sa.rows(5, 100).shape == (1, 4) and sa.rows(4, 2).shape == (0, 4)
    with SharedArray.create(()) as scalar, pytest.raises(InputError):
        scalar.rows(0, 1)


def test_gc_of_owner_unlinks_and_mapping_is_dropped_with_last_view():
    sa = SharedArray.create(1000, "u1")
    name = sa.name
    view = sa.array
    del sa
    gc.collect()
    assert not os.path.exists(os.path.join(seg_mod.DEV_SHM, name))
    assert maps_of(name) == 1  # the view keeps the memory mapped, and valid
    view[:] = 1
    del view
    gc.collect()
    assert maps_of(name) == 0 and name not in seg_mod._MAPPINGS


def test_close_unlink_and_errors():
    sa = SharedArray.create(4)
    att = SharedArray.attach(sa.name, 4, "f8")
    with pytest.raises(SharedMemoryError, match="only the object that created"):
        att.unlink()
    att.close()
    att.close()
    with pytest.raises(ClosedError):
        att.array
    with pytest.raises(ClosedError):
        pickle.dumps(att)
    sa.close()
    assert sa.closed and "closed" in repr(sa)
    sa.unlink()
    sa.unlink()  # once; later calls do nothing
    with pytest.raises(MissingFileError, match="no shared-memory segment"):
        SharedArray.attach(sa.name, 4, "f8")


def test_attach_checks_size():
    with SharedArray.create(4, "f8") as sa, pytest.raises(InputError, match="needs"):
        SharedArray.attach(sa.name, 5, "f8")


def test_array_protocol_and_repr():
    with SharedArray.from_array([1, 2, 3]) as sa:
        assert np.asarray(sa) is sa.array
        assert np.asarray(sa, dtype=float).dtype == np.float64
        assert "owner" in repr(sa) and sa.name in repr(sa)
