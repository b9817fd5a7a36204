"""run(..., outputs=): a func returning several values gives one array per output, against a plain serial loop."""

from __future__ import annotations

import html
import pickle
import threading

import numpy as np
import pytest

import chunkmap
from chunkmap.checkpoint import run_identity
from chunkmap.errors import CheckpointWarning, ElementError, OptionError, OutputCountError, RunCancelledError
from chunkmap.kernel import Execution, evaluate_columns
from chunkmap.plan import make_plan
from chunkmap.testing import values_array

SHAPE = (20, 30)
SCHEDULERS = ["sync", "threads", "processes"]


class Boom(Exception):
    """The exception the test functions raise for some inputs (listed in skip=)."""


def count_and_sum(a, b):
    """Two outputs: an int for small a, else a float (a mix: float64), and a + b; Boom at some inputs."""
    if int(a * 100) % 7 == 0:
        raise Boom(f"boom at {a:.3f}")
    return (int(a * 10) if a < 0.5 else a * 10, a + b)


def complex_bool_label(a, b):
    """Three outputs: complex, bool and an object (a str or None), returned as a list."""
    if int(b * 100) % 11 == 0:
        raise Boom("eleven")
    return [complex(a, b), a > b, f"{a:.2f}" if a > 0.5 else None]


def pair_but_a_triple_at(a):
    """A pair, except a triple where a == 7."""
    return (a, a, a) if a == 7 else (a, 2 * a)


def pair(a, b):
    return a * b, a - b


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.random(SHAPE), rng.random(SHAPE)
    return a, b, b > 0.9


def serial(func, a, b, mask, count):
    """The plain Python loop: coordinates, one values array per output (run's dtype rule), failures."""
    coords, rows, failures = [], [], []
    for index in np.ndindex(a.shape):
        if mask[index]:
            continue
        try:
            row = func(a[index].item(), b[index].item())
        except Boom as exc:
            failures.append((index, "Boom", str(exc)))
            continue
        coords.append(index)
        rows.append(row)
    axes = tuple(np.array([index[axis] for index in coords], np.int64) for axis in range(a.ndim))
    return axes, [values_array([row[k] for row in rows]) for k in range(count)], failures


def assert_equal_values(got, want):
    assert got.dtype == want.dtype, f"dtype {got.dtype}, expected {want.dtype}"
    if want.dtype == object:
        assert got.tolist() == want.tolist()
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("func, outputs", [(count_and_sum, ("count", "total")),
                                           (complex_bool_label, ("z", "bigger", "label"))])
def test_each_output_equals_the_serial_loop(func, outputs, scheduler):
    a, b, mask = inputs()
    result = chunkmap.run(func, a, b, mask=mask, skip=Boom, chunks=50, scheduler=scheduler, outputs=outputs,
                          progress=False)
    coords, expected, failures = serial(func, a, b, mask, len(outputs))
    assert result.outputs == outputs and list(result.values) == list(outputs)
    for got, want in zip(result.coords, coords):
        np.testing.assert_array_equal(got, want)
    for name, want in zip(outputs, expected):
        assert_equal_values(result.values[name], want)
        assert result.values[name].flags.c_contiguous
    assert [(f.coords, f.type, f.message) for f in result.failures] == failures
    assert len(result) == len(coords[0]) == result.stats.computed
    assert result.stats.failed == len(failures) and result.stats.masked == int(mask.sum())


def test_the_dtypes_are_those_of_a_single_output():
    """Chunks of ints only and chunks with floats promote like one output's values do."""
    a, b, mask = inputs(1)
    result = chunkmap.run(count_and_sum, a, b, mask=mask, skip=Boom, chunks=10, scheduler="sync", outputs=2,
                          progress=False)
    single = chunkmap.run(lambda x, y: count_and_sum(x, y)[0], a, b, mask=mask, skip=Boom, chunks=10,
                          scheduler="sync", progress=False)
    assert result.values["out0"].dtype == single.values.dtype == np.float64
    np.testing.assert_array_equal(result.values["out0"], single.values)


def test_unpacking_gives_the_coordinates_then_each_output():
    a, b, mask = inputs(2)
    result = chunkmap.run(count_and_sum, a, b, mask=mask, skip=Boom, scheduler="sync", outputs=("count", "total"),
                          progress=False)
    xs, ys, count, total = result
    coords, expected, _ = serial(count_and_sum, a, b, mask, 2)
    np.testing.assert_array_equal(xs, coords[0])
    np.testing.assert_array_equal(ys, coords[1])
    assert_equal_values(count, expected[0])
    assert_equal_values(total, expected[1])


def test_an_int_names_the_outputs_out0_and_up():
    a, b, _ = inputs(3)
    result = chunkmap.run(pair, a, b, scheduler="sync", outputs=2, progress=False)
    assert result.outputs == ("out0", "out1")
    np.testing.assert_array_equal(result.values["out0"], (a * b).ravel())
    np.testing.assert_array_equal(result.values["out1"], (a - b).ravel())


def test_to_dense_and_to_masked_give_one_array_per_output():
    a, b, mask = inputs(4)
    result = chunkmap.run(complex_bool_label, a, b, mask=mask, skip=Boom, scheduler="sync",
                          outputs=("z", "bigger", "label"), progress=False)
    coords, expected, _ = serial(complex_bool_label, a, b, mask, 3)
    z, bigger, label = result.to_dense()
    want_z = np.full(SHAPE, np.nan, np.complex128)
    want_bigger = np.full(SHAPE, np.nan)
    want_label = np.full(SHAPE, np.nan, object)
    want_z[coords], want_bigger[coords], want_label[coords] = expected
    np.testing.assert_array_equal(z, want_z)
    np.testing.assert_array_equal(bigger, want_bigger)
    assert label.dtype == object and _same_objects(label, want_label)
    z_masked, bigger_masked, label_masked = result.to_masked()
    computed = np.zeros(SHAPE, bool)
    computed[coords] = True
    for masked, want in ((z_masked, expected[0]), (bigger_masked, expected[1]), (label_masked, expected[2])):
        np.testing.assert_array_equal(~masked.mask, computed)
        assert masked.dtype == want.dtype and masked.data[coords].tolist() == want.tolist()
    z_masked.mask[0, 0] = not z_masked.mask[0, 0]
    assert bigger_masked.mask[0, 0] != z_masked.mask[0, 0], "each output has its own mask"


def _same_objects(got, want):
    """Object arrays equal element by element, NaN equal to NaN."""
    return all(g == w or (g != g and w != w) for g, w in zip(got.ravel().tolist(), want.ravel().tolist()))


def test_to_dense_with_a_fill_value_keeps_each_dtype():
    a, b, mask = inputs(5)
    result = chunkmap.run(lambda x, y: (int(x * 10), x > y), a, b, mask=mask, scheduler="sync", outputs=2,
                          progress=False)
    count, bigger = result.to_dense(-1)
    assert count.dtype == np.int64 and bigger.dtype == np.int8  # as one output's: what numpy promotes with -1
    np.testing.assert_array_equal(count, np.where(mask, -1, (a * 10).astype(np.int64)))
    np.testing.assert_array_equal(bigger, np.where(mask, -1, a > b))


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_a_wrong_count_is_an_output_count_error_naming_the_element(scheduler):
    a = np.arange(12.0).reshape(3, 4)
    with pytest.raises(OutputCountError) as caught:
        chunkmap.run(pair_but_a_triple_at, a, scheduler=scheduler, outputs=("x", "twice"), progress=False)
    error = caught.value
    assert isinstance(error, ElementError) and isinstance(error, ValueError)
    assert error.coords == (1, 3) and error.inputs == (7.0,)
    message = str(error)
    assert "a tuple of 3 values (7.0, 7.0, 7.0)" in message
    assert "outputs=('x', 'twice') expects a sequence of 2" in message
    assert "at element (1, 3) called with inputs (7.0,)" in message
    assert pickle.loads(pickle.dumps(error)).args == error.args


@pytest.mark.parametrize("returned, described", [(1.5, "a float 1.5"), ("ab", "a str of 2 values 'ab'"),
                                                 (None, "a NoneType None")])
def test_a_value_that_is_not_a_sequence_is_an_output_count_error(returned, described):
    with pytest.raises(OutputCountError, match=f"func returned {described} where outputs=\\('out0', 'out1'\\)"):
        chunkmap.run(lambda x: returned, np.arange(3.0), scheduler="sync", outputs=2, progress=False)


def test_a_skipped_value_error_does_not_hide_a_wrong_count():
    """OutputCountError is a ValueError, but skip=ValueError only records exceptions func raised."""
    with pytest.raises(OutputCountError):
        chunkmap.run(pair_but_a_triple_at, np.arange(9.0), scheduler="sync", outputs=2, skip=ValueError,
                     progress=False)


def test_other_sequences_are_accepted():
    a = np.arange(4.0)
    result = chunkmap.run(lambda x: np.array([x, -x]), a, scheduler="sync", outputs=2, progress=False)
    np.testing.assert_array_equal(result.values["out1"], -a)


@pytest.mark.parametrize("outputs", [0, -1, True, "ab", ("a", "a"), ("a", "1b"), (), ("a", 2), 2.0])
def test_bad_outputs_options(outputs):
    with pytest.raises(OptionError, match="outputs must be a positive int or a tuple of distinct identifier names"):
        chunkmap.run(pair, np.ones(2), np.ones(2), scheduler="sync", outputs=outputs, progress=False)


def test_without_outputs_a_tuple_result_stays_an_object_array():
    result = chunkmap.run(pair, np.ones(2), np.ones(2), scheduler="sync", progress=False)
    assert result.outputs is None and result.values.dtype == object
    assert result.values.tolist() == [(1.0, 0.0), (1.0, 0.0)]


def test_nothing_computed_gives_empty_float64_outputs():
    a = np.ones((2, 3))
    result = chunkmap.run(pair, a, a, mask=np.ones_like(a, bool), scheduler="sync", outputs=("p", "q"),
                          progress=False)
    assert len(result) == 0 and [v.dtype for v in result.values.values()] == [np.float64, np.float64]
    p, q = result.to_dense()
    assert np.isnan(p).all() and np.isnan(q).all() and p.shape == a.shape


def test_repr_and_html_show_each_output_and_its_dtype():
    a, b, mask = inputs(6)
    result = chunkmap.run(complex_bool_label, a, b, mask=mask, skip=Boom, scheduler="sync",
                          outputs=("z", "bigger", "label"), progress=False)
    title = "chunkmap.Result shape=(20, 30) outputs=(z: complex128, bigger: bool, label: object)"
    assert repr(result).startswith(f"<{title}\n")
    assert f"computed {len(result):,}" in " ".join(repr(result).split())
    assert html.escape(title) in result._repr_html_()


def test_the_kernel_returns_one_structured_array_and_the_execution_pickles_its_outputs():
    evaluation = evaluate_columns(lambda x: (int(x), x / 2), [np.array([1.0, 2.0, 3.0])], outputs=("n", "half"))
    assert evaluation.values.dtype.names == ("n", "half")
    assert evaluation.values["n"].tolist() == [1, 2, 3] and evaluation.values["half"].tolist() == [0.5, 1.0, 1.5]
    execution = pickle.loads(pickle.dumps(Execution(pair, outputs=("p", "q"))))
    assert execution.outputs == ("p", "q")


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(scheduler, tmp_path):
    a, b, mask = inputs(7)
    options = dict(mask=mask, skip=Boom, chunks=40, scheduler=scheduler, outputs=("count", "total"))
    cancel = threading.Event()

    def stop_half_way(done, total, failed):
        if done >= total // 2:
            cancel.set()

    with pytest.raises(RunCancelledError):
        chunkmap.run(count_and_sum, a, b, checkpoint=tmp_path, progress=stop_half_way, cancel=cancel, **options)
    resumed = chunkmap.run(count_and_sum, a, b, checkpoint=tmp_path, progress=False, **options)
    plain = chunkmap.run(count_and_sum, a, b, progress=False, **options)
    assert 0 < resumed.stats.resumed < resumed.stats.computed + resumed.stats.failed
    np.testing.assert_array_equal(resumed.flat_index, plain.flat_index)
    for name in plain.outputs:
        assert_equal_values(resumed.values[name], plain.values[name])
    assert list(resumed.failures) == list(plain.failures)
    again = chunkmap.run(count_and_sum, a, b, checkpoint=tmp_path, progress=False, **options)
    assert again.stats.resumed == again.stats.computed + again.stats.failed
    for name in plain.outputs:
        assert_equal_values(again.values[name], plain.values[name])


def test_outputs_are_part_of_the_run_identity(tmp_path):
    a, b, _ = inputs(8)
    source = make_plan((a, b)).source
    identities = [run_identity(pair, source, (), None, None, "auto", outputs=outputs)
                  for outputs in (None, ("out0", "out1"), ("a", "b"))]
    assert len({identity.run_id for identity in identities}) == 3
    assert [identities[0].differences(other.parts) for other in identities[1:]] == [["options"], ["options"]]
    chunkmap.run(pair, a, b, checkpoint=tmp_path, scheduler="sync", outputs=2, progress=False)
    with pytest.warns(CheckpointWarning, match="holds 1 other run.*differs in: skip, timeout, chunks or outputs$"):
        named = chunkmap.run(pair, a, b, checkpoint=tmp_path, scheduler="sync", outputs=("a", "b"), progress=False)
    assert named.stats.resumed == 0 and named.outputs == ("a", "b")


def test_an_output_of_objects_cannot_be_checkpointed(tmp_path):
    with pytest.raises(OptionError, match="checkpoint= stores results as numeric arrays"):
        chunkmap.run(lambda x: (x, str(x)), np.arange(3.0), checkpoint=tmp_path, scheduler="sync", outputs=2,
                     progress=False)


def test_a_cluster_gives_the_same_outputs(local_cluster):
    a, b, mask = inputs(9)
    result = chunkmap.run(count_and_sum, a, b, mask=mask, skip=Boom, chunks=60, client=local_cluster,
                          outputs=("count", "total"), progress=False)
    coords, expected, failures = serial(count_and_sum, a, b, mask, 2)
    np.testing.assert_array_equal(result.flat_index, np.ravel_multi_index(coords, SHAPE))
    for name, want in zip(result.outputs, expected):
        assert_equal_values(result.values[name], want)
    assert [(f.coords, f.type, f.message) for f in result.failures] == failures
