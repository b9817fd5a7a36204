"""Outputs: chunk outputs in any order give the serial order; compaction happens in place."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from chunkmap import outputs
from chunkmap.outputs import compact


@settings(max_examples=200)
@given(keep=hnp.arrays(bool, st.integers(0, 100)), block=st.integers(1, 9))
def test_compact_equals_boolean_indexing_and_reuses_the_memory(keep, block):
    array = np.arange(len(keep), dtype=np.float64) * 1.5
    expected = array[keep]
    result = compact(array, keep, block)
    np.testing.assert_array_equal(result, expected)
    assert len(keep) == 0 or np.shares_memory(result, array) or len(result) == 0


def test_chunk_outputs_in_any_order_give_c_order():
    from chunkmap.kernel import ChunkOutput, Evaluation
    from chunkmap.plan import make_plan

    plan = make_plan([np.arange(30).reshape(5, 6)], mask=np.arange(30).reshape(5, 6) % 4 == 0, chunks=4)
    collected = outputs.Outputs(plan.shape, plan.chunks)
    for chunk in reversed(plan.chunks):
        index, (column,) = plan.source.gather(chunk.start, chunk.stop)
        status = (column % 3 == 0).astype(np.uint8)
        failures = [(int(p), "Boom", "x") for p in np.flatnonzero(status)]
        collected.add(ChunkOutput(chunk.index, index, Evaluation(status, column[status == 0] * 10, failures)))
    result = collected.result()
    x = np.arange(30)
    keep = (x % 4 != 0) & (x % 3 != 0)
    np.testing.assert_array_equal(result.flat_index, np.flatnonzero(keep))
    np.testing.assert_array_equal(result.values, x[keep] * 10)
    np.testing.assert_array_equal(result.failures.flat_index, np.flatnonzero((x % 4 != 0) & (x % 3 == 0)))
