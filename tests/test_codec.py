"""Tests of chunkmap.codec: round trips, zero copy, and every way a payload can be wrong."""

from __future__ import annotations

import pickle
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from chunkmap import codec
from chunkmap.errors import CodecError, FormatError

DTYPES = [
    "<u2", ">u2", "|u1", "|i1", "<i8", ">i8", "<f4", ">f8", "<c16", ">c8", "|b1",
    "<M8[ns]", ">m8[s]", "<U7", ">U3", "|S5", "|V6", "<f2",
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 4), (2, 0, 3), (2, 3, 1, 2)])
def test_round_trip_dtype_and_shape(dtype, shape):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    a = raw.view(dtype).reshape(shape) if raw.size else np.zeros(shape, dtype)
    b = codec.decode(codec.encode(a))
    assert b.dtype == a.dtype and b.dtype.str == a.dtype.str  # byte order kept
    assert b.shape == a.shape
    assert a.tobytes() == b.tobytes()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)))
def test_round_trip_property(a):
    for checksum in (False, True):
        b = codec.decode(codec.encode(a, checksum=checksum))
        assert b.dtype.str == a.dtype.str and b.shape == a.shape
        assert a.tobytes() == b.tobytes()


def test_many_dimensions():
    a = np.arange(2 * 3, dtype=np.int16).reshape((1,) * 30 + (2, 3))
    np.testing.assert_array_equal(codec.decode(codec.encode(a)), a)


def test_structured_dtype_round_trips():
    dt = np.dtype([("x", "<f8"), ("y", ">i2", (2,)), ("name", "U4")])
    a = np.zeros(3, dt)
    a["x"] = [1, 2, 3]
    a["y"] = [[1, 2], [3, 4], [5, 6]]
    a["name"] = ["a", "bb", "ccc"]
    b = codec.decode(codec.encode(a))
    assert b.dtype == dt
    assert a.tobytes() == b.tobytes()
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<f4"], "offsets": [0, 4], "itemsize": 12})
    c = np.ones(2, padded)
    d = codec.decode(codec.encode(c))
    assert d.dtype == padded and d.tobytes() == c.tobytes()


def test_decode_is_zero_copy_view():
    a = np.arange(6400, dtype=np.uint16).reshape(80, 80)
    p = codec.encode(a)
    b = codec.decode(p)
    assert not b.flags.writeable and not b.flags.owndata
    assert np.shares_memory(b, np.frombuffer(p, np.uint8))
    ba = bytearray(p)
    c = codec.decode(ba)
    c[0, 0] = 7
    assert codec.decode(bytes(ba))[0, 0] == 7  # the view writes through to the bytearray
    m = codec.decode(memoryview(p))
    np.testing.assert_array_equal(m, a)


def test_data_is_aligned():
    for dtype in ("<u2", "<f8", "<c16"):
        for shape in ((80, 80), (3,), (2, 2, 2)):
            b = codec.decode(codec.encode(np.ones(shape, dtype)))
            assert b.flags.aligned
            assert codec.header_size(len(shape), dtype) % 16 == 0


def test_layouts():
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    b = codec.decode(codec.encode(a))
    assert b.flags.f_contiguous
    np.testing.assert_array_equal(a, b)
    s = np.arange(40).reshape(5, 8)[::2, 1::3]  # neither C nor F contiguous
    np.testing.assert_array_equal(codec.decode(codec.encode(s)), s)
    np.testing.assert_array_equal(codec.decode(codec.encode([[1, 2], [3, 4]])), [[1, 2], [3, 4]])
    header, data = codec.encode_parts(a)
    assert header + data.tobytes() == codec.encode(a)
    assert np.shares_memory(data, a)


def test_peek():
    p = codec.encode(np.zeros((3, 4, 5), ">f4"))
    assert codec.peek(p) == (np.dtype(">f4"), (3, 4, 5))
    assert codec.peek(bytearray(p)) == (np.dtype(">f4"), (3, 4, 5))


def test_object_and_masked_refused():
    with pytest.raises(CodecError, match="Python objects"):
        codec.encode(np.array([1, "a"], dtype=object))
    with pytest.raises(CodecError, match="Python objects"):
        codec.encode(np.zeros(2, [("a", "O"), ("b", "i4")]))
    with pytest.raises(CodecError, match="masked"):
        codec.encode(np.ma.masked_array([1, 2], mask=[0, 1]))


def test_errors_are_value_errors():
    assert issubclass(CodecError, FormatError) and issubclass(CodecError, ValueError)


@pytest.mark.parametrize("cut", [0, 1, 4, 8, 20, 31, 32, 100, 12831])
def test_truncated_payload(cut):
    p = codec.encode(np.arange(6400, dtype=np.uint16).reshape(80, 80))
    with pytest.raises(CodecError, match=r"received|truncated") as e:
        codec.decode(p[:cut])
    assert str(cut) in str(e.value)


def test_extended_payload():
    p = codec.encode(np.arange(10, dtype=np.uint16))
    with pytest.raises(CodecError, match=r"received 53 bytes, expected 52"):
        codec.decode(p + b"\0")
    with pytest.raises(CodecError, match="truncated or extended"):
        codec.decode(p + p)


def test_corrupted_header_detected_at_every_byte():
    a = np.arange(6400, dtype=np.uint16).reshape(80, 80)
    p = codec.encode(a)
    hlen = codec.header_size(2, "<u2")
    for i in range(hlen):
        for flip in (0x01, 0x80):
            q = bytearray(p)
            q[i] ^= flip
            with pytest.raises(CodecError):
                codec.decode(bytes(q))


def test_reshaped_header_with_same_size_detected():
    """A shape (80, 80) -> (160, 40) corruption keeps the length; the header crc catches it."""
    p = bytearray(codec.encode(np.zeros((80, 80), np.uint16)))
    struct.pack_into("<2Q", p, 9, 160, 40)
    with pytest.raises(CodecError, match="corrupted.*crc32"):
        codec.decode(bytes(p))


def test_data_checksum():
    a = np.arange(100, dtype="<f8")
    p = bytearray(codec.encode(a, checksum=True))
    assert len(p) == len(codec.encode(a)) + 4
    p[100] ^= 1
    with pytest.raises(CodecError, match="data's xxh3"):
        codec.decode(bytes(p))


def crc32_payload(a: np.ndarray) -> bytes:
    """``a`` as codec wrote it with ``checksum=True`` before xxh3: flag 4 and a zlib crc32 trailer."""
    plain = bytearray(codec.encode(a))
    plain[5] |= 4
    _, _, _, ndim, dlen = struct.unpack_from("<4sBBBH", plain, 0)
    crc_at = 9 + 8 * ndim + dlen
    struct.pack_into("<I", plain, crc_at, zlib.crc32(bytes(plain[:crc_at])))
    return bytes(plain) + struct.pack("<I", zlib.crc32(a.tobytes()))


def test_payloads_checksummed_with_crc32_before_are_still_verified():
    a = np.arange(100, dtype="<f8")
    old = crc32_payload(a)
    np.testing.assert_array_equal(codec.decode(old), a)
    flipped = bytearray(old)
    flipped[100] ^= 1
    with pytest.raises(CodecError, match="data's crc32"):
        codec.decode(bytes(flipped))
    both = bytearray(codec.encode(a, checksum=True))  # two trailer flags at once: refused
    both[5] |= 4
    with pytest.raises(CodecError, match="corrupted"):
        codec.decode(bytes(both))


def test_foreign_payloads():
    a = np.arange(6400, dtype=np.uint16).reshape(80, 80)
    seed = struct.pack(">II", 80, 80) + a.tobytes()  # the seed's toRedis format
    with pytest.raises(CodecError, match=r"not a chunkmap array payload: received 12808 bytes"):
        codec.decode(seed)
    with pytest.raises(CodecError, match="pickle"):
        codec.decode(pickle.dumps(a))
    import io

    f = io.BytesIO()
    np.save(f, a)
    with pytest.raises(CodecError, match=r"\.npy"):
        codec.decode(f.getvalue())
    with pytest.raises(CodecError, match="received None"):
        codec.decode(None)
    with pytest.raises(CodecError, match="received 0 bytes"):
        codec.decode(b"")


def test_newer_version_refused():
    p = bytearray(codec.encode(np.zeros(3)))
    p[4] = 2
    with pytest.raises(CodecError, match="version 2.*upgrade chunkmap"):
        codec.decode(bytes(p))


def test_object_dtype_in_forged_header_refused():
    """A header claiming the object dtype, with a valid crc, is refused (never unpickled)."""
    descr = b"|O"
    head = struct.pack("<4sBBBH", codec.MAGIC, 1, 0, 1, len(descr)) + struct.pack("<Q", 2) + descr
    head += struct.pack("<I", zlib.crc32(head))
    head += b"\0" * (-len(head) % 16)
    with pytest.raises(CodecError, match="object"):
        codec.decode(head + b"\0" * 16)


def test_header_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(codec, "_CACHE_LIMIT", 8)
    for n in range(30):
        codec.decode(codec.encode(np.zeros(n)))
    assert len(codec._enc_cache) <= 8 and len(codec._dec_cache) <= 8
