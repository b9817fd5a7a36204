"""FailureRecords: packed failure columns give back exactly the tuples they were made from."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkmap.failures import FailureRecords

records = st.lists(st.tuples(st.integers(0, 2**40), st.sampled_from(["ValueError", "InternalError", "KeyError", "É"]),
                             st.text()), max_size=20)


@settings(max_examples=300)
@given(records)
def test_round_trip_of_any_text(tuples):
    packed = FailureRecords.from_tuples(tuples)
    assert list(packed) == tuples
    assert len(packed) == len(tuples)
    assert list(pickle.loads(pickle.dumps(packed))) == tuples


@settings(max_examples=200)
@given(st.lists(st.tuples(records, st.integers(0, 1000)), max_size=5))
def test_concat_shifts_positions_and_merges_type_tables(parts):
    packed = FailureRecords.concat([FailureRecords.from_tuples(part) for part, _ in parts],
                                   [offset for _, offset in parts])
    expected = [(position + offset, name, message) for part, offset in parts for position, name, message in part]
    assert list(packed) == expected
    assert len(packed.type_names) == len(set(packed.type_names))


def test_the_strings_are_packed_and_compressed():
    tuples = [(i, "InternalError", f"slowlib_compute({i}.0, 0.5): input outside the domain (code 1)")
              for i in range(10_000)]
    packed = FailureRecords.from_tuples(tuples)
    assert packed.type_names == ("InternalError",)
    text = sum(len(message) for _, _, message in tuples)
    assert 10_000 * (8 + 4 + 8) < packed.nbytes < 10_000 * (8 + 4 + 8) + text / 4
    assert packed.messages()[1234] == tuples[1234][2]


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="2 positions, 1 types, 2 messages"):
        FailureRecords.from_columns([1, 2], ["A"], ["x", "y"])


def test_empty():
    assert list(FailureRecords.empty()) == []
    assert list(FailureRecords.concat([])) == []
    assert FailureRecords.from_tuples([]) == FailureRecords.empty()
    assert np.asarray(FailureRecords.empty().positions).dtype == np.int64


def test_blocks_written_with_zlib_by_older_versions_are_still_read():
    """Checkpoint records of format 4 written before the switch to zstd hold zlib blocks."""
    import zlib

    messages = ["bad x", "worse é", "bad y"]
    text = "".join(messages).encode("utf-8")
    ends = np.cumsum([len(m.encode("utf-8")) for m in messages])
    old = FailureRecords(np.array([3, 5, 9]), np.array([0, 1, 0], np.int32), ("ValueError", "KeyError"),
                         (zlib.compress(text, 1),), np.array([3]), ends)
    assert list(old) == [(3, "ValueError", "bad x"), (5, "KeyError", "worse é"), (9, "ValueError", "bad y")]
    assert list(old.take([2])) == [(9, "ValueError", "bad y")]
    new = FailureRecords.from_tuples(list(old))
    assert new.blocks[0][:4] == b"\x28\xb5\x2f\xfd" and list(FailureRecords.concat([old, new], [0, 100]))[3:] == [
        (103, "ValueError", "bad x"), (105, "KeyError", "worse é"), (109, "ValueError", "bad y")]


def test_several_exception_types_keep_their_codes():
    records = FailureRecords.from_tuples([(0, "A", "1"), (1, "B", "2"), (2, "A", "3"), (3, "C", "4")])
    assert records.type_names == ("A", "B", "C") and records.type_codes.tolist() == [0, 1, 0, 2]
    assert records.types() == ["A", "B", "A", "C"]
