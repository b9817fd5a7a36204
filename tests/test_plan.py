"""Planning internals: chunk boundaries, lazy slicing, what a task carries across processes."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chunkmap
from chunkmap.bitmask import BitMask
from chunkmap.plan import SEARCH_BLOCK, make_plan, split
from chunkmap.source import ArraySource


@settings(max_examples=200, deadline=None)
@given(valid=hnp.arrays(bool, st.integers(0, 300)), size=st.integers(1, 40))
def test_chunks_tile_the_range_with_equal_work(valid, size):
    chunks = split(BitMask.pack(valid), len(valid), size)
    total = int(valid.sum())
    if total == 0:
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].stop == len(valid)
    for before, after in zip(chunks, chunks[1:]):
        assert before.stop == after.start
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.size == int(valid[chunk.start : chunk.stop].sum()) > 0
        assert chunk.size == size or (chunk is chunks[-1] and chunk.size <= size)
    assert sum(chunk.size for chunk in chunks) == total


def test_chunk_boundaries_across_search_blocks():
    valid = np.zeros(3 * SEARCH_BLOCK + 17, bool)
    valid[::7] = True
    chunks = split(BitMask.pack(valid), len(valid), 1_003)
    assert sum(c.size for c in chunks) == valid.sum()
    assert all(c.size == int(valid[c.start : c.stop].sum()) for c in chunks)


def test_gather_matches_fancy_indexing_on_broadcast_inputs():
    rng = np.random.default_rng(0)
    a = rng.random((5, 1, 4))
    b = np.asfortranarray(rng.random((3, 4)))
    valid = rng.random(60) < 0.7
    source = ArraySource((a, b), (5, 3, 4), valid)
    full = [np.broadcast_to(x, (5, 3, 4)).reshape(-1) for x in (a, b)]
    for start, stop in [(0, 60), (7, 33), (59, 60), (10, 10)]:
        index, columns = source.gather(start, stop)
        expected = np.flatnonzero(valid[start:stop]) + start
        np.testing.assert_array_equal(index, expected)
        for column, flat in zip(columns, full):
            np.testing.assert_array_equal(column, flat[expected])


def test_a_source_pickles_as_its_arrays_even_when_broadcast():
    source = ArraySource((np.arange(4), np.ones((3, 1))), (3, 4), np.arange(12) % 5 > 0)
    back = pickle.loads(pickle.dumps(source))
    for got, expected in zip(back.gather(2, 11), source.gather(2, 11)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_no_stacked_copy_of_the_inputs_is_built():
    """A run on 2 x 32 MB inputs allocates far less than one stacked copy (64 MB)."""
    n = 4_000_000
    a = np.random.default_rng(2).random(n)
    b = np.random.default_rng(3).random(n)
    keep = np.zeros(n, bool)
    keep[:: n // 1000] = True
    chunkmap.run(lambda x, y: x + y, a[:10], b[:10], scheduler="threads")  # imports allocate too
    tracemalloc.start()
    try:
        result = chunkmap.run(lambda x, y: x + y, a, b, mask=~keep, scheduler="threads")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.values) == keep.sum()
    assert peak < 0.2 * (a.nbytes + b.nbytes)  # ~keep and the resolved mask, n bytes each


def test_a_plan_is_laid_out_only_when_asked():
    plan = make_plan([np.zeros(1000)])
    assert plan.chunks == [] and plan.chunk_size == 0 and plan.unmasked == 1000
    laid_out = plan.with_layout((), 125)
    assert len(laid_out.chunks) == 8 and {c.size for c in laid_out.chunks} == {125}


@settings(max_examples=300)
@given(flags=hnp.arrays(bool, st.integers(0, 100)), data=st.data())
def test_bitmask_slices_and_counts_like_the_boolean_array(flags, data):
    mask = BitMask.pack(flags)
    assert len(mask) == len(flags) and mask.count() == int(flags.sum())
    start = data.draw(st.integers(-5, len(flags) + 5))
    stop = data.draw(st.integers(-5, len(flags) + 5))
    np.testing.assert_array_equal(mask[start:stop], flags[start:stop])
    assert pickle.loads(pickle.dumps(mask))[:].tolist() == flags.tolist()


def test_bitmask_refuses_what_it_cannot_do():
    import pytest

    mask = BitMask.pack(np.ones(10, bool))
    with pytest.raises(ValueError, match="step 1, got step 2"):
        mask[::2]
    with pytest.raises(TypeError, match="read by slices, got int"):
        mask[3]
    with pytest.raises(ValueError, match="expected 2 packed uint8 bytes for 10 flags"):
        BitMask(np.zeros(3, np.uint8), 10)


@settings(max_examples=300)
@given(unmasked=st.integers(0, 5000), head=st.lists(st.integers(1, 300), max_size=4, unique=True),
       size=st.integers(1, 400), tail=st.integers(0, 8))
def test_layout_tiles_the_work_and_shrinks_only_at_the_end(unmasked, head, size, tail):
    from chunkmap.plan import TAIL_SHRINK, layout_ends

    head = sorted(head)
    ends = layout_ends(unmasked, head, size, tail)
    assert ends == sorted(set(ends)) and (ends[-1] == unmasked if unmasked else ends == [])
    assert ends[: len([h for h in head if h < unmasked])] == [h for h in head if h < unmasked]
    start = max([h for h in head if h < unmasked], default=0)
    sizes = np.diff([start, *ends[len([h for h in head if h < unmasked]):]]).tolist()
    smallest = max(1, size // TAIL_SHRINK)
    shrinking = [s for s in sizes if s != size]
    assert all(s <= size for s in sizes[:-1])
    if tail == 0:
        assert len(shrinking) <= 1  # only the last chunk may be short
    else:  # regular chunks first, then non-increasing ones down to the smallest (the last may be less)
        first_short = next((i for i, s in enumerate(sizes) if s != size), len(sizes))
        assert all(s == size for s in sizes[:first_short])
        tail_sizes = sizes[first_short:-1]
        assert all(a >= b for a, b in zip(tail_sizes, tail_sizes[1:]))
        assert all(s >= smallest for s in tail_sizes)
    assert layout_ends(unmasked, head, size, tail) == ends  # deterministic: a resumed run cuts the same
    if unmasked and head and head[-1] >= unmasked:  # a head reaching the end is the whole layout
        assert ends == [h for h in head if h < unmasked] + [unmasked]
