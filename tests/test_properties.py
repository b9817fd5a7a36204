"""Property tests: random shapes, dtypes, masks and failing elements against the serial loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chunkmap


@st.composite
def problems(draw):
    """Up to three integer inputs broadcasting to one shape of 0 to 3 dimensions, and a mask."""
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=draw(st.integers(1, 3)), max_dims=3, max_side=6))
    arrays = [
        draw(hnp.arrays(draw(st.sampled_from([np.int8, np.int64, np.uint16])), shape, elements=st.integers(0, 100)))
        for shape in shapes.input_shapes
    ]
    mask = draw(st.one_of(st.none(), hnp.arrays(bool, shapes.result_shape)))
    masked_first = draw(st.booleans())
    if masked_first:
        arrays[0] = np.ma.masked_array(arrays[0], mask=draw(hnp.arrays(bool, arrays[0].shape)))
    chunks = draw(st.one_of(st.just("auto"), st.integers(1, 50)))
    return arrays, mask, chunks


@settings(max_examples=150, deadline=None)
@given(problem=problems(), scheduler=st.sampled_from(["sync", "threads"]))
def test_run_equals_the_serial_loop(ew, problem, scheduler):
    arrays, mask, chunks = problem
    result = chunkmap.run(ew.int_or_boom, *arrays, mask=mask, skip=ew.Boom, chunks=chunks, scheduler=scheduler)
    ew.assert_matches_reference(result, ew.int_or_boom, arrays, mask=mask, skip=ew.Boom)
    assert result.stats.masked + result.stats.computed + result.stats.failed == result.stats.elements
    dense = result.to_dense(-1)
    assert dense.shape == result.shape
    np.testing.assert_array_equal(dense.reshape(-1)[result.flat_index], result.values)
