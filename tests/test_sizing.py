"""chunks="auto": the pilot's fit and the sizing rule, and the pilot's layout on a real run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import chunkmap
from chunkmap import sizing


@given(per_call=st.floats(1e-8, 2.0), overhead=st.floats(0, 0.05), k=st.sampled_from([8, 64, 512]),
       hiccup=st.floats(0, 1.0))
def test_fit_recovers_time_per_call_and_overhead_despite_one_hiccup(per_call, overhead, k, hiccup):
    tasks = [(k, overhead + k * per_call, k * per_call), (k, overhead + k * per_call, k * per_call),
             (8 * k, overhead + 8 * k * per_call, 8 * k * per_call),
             (8 * k, overhead + hiccup + 8 * k * per_call, 8 * k * per_call)]  # one task stalled outside its loop
    fitted_call, fitted_overhead = sizing.fit(tasks)
    assert fitted_call == pytest.approx(per_call, rel=1e-6, abs=1e-12)
    assert fitted_overhead == pytest.approx(overhead, rel=1e-6, abs=1e-9)


@given(per_call=st.floats(50e-9, 1.0), overhead=st.floats(1e-5, 0.01), remaining=st.integers(1, 10**8),
       workers=st.integers(1, 64))
def test_chunk_size_respects_its_rule(per_call, overhead, remaining, workers):
    size = sizing.auto_chunk_size(per_call, overhead, remaining, workers)
    duration = size * per_call
    per_worker = remaining * per_call / workers
    assert 1 <= size <= sizing.MAX_CHUNK_ELEMENTS
    floor = sizing.dispatch_floor(remaining * per_call, workers)  # what the scheduler affords
    assert size <= remaining
    if size > 1 and size < sizing.MAX_CHUNK_ELEMENTS:
        assert duration <= min(sizing.MAX_CHUNK_SECONDS, max(per_worker / 2, floor)) * (1 + 1e-9)  # balance, cap
        assert duration >= min(floor, sizing.MAX_CHUNK_SECONDS, remaining * per_call) - per_call
        if per_worker / 2 >= overhead / sizing.OVERHEAD_SHARE:
            assert duration >= overhead / sizing.OVERHEAD_SHARE - per_call  # overhead under 1%


def test_the_pilot_keeps_its_results_and_sizes_the_rest(ew):
    chunks_seen = []
    a = np.random.default_rng(0).random(5000)

    def record(x):
        chunks_seen.append(x)
        return x * 2

    result = chunkmap.run(record, a, scheduler="sync")
    assert len(chunks_seen) == 5000  # every element called exactly once: the pilot's work is kept
    np.testing.assert_array_equal(result.values, a * 2)
