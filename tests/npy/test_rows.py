"""RowIterator: order, prefetch, errors, and a clean stop however the consumer stops."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest

from chunkmap.errors import MissingFileError, NpyFormatError
from chunkmap.npy import NpyReader, RowIterator, iter_rows


@pytest.fixture
def files(tmp_path):
    paths = []
    for k in range(5):
        p = tmp_path / f"f{k}.npy"
        arr = np.arange(300 * 6, dtype="<f4").reshape(300, 2, 3) + 10_000 * k
        np.save(p, arr if k % 2 == 0 else np.asfortranarray(arr))
        paths.append(p)
    return paths


def _wait_no_threads(live, timeout=5.0):
    deadline = time.monotonic() + timeout
    while live() and time.monotonic() < deadline:
        time.sleep(0.01)
    return live()


def test_rows_in_order_across_files(files, live_prefetch_threads):
    expected = np.concatenate([np.load(p) for p in files])
    got = np.stack(list(RowIterator(files, prefetch=16)))
    assert np.array_equal(got, expected)
    assert _wait_no_threads(live_prefetch_threads) == []


def test_single_file_reader_and_index(files):
    rows = list(iter_rows(NpyReader(files[1]), with_index=True))
    assert [(s, i) for s, i, _ in rows] == [(0, i) for i in range(300)]
    assert np.array_equal(rows[7][2], np.load(files[1])[7])
    rows = list(iter_rows(str(files[0]), prefetch=1))
    assert len(rows) == 300


def test_empty_files_are_skipped(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 4)))
    np.save(tmp_path / "a.npy", np.ones((2, 4)))
    assert len(list(RowIterator([tmp_path / "e.npy", tmp_path / "a.npy", tmp_path / "e.npy"]))) == 2
    assert list(RowIterator([])) == []


@pytest.mark.parametrize("how", ["break", "close", "with", "del"])
def test_early_stop_leaves_no_thread(files, live_prefetch_threads, how):
    big = files * 20  # far more rows than the prefetch bound
    if how == "break":
        for k, _row in enumerate(RowIterator(big, prefetch=8)):
            if k == 10:
                break
    elif how == "close":
        it = RowIterator(big, prefetch=8)
        next(it)
        it.close()
        assert it.closed
        with pytest.raises(StopIteration):
            next(it)
    elif how == "with":
        with RowIterator(big) as it:
            next(it)
            next(it)
    else:
        it = RowIterator(big)
        next(it)
        del it
        gc.collect()
    assert _wait_no_threads(live_prefetch_threads) == []


def test_errors_are_raised_in_order(files, tmp_path, live_prefetch_threads):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an npy file")
    it = RowIterator([files[0], bad])
    rows = []
    with pytest.raises(NpyFormatError):
        for row in it:
            rows.append(row)
    assert len(rows) == 300 and it.closed
    with pytest.raises(MissingFileError):
        list(RowIterator([tmp_path / "nope.npy"]))
    with pytest.raises(IndexError, match="0-d"):
        np.save(tmp_path / "s.npy", np.float64(3))
        list(RowIterator(tmp_path / "s.npy"))
    assert _wait_no_threads(live_prefetch_threads) == []


def test_prefetch_is_bounded(files):
    it = RowIterator(files * 50, prefetch=32)
    next(it)
    time.sleep(0.2)  # let the producer fill the queue
    queued = sum(len(item[2]) for item in list(it._queue.queue) if isinstance(item, tuple))
    assert queued <= 32 + 8
    it.close()


def test_first_row_is_quick(files):
    t = time.perf_counter()
    it = RowIterator(files * 100)
    row = next(it)
    elapsed = time.perf_counter() - t
    it.close()
    assert row.shape == (2, 3)
    assert elapsed < 0.1  # ~0.1-0.3 ms on a quiet machine; generous for a loaded one


def test_first_row_is_read_before_any_thread_starts(files, live_prefetch_threads):
    assert _wait_no_threads(live_prefetch_threads) == []
    it = RowIterator(files, with_index=True)
    assert next(it)[:2] == (0, 0)
    assert live_prefetch_threads() == []  # served by the caller's own read
    rest = list(it)
    assert [(s, i) for s, i, _ in rest] == [(s, i) for s in range(5) for i in range(300)][1:]
    assert _wait_no_threads(live_prefetch_threads) == []


def test_single_short_file_needs_no_thread(tmp_path, live_prefetch_threads):
    np.save(tmp_path / "a.npy", np.arange(5))
    it = RowIterator(tmp_path / "a.npy")
    assert [int(x) for x in it] == [0, 1, 2, 3, 4]
    assert it.closed and it._holder == [None]
