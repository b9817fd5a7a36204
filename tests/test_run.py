"""chunkmap.run against the plain serial loop, on every local scheduler."""

from __future__ import annotations

import numpy as np
import pytest

import chunkmap
from chunkmap.cli.demo import make_inputs as seed_inputs
from chunkmap.stub import slowlib

LOCAL = ["sync", "threads", "processes"]
SENTINEL = -1e10


@pytest.mark.parametrize("scheduler", LOCAL)
def test_seed_problem_matches_serial_loop(ew, scheduler):
    a1, a2 = seed_inputs((60, 70))
    mask = a1 <= SENTINEL
    result = chunkmap.run(
        ew.add_or_boom, a2, a1, mask=mask, skip=ew.Boom, chunks=500, scheduler=scheduler
    )
    ew.assert_matches_reference(result, ew.add_or_boom, [a2, a1], mask=mask, skip=ew.Boom)
    assert 0 < len(result.failures) < result.stats.computed
    xs, ys, values = result
    assert xs.dtype == ys.dtype == np.int64 or xs.dtype == np.intp
    assert values.dtype == np.float64


@pytest.mark.parametrize("scheduler", LOCAL)
def test_swig_stub_matches_serial_loop(ew, scheduler):
    a1, a2 = seed_inputs((40, 50), seed=1)
    mask = a1 <= SENTINEL
    result = chunkmap.run(
        slowlib.slow_computation, a2, a1, mask=mask, skip=slowlib.InternalError, scheduler=scheduler
    )
    ew.assert_matches_reference(
        result, slowlib.slow_computation, [a2, a1], mask=mask, skip=slowlib.InternalError
    )
    assert set(result.failures.types) == {"InternalError"}
    assert result.values.dtype == np.int64


@pytest.mark.parametrize("scheduler", LOCAL)
@pytest.mark.parametrize("shape", [(37,), (6, 7, 8)], ids=["1d", "3d"])
def test_any_number_of_dimensions(ew, scheduler, shape):
    a1, a2 = seed_inputs(shape, seed=len(shape))
    result = chunkmap.run(
        ew.add_or_boom, a1, a2, mask=a1 <= SENTINEL, skip=ew.Boom, chunks=13, scheduler=scheduler
    )
    ew.assert_matches_reference(result, ew.add_or_boom, [a1, a2], mask=a1 <= SENTINEL, skip=ew.Boom)
    assert len(tuple(result)) == len(shape) + 1


@pytest.mark.parametrize("scheduler", LOCAL)
def test_broadcasting_and_masked_arrays(ew, scheduler):
    rng = np.random.default_rng(5)
    a = np.ma.masked_array(rng.integers(0, 50, (4, 1, 6)), mask=rng.random((4, 1, 6)) < 0.2)
    b = rng.integers(0, 50, (3, 6))  # broadcasts to (4, 3, 6)
    c = 7
    mask = rng.random((3, 1)) < 0.3  # broadcasts too
    result = chunkmap.run(ew.int_or_boom, a, b, c, mask=mask, skip=ew.Boom, chunks=5, scheduler=scheduler)
    ew.assert_matches_reference(result, ew.int_or_boom, [a, b, c], mask=mask, skip=ew.Boom)
    assert result.shape == (4, 3, 6)
    assert result.stats.masked > 0


@pytest.mark.parametrize("scheduler", LOCAL)
def test_mask_callable_sees_flat_input_slices(ew, scheduler):
    a1, a2 = seed_inputs((30, 40), seed=3)
    seen = []

    def sentinel(x, y):
        seen.append((x.ndim, len(x), len(y)))
        return x <= SENTINEL

    result = chunkmap.run(ew.add_or_boom, a1, a2, mask=sentinel, skip=ew.Boom, scheduler=scheduler)
    ew.assert_matches_reference(result, ew.add_or_boom, [a1, a2], mask=a1 <= SENTINEL, skip=ew.Boom)
    assert seen == [(1, 1200, 1200)]


def test_lists_are_accepted_like_numpy(ew):
    result = chunkmap.run(ew.int_or_boom, [[1, 2, 3], [4, 5, 6]], [10, 20, 30], skip=ew.Boom, scheduler="sync")
    ew.assert_matches_reference(result, ew.int_or_boom, [[[1, 2, 3], [4, 5, 6]], [10, 20, 30]], skip=ew.Boom)


def test_kwargs_reach_every_call(ew):
    a1, a2 = seed_inputs((10, 10), seed=4)
    kwargs = {"scale": 3.0, "offset": -1.0}
    result = chunkmap.run(ew.scaled, a1, a2, kwargs=kwargs, scheduler="threads")
    ew.assert_matches_reference(result, ew.scaled, [a1, a2], kwargs=kwargs)


@pytest.mark.parametrize("scheduler", LOCAL)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 2)])
def test_empty_inputs_give_an_empty_result(ew, scheduler, shape):
    result = chunkmap.run(ew.add_or_boom, np.zeros(shape), np.zeros(shape), scheduler=scheduler)
    assert result.shape == shape
    assert [len(axis) for axis in result.coords] == [0] * len(shape)
    assert result.values.shape == (0,) and result.values.dtype == np.float64
    assert len(result.failures) == 0
    assert (result.stats.elements, result.stats.computed, result.stats.failed) == (0, 0, 0)
    assert result.to_dense().shape == shape


@pytest.mark.parametrize("scheduler", LOCAL)
def test_all_masked_gives_an_empty_result(ew, scheduler):
    a = np.full((5, 6), -1e12)
    result = chunkmap.run(ew.always_boom, a, a, mask=a <= SENTINEL, scheduler=scheduler)
    assert len(result.values) == 0 and len(result.failures) == 0
    assert result.stats.masked == result.stats.elements == 30
    assert np.isnan(result.to_dense()).all()


@pytest.mark.parametrize("scheduler", LOCAL)
def test_every_element_raising_is_recorded(ew, scheduler):
    a = np.arange(24.0).reshape(4, 6)
    result = chunkmap.run(ew.always_boom, a, skip=ew.Boom, chunks=5, scheduler=scheduler)
    ew.assert_matches_reference(result, ew.always_boom, [a], skip=ew.Boom)
    assert len(result.failures) == 24 and len(result.values) == 0
    assert result.failures[23] == chunkmap.Failure((3, 5), "exception", "Boom", "always")


@pytest.mark.parametrize("chunks", [1, 2, 7, 64, 10_000, "auto"])
def test_chunk_size_does_not_change_the_result(ew, chunks):
    a1, a2 = seed_inputs((9, 11), seed=6)
    result = chunkmap.run(ew.add_or_boom, a1, a2, mask=a1 <= SENTINEL, skip=ew.Boom, chunks=chunks, scheduler="threads")
    ew.assert_matches_reference(result, ew.add_or_boom, [a1, a2], mask=a1 <= SENTINEL, skip=ew.Boom)


def test_schedulers_agree_exactly(ew):
    a1, a2 = seed_inputs((25, 25), seed=8)
    results = [
        chunkmap.run(ew.add_or_boom, a1, a2, mask=a1 <= SENTINEL, skip=ew.Boom, chunks=40, scheduler=s)
        for s in LOCAL
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.flat_index, results[0].flat_index)
        np.testing.assert_array_equal(other.values, results[0].values)
        np.testing.assert_array_equal(other.failures.flat_index, results[0].failures.flat_index)


@pytest.mark.parametrize(
    "func, expected",
    [
        (lambda x: int(x), np.int64),
        (lambda x: float(x), np.float64),
        (lambda x: x > 2, np.bool_),
        (lambda x: complex(x, 1), np.complex128),
        (lambda x: x if x % 2 else float(x), np.float64),
        (lambda x: str(x), object),
        (lambda x: None if x == 3 else x, object),
        (lambda x: 2**70 + x, object),
    ],
    ids=["int", "float", "bool", "complex", "int+float", "str", "None", "bigint"],
)
def test_values_dtype_follows_what_func_returns(func, expected):
    x = np.arange(6)
    result = chunkmap.run(func, x, chunks=2, scheduler="sync")
    assert result.values.dtype == np.dtype(expected)
    assert result.values.tolist() == [func(v) for v in range(6)]


def test_func_receives_python_scalars():
    kinds = []
    inputs = [np.array([True]), np.array([3], np.int16), np.array([5], np.uint8),
              np.array([0.5], np.float32), np.array([1 + 2j])]
    chunkmap.run(lambda *args: kinds.append(tuple(type(a) for a in args)), *inputs, scheduler="sync")
    assert kinds == [(bool, int, int, float, complex)]


def test_result_dense_and_masked_views():
    x = np.arange(12).reshape(3, 4)
    result = chunkmap.run(lambda v: v * 10, x, mask=x % 3 == 0, scheduler="sync")
    dense = result.to_dense()
    assert dense.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(dense), x % 3 == 0)
    np.testing.assert_array_equal(dense[x % 3 != 0], (x * 10)[x % 3 != 0])
    keep_int = result.to_dense(-1)
    assert keep_int.dtype == np.int64 and keep_int[0, 0] == -1 and keep_int[2, 3] == 110
    masked = result.to_masked()
    np.testing.assert_array_equal(masked.mask, x % 3 == 0)
    np.testing.assert_array_equal(masked.compressed(), (x * 10)[x % 3 != 0])


def test_stats_add_up(ew):
    a1, a2 = seed_inputs((20, 30), seed=9)
    stats = chunkmap.run(ew.add_or_boom, a1, a2, mask=a1 <= SENTINEL, skip=ew.Boom, scheduler="threads").stats
    assert stats.elements == 600
    assert stats.masked == int((a1 <= SENTINEL).sum())
    assert stats.masked + stats.computed + stats.failed == stats.elements
    assert stats.wall_time > 0 and stats.rate == pytest.approx((stats.computed + stats.failed) / stats.wall_time)
    assert "600 elements" in stats.summary()


@pytest.mark.parametrize("scheduler", LOCAL)
def test_unlisted_exception_names_the_element(ew, scheduler):
    x = np.arange(12).reshape(3, 4)
    with pytest.raises(chunkmap.ElementError) as info:
        chunkmap.run(ew.key_error_at_three, x, chunks=2, scheduler=scheduler)
    error = info.value
    assert error.coords == (0, 3) and error.inputs == (3,) and error.exception_type == "KeyError"
    assert "(0, 3)" in str(error) and "(3,)" in str(error) and "KeyError" in str(error)
    assert isinstance(error, RuntimeError)
    if scheduler != "processes":
        assert isinstance(error.__cause__, KeyError)


def test_only_the_listed_exceptions_are_skipped(ew):
    with pytest.raises(chunkmap.ElementError, match="Boom"):
        chunkmap.run(ew.add_or_boom, np.linspace(0, 1, 50), 1.0, skip=(KeyError, ValueError), scheduler="sync")


def test_unpacking_matches_the_seed_for_2d(ew):
    a1, a2 = seed_inputs((8, 9), seed=10)
    xs, ys, idxs = chunkmap.run(slowlib.slow_computation, a2, a1, mask=a1 <= SENTINEL,
                                skip=slowlib.InternalError, scheduler="sync")
    for x, y, idx in zip(xs, ys, idxs):
        assert idx == slowlib.slow_computation(float(a2[x, y]), float(a1[x, y]))


def test_scalar_inputs_are_a_zero_dimensional_run(ew):
    result = chunkmap.run(ew.int_or_boom, 3, np.int64(4), scheduler="sync")
    (values,) = result
    assert result.shape == () and values.tolist() == [7] and result.to_dense() == 7.0
