"""The test kit itself: the serial reference against hand-written answers, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from chunkmap.result import Failures, Result, Stats
from chunkmap.testing import assert_matches_reference, serial_reference, values_array


class Odd(Exception):
    pass


def halve_even(x):
    if x % 2:
        raise Odd(f"{x} is odd")
    return x // 2


def test_coordinates_values_and_failures_in_c_order():
    reference = serial_reference(halve_even, [[4, 3, 8], [1, 0, 6]], mask=[[False, False, True], [False, False, False]],
                                 skip=Odd)
    assert reference.shape == (2, 3)
    assert [axis.tolist() for axis in reference.coords] == [[0, 1, 1], [0, 1, 2]]
    assert all(axis.dtype == np.int64 for axis in reference.coords)
    assert reference.values.dtype == np.int64 and reference.values.tolist() == [2, 0, 3]
    assert reference.failures == [((0, 1), "Odd", "3 is odd"), ((1, 0), "Odd", "1 is odd")]
    assert reference.masked == 1


def test_inputs_broadcast_and_masked_arrays_mask():
    row = np.ma.masked_array([10.0, 20.0, 30.0], mask=[False, True, False])
    column = [[1.0], [2.0]]
    reference = serial_reference(lambda a, b: a + b, row, column)
    assert [axis.tolist() for axis in reference.coords] == [[0, 0, 1, 1], [0, 2, 0, 2]]
    assert reference.values.tolist() == [11.0, 31.0, 12.0, 32.0] and reference.masked == 2


def test_a_callable_mask_sees_the_flattened_broadcast_inputs():
    seen = []

    def mask(a, b):
        seen.append((a.tolist(), b.tolist()))
        return a > b

    reference = serial_reference(lambda a, b: a - b, [[1, 5], [3, 2]], [2, 2], mask=mask)
    assert seen == [([1, 5, 3, 2], [2, 2, 2, 2])]
    assert [axis.tolist() for axis in reference.coords] == [[0, 1], [0, 1]]
    assert reference.values.tolist() == [-1, 0]


def test_the_function_gets_python_scalars_and_the_keyword_arguments():
    calls = []

    def record(*args, scale):
        calls.append(tuple(type(arg) for arg in args))
        return args[0] * scale

    inputs = (np.array([True]), np.array([3], np.uint16), np.array([1.5], np.float32), np.array([1j], np.complex64))
    reference = serial_reference(record, *inputs, kwargs={"scale": 2})
    assert calls == [(bool, int, float, complex)]
    assert reference.values.tolist() == [2]


def test_zero_dimensions_and_nothing_computed():
    assert serial_reference(abs, -3).coords == () and serial_reference(abs, -3).values.tolist() == [3]
    nothing = serial_reference(abs, [1, 2], mask=True)
    assert nothing.values.dtype == np.float64 and len(nothing.values) == 0 and nothing.masked == 2
    assert [axis.tolist() for axis in nothing.coords] == [[]]


def test_an_exception_not_skipped_propagates():
    with pytest.raises(Odd, match="3 is odd"):
        serial_reference(halve_even, [2, 3], skip=KeyError)


@pytest.mark.parametrize(("results", "dtype"), [
    ([True, False], np.bool_),
    ([1, -2], np.int64),
    ([True, 2], np.int64),
    ([1, 2.5], np.float64),
    ([np.float64(0.5), 1], np.float64),  # a float subclass is a float
    ([1, 2.0, 3j], np.complex128),
    ([], np.float64),
    (["a", "b"], object),
    ([1, None], object),
    ([np.int32(1)], object),  # numpy scalars other than float64/complex128 are objects
    ([1, 2**63], object),  # beyond int64
])
def test_the_documented_dtype_rule(results, dtype):
    values = values_array(results)
    assert values.dtype == dtype and values.tolist() == list(results)


def test_tuples_stay_whole_in_an_object_array():
    values = values_array([(1, 2), (3, 4)])
    assert values.shape == (2,) and values[1] == (3, 4)


def made_result(values, failures=((1, "Odd", "1 is odd"),), computed=None):
    """A Result by hand, for halve_even over [4, 1, 6]."""
    values = np.asarray(values)
    flat = [0, 2][: len(values)]
    stats = Stats(3, 0, len(values) if computed is None else computed, len(failures), 0.0, 0.0)
    return Result((3,), (np.array(flat),), values, Failures((3,), [f[0] for f in failures], [f[1] for f in failures],
                                                            [f[2] for f in failures]), stats)


def test_assert_matches_reference_accepts_the_right_result():
    assert_matches_reference(made_result(np.array([2, 3], np.int64)), halve_even, [4, 1, 6], skip=Odd)


@pytest.mark.parametrize("wrong", [
    made_result(np.array([2, 4], np.int64)),  # a value
    made_result(np.array([2.0, 3.0])),  # the dtype
    made_result(np.array([2], np.int64)),  # an element missing
    made_result(np.array([2, 3], np.int64), failures=((1, "Odd", "odd"),)),  # a message
    made_result(np.array([2, 3], np.int64), computed=3),  # the counts
])
def test_assert_matches_reference_refuses_a_wrong_result(wrong):
    with pytest.raises(AssertionError):
        assert_matches_reference(wrong, halve_even, [4, 1, 6], skip=Odd)


def test_importing_the_kit_imports_neither_pytest_nor_redis_nor_dask():
    code = "import sys, chunkmap.testing; print(sorted({m.partition('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for heavy in ("pytest", "redis", "dask", "distributed"):
        assert f"'{heavy}'" not in loaded
