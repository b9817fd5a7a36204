"""Outputs: chunk outputs in any order give the serial order; compaction happens in place."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkmap import outputs
from chunkmap.failures import FailureRecords
from chunkmap.outputs import unravel_in_place, unravel_into


@settings(max_examples=200)
@given(runs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), max_size=12))
def test_close_gaps_equals_concatenating_the_runs(runs):
    starts, counts, position = [], [], 0
    for size, gap in runs:  # each chunk: `size` kept elements, then `gap` slots left by its failures
        starts.append(position)
        counts.append(size)
        position += size + gap
    arrays = [np.arange(position) * 1.5, np.arange(position)]
    expected = [np.concatenate([np.empty(0), *(array[s : s + c] for s, c in zip(starts, counts))]) for array in arrays]
    filled = outputs.close_gaps(arrays, np.array(starts, np.int64), np.array(counts, np.int64))
    assert filled == sum(counts)
    for array, wanted in zip(arrays, expected):
        np.testing.assert_array_equal(array[:filled], wanted)


@settings(max_examples=300)
@given(shape=st.lists(st.integers(1, 6), min_size=0, max_size=4), data=st.data())
def test_unravel_into_equals_numpy(shape, data):
    size = int(np.prod(shape))
    flat = np.array(data.draw(st.lists(st.integers(0, size - 1), max_size=30)), np.int64)
    expected = np.unravel_index(flat, shape) if shape else (np.zeros(len(flat), np.intp),)
    out = [np.full(len(flat), 99, np.intp) for _ in range(max(len(shape), 1))]
    given_flat = flat.copy()
    unravel_into(flat, tuple(shape), out)
    np.testing.assert_array_equal(flat, given_flat)  # the chunk's flat indices are left as they were
    for axis, expected_axis in zip(out, expected):
        np.testing.assert_array_equal(axis, expected_axis)


def test_result_takes_over_the_slots_memory():
    from chunkmap.kernel import ChunkOutput, Evaluation
    from chunkmap.plan import Chunk

    chunks = [Chunk(0, 0, 4, 4)]
    collected = outputs.Outputs((2, 2), chunks)
    slots = collected.flat_index
    status = np.array([0, 1, 0, 0], np.uint8)
    failures = FailureRecords.from_tuples([(1, "Boom", "x")])
    collected.add(ChunkOutput(0, np.arange(4), Evaluation(status, np.array([1.0, 2.0, 3.0]), failures)))
    result = collected.result()
    assert np.shares_memory(result.coords[0], slots)  # the first axis is the slots, compacted and unravelled
    assert [axis.tolist() for axis in result.coords] == [[0, 1, 1], [0, 0, 1]]
    assert result.values.tolist() == [1.0, 2.0, 3.0]
    assert [(f.coords, f.kind, f.type, f.message) for f in result.failures] == [((0, 1), "exception", "Boom", "x")]


def test_chunk_outputs_in_any_order_give_c_order():
    from chunkmap.kernel import ChunkOutput, Evaluation
    from chunkmap.plan import make_plan

    plan = make_plan([np.arange(30).reshape(5, 6)], mask=np.arange(30).reshape(5, 6) % 4 == 0).with_layout((), 4)
    collected = outputs.Outputs(plan.shape, plan.chunks)
    for chunk in reversed(plan.chunks):
        index, (column,) = plan.source.gather(chunk.start, chunk.stop)
        status = (column % 3 == 0).astype(np.uint8)
        failures = FailureRecords.from_tuples([(int(p), "Boom", "x") for p in np.flatnonzero(status)])
        collected.add(ChunkOutput(chunk.index, index, Evaluation(status, column[status == 0] * 10, failures)))
    result = collected.result()
    x = np.arange(30)
    keep = (x % 4 != 0) & (x % 3 != 0)
    np.testing.assert_array_equal(result.flat_index, np.flatnonzero(keep))
    np.testing.assert_array_equal(result.values, x[keep] * 10)
    np.testing.assert_array_equal(result.failures.flat_index, np.flatnonzero((x % 4 != 0) & (x % 3 == 0)))


@settings(max_examples=200)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), block=st.integers(1, 9), data=st.data())
def test_unravel_in_place_equals_numpy(shape, block, data):
    size = int(np.prod(shape))
    flat = np.array(data.draw(st.lists(st.integers(0, size - 1), max_size=30)), np.int64)
    expected = np.unravel_index(flat, shape)
    got = unravel_in_place(flat.copy(), tuple(shape), block)
    assert len(got) == len(shape)
    for axis, expected_axis in zip(got, expected):
        np.testing.assert_array_equal(axis, expected_axis)
        assert axis.dtype == np.intp
