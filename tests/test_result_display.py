"""What a scientist sees of a Result: len, failures indexed, sliced and iterated as records, repr and HTML."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

import chunkmap
from chunkmap import Failure, Failures, Result
from chunkmap.stub import slowlib

SHAPE = (30, 40)


class Odd(Exception):
    """Raised with a message that needs HTML escaping."""


def odd_or_sum(a, b):
    """a + b, raising Odd (a message with HTML in it) where int(a * 100) is a multiple of 7."""
    if int(a * 100) % 7 == 0:
        raise Odd(f"<b>&</b> bad input {a!r}\nsecond line")
    return a + b


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.random(SHAPE), rng.random(SHAPE)
    return a, b, b > 0.9


def serial_failures(func, a, b, mask, skip):
    """The Failure records of the plain serial loop, in C order."""
    records = []
    for coords in np.ndindex(a.shape):
        if mask[coords]:
            continue
        try:
            func(float(a[coords]), float(b[coords]))
        except skip as exc:
            records.append(Failure(coords, "exception", type(exc).__name__, str(exc)))
    return records


@pytest.fixture(scope="module")
def run():
    a, b, mask = inputs()
    result = chunkmap.run(odd_or_sum, a, b, mask=mask, skip=Odd, scheduler="sync", chunks=97, progress=False)
    return result, serial_failures(odd_or_sum, a, b, mask, Odd), int(mask.sum())


def test_len_is_the_count_of_computed_elements_and_unpacking_still_works(run):
    result, expected, masked = run
    assert len(result) == result.stats.computed == len(result.values) == SHAPE[0] * SHAPE[1] - masked - len(expected)
    xs, ys, values = result
    assert np.array_equal(values, result.values) and np.array_equal(xs, result.coords[0])
    nothing = Result((2,), (np.empty(0, np.int64),), np.empty(0), Failures((2,), [0, 1], ["E", "E"], ["a", "b"]))
    assert len(nothing) == 0 and bool(nothing)  # a result is true even when it computed nothing


def test_failures_are_the_serial_loops_records_indexed_from_either_end(run):
    result, expected, _ = run
    failures = result.failures
    assert len(expected) > 20 and list(failures) == expected
    for i in (0, 1, 17, len(expected) - 1, -1, -5, -len(expected)):
        assert failures[i] == expected[i]
        assert failures[np.int64(i)] == expected[i]
    for i in (len(expected), -len(expected) - 1):
        with pytest.raises(IndexError, match=f"failure {i} out of range: there are {len(expected)} failures"):
            failures[i]


@pytest.mark.parametrize("key", [slice(None, 3), slice(-4, None), slice(None, None, 3), slice(5, 2),
                                 slice(None, None, -1), slice(2, -2, 5), slice(1000, None)])
def test_slices_are_failures_of_the_same_records(run, key):
    result, expected, _ = run
    part = result.failures[key]
    assert isinstance(part, Failures) and part.shape == SHAPE
    assert list(part) == expected[key] and len(part) == len(expected[key])
    assert [tuple(map(int, xy)) for xy in zip(*part.coords)] == [failure.coords for failure in expected[key]]
    assert part.messages.tolist() == [failure.message for failure in expected[key]]
    assert list(part[::2]) == expected[key][::2]  # a slice is sliceable again
    if len(part):
        assert part[-1] == expected[key][-1]
        assert part.counts_by_type() == {"Odd": len(expected[key])}


def test_boolean_masks_and_int_arrays_select_records(run):
    result, expected, _ = run
    failures = result.failures
    first_row = failures.coords[0] == 0
    assert list(failures[first_row]) == [failure for failure in expected if failure.coords[0] == 0]
    assert list(failures[np.array([3, 0, -1])]) == [expected[3], expected[0], expected[-1]]
    with pytest.raises(IndexError, match="cannot select failures with"):
        failures[np.ones((2, 2), bool)]


def test_the_repr_of_a_run_says_what_happened(run):
    result, expected, masked = run
    text = repr(result)
    assert text.startswith("<chunkmap.Result shape=(30, 40) dtype=float64")
    assert re.search(rf"computed +{len(result):,} ", text) and re.search(rf"masked +{masked:,} ", text)
    assert re.search(rf"failed +{len(expected)} +[\d.]+%  exception {len(expected)}\n", text)
    assert re.search(rf"\n  time +{result.stats.wall_time:.3f} s +{result.stats.rate:,.0f} calls/s on sync>$", text)
    failures = repr(result.failures)
    assert failures.splitlines()[0] == (f"<chunkmap.Failures: {len(expected)} failed elements "
                                        f"(exception {len(expected)}; Odd {len(expected)})")
    assert re.search(rf"\n  {re.escape(str(expected[0].coords))} +exception  \(.+\) +-> Odd: <b>&</b> bad input", failures)
    assert "second line" in failures.splitlines()[1]  # each message on one line
    assert failures.endswith(f"... {len(expected) - 5} more>") and len(failures.splitlines()) == 7
    count = len(expected)
    assert result.failures.summary() == f"{count} failed elements (exception {count}; Odd {count})"


def test_the_html_escapes_every_message_and_shows_the_first_rows(run):
    result, expected, _ = run
    for page in (result._repr_html_(), result.failures._repr_html_()):
        assert "<b>" not in page and "&lt;b&gt;&amp;&lt;/b&gt; bad input" in page
        assert html.escape(" ".join(expected[0].message.split())) in page
        assert page.count("<td style='padding:1px 8px;text-align:left'>Odd</td>") == 10
        assert f"... {len(expected) - 10} more" in page
        assert "<script" not in page and "class=" not in page
    assert f"{len(result):,}" in result._repr_html_() and "sync" in result._repr_html_()


def test_a_result_built_directly_displays_without_stats():
    failures = Failures((2, 3), [4], ["ValueError"], ["x < y & z"], ["timeout"])
    result = Result((2, 3), (np.array([0, 1]), np.array([2, 0])), np.array([1.0, 2.0]), failures)
    text = repr(result)
    assert "elements 6" in text and "computed 2" in text and "timeout 1" in text and "masked" not in text
    assert "x &lt; y &amp; z" in result._repr_html_() and "timeout" in result._repr_html_()
    empty = Failures((0,), [], [], [])
    assert repr(empty) == "<chunkmap.Failures: none>" and "none" in empty._repr_html_()
    assert list(empty) == [] and list(empty[:3]) == []
    scalar = Failures((), [0], ["E"], ["m"])
    assert list(scalar) == [scalar[0]] == [Failure((), "exception", "E", "m")]


def test_crashes_are_counted_by_kind_on_processes():
    a, b, _ = inputs(seed=1)
    crash_at = [(0, 3), (17, 9)]
    for coords in crash_at:
        a[coords] = slowlib.CRASH_VALUE
    result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, scheduler="processes",
                          chunks=200, progress=False)
    crashes = [failure for failure in result.failures if failure.kind == "crash"]
    assert [failure.coords for failure in crashes] == crash_at
    kinds = result.failures.counts_by_kind()
    assert kinds["crash"] == 2 and sum(kinds.values()) == len(result.failures) == result.stats.failed
    assert "crash 2" in repr(result) and "crash 2" in repr(result.failures)
    assert f"calls/s on processes ({result.stats.workers} workers)>" in repr(result)
    assert list(result.failures[result.failures.kinds == "crash"]) == crashes
