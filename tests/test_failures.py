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
