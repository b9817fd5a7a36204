"""Scalar functions and the serial reference loop the tests check chunkmap against.

conftest.py registers this module for pickling by value, so worker processes (spawned pools,
real `dask worker` processes) receive these functions without importing the test tree.
"""

from __future__ import annotations

import math

import numpy as np


class Boom(Exception):
    """The exception the test functions raise on their 'bad' inputs."""


def add_or_boom(a, b):
    """a + b, raising Boom for about one element in eleven (a deterministic rule)."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        raise TypeError(f"expected Python scalars, got {type(a).__name__}, {type(b).__name__}")
    if math.floor(a * 1000) % 11 == 0:
        raise Boom(f"bad input {a!r}")
    return a + b


def int_or_boom(*args):
    """Sum of integer inputs, raising Boom when it is a multiple of 5."""
    total = sum(args)
    if total % 5 == 0:
        raise Boom(f"multiple of five: {total}")
    return total


def always_boom(*args):
    raise Boom("always")


def scaled(a, b, scale=1.0, offset=0.0):
    return a * scale + b + offset


def key_error_at_three(a):
    if a == 3:
        raise KeyError("three")
    return a


def serial_reference(func, arrays, mask=None, skip=(), kwargs=None):
    """The plain serial loop of the seed's build_indexes, for any number of dimensions.

    Returns (coords per axis, values, failures as a list of (coords, type name, message)).
    """
    arrays = [np.ma.asarray(array) for array in arrays]
    data = np.broadcast_arrays(*(np.ma.getdata(array) for array in arrays))
    shape = data[0].shape
    masked = np.zeros(shape, dtype=bool)
    for array in arrays:
        masked |= np.broadcast_to(np.ma.getmaskarray(array), shape)
    if mask is not None:
        masked |= np.broadcast_to(np.asarray(mask), shape)
    coords, values, failures = [], [], []
    for index in np.ndindex(shape):
        if masked[index]:
            continue
        args = [array[index].item() for array in data]
        try:
            value = func(*args, **(kwargs or {}))
        except skip as exc:
            failures.append((index, type(exc).__name__, str(exc)))
        else:
            coords.append(index)
            values.append(value)
    axes = tuple(np.array([c[axis] for c in coords], dtype=np.int64) for axis in range(len(shape)))
    return axes, values, failures


def assert_matches_reference(result, func, arrays, mask=None, skip=(), kwargs=None):
    """Assert that a chunkmap Result equals the serial reference loop, element for element."""
    coords, values, failures = serial_reference(func, arrays, mask, skip, kwargs)
    assert len(result.coords) == len(coords)
    for got, expected in zip(result.coords, coords):
        np.testing.assert_array_equal(got, expected)
    assert result.values.tolist() == values
    got_failures = [(f.coords, f.type, f.message) for f in result.failures]
    assert got_failures == failures
    assert all(f.kind == "exception" for f in result.failures)
    assert result.stats.computed == len(values)
    assert result.stats.failed == len(failures)


def exit_in_worker(code):
    """Unpickled in a chunkmap worker process, exit at once; anywhere else, become ``abs``."""
    import os
    import sys

    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if getattr(spec, "name", "") == "chunkmap.worker":
        os._exit(code)
    return abs


class ExitsInWorker:
    """A callable that cannot be unpickled in a worker process: the worker exits with code 3."""

    def __call__(self, x):
        return abs(x)

    def __reduce__(self):
        return (exit_in_worker, (3,))
