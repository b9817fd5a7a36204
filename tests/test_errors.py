"""Every bad input to run() raises the documented error, saying what it got and what it expected."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest

import chunkmap
from chunkmap import errors
from chunkmap.testing import free_port


def ok(*args):
    return 0


@pytest.mark.parametrize(
    "arrays, error, message",
    [
        ((np.zeros((3, 4)), np.zeros(5)), errors.ShapeError, r"\(3, 4\), \(5,\) do not broadcast"),
        ((np.zeros((2, 3)), np.zeros((3, 2))), errors.ShapeError, "expected equal shapes"),
        ((np.array(["a", "b"]),), errors.DtypeError, r"input 1 has dtype <U1"),
        ((np.zeros(2), np.array([None, 1], dtype=object)), errors.DtypeError, "input 2 has dtype object"),
        ((np.array(["2020-01-01"], dtype="datetime64[D]"),), errors.DtypeError, "datetime64"),
        (([[1, 2], [3]],), errors.InputError, "input 1 cannot be made into a numpy array"),
        ((), errors.InputError, "needs at least one input array"),
    ],
    ids=["shapes", "transposed", "str", "object", "datetime", "ragged", "none"],
)
def test_bad_arrays(arrays, error, message):
    with pytest.raises(error, match=message):
        chunkmap.run(ok, *arrays, scheduler="sync")


def test_input_errors_are_value_errors_and_dtype_errors_type_errors():
    with pytest.raises(ValueError):
        chunkmap.run(ok, np.zeros(3), np.zeros(4), scheduler="sync")
    with pytest.raises(TypeError):
        chunkmap.run(ok, np.array(["x"]), scheduler="sync")


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((3, 5), bool), r"mask has shape \(3, 5\); expected the inputs' shape \(3, 4\)"),
        (np.zeros((2, 3, 4), bool), r"mask has shape \(2, 3, 4\)"),
        (np.zeros((3, 4)), "mask has dtype float64; expected a boolean array"),
        (np.zeros((3, 4), int), "mask has dtype int64"),
        (lambda a: a * 2.0, r"returned an array of dtype float64 and shape \(12,\); expected a boolean"),
        (lambda a: np.zeros(5, bool), r"shape \(5,\); expected a boolean array of shape \(12,\)"),
    ],
    ids=["shape", "ndim", "float", "int", "callable-dtype", "callable-shape"],
)
def test_bad_masks(mask, message):
    with pytest.raises(errors.MaskError, match=message):
        chunkmap.run(ok, np.zeros((3, 4)), mask=mask, scheduler="sync")


def test_masked_array_mask_must_broadcast():
    bad = np.ma.masked_array(np.zeros((1, 4)), mask=[[True, False, False, False]])
    result = chunkmap.run(ok, bad, np.zeros((3, 4)), scheduler="sync")
    assert result.stats.masked == 3  # broadcasts along the first axis


@pytest.mark.parametrize("func", [None, 3, "slow_computation", np.zeros(3)])
def test_func_must_be_callable(func):
    with pytest.raises(errors.NotCallableError, match=f"func must be callable; got {type(func).__name__}"):
        chunkmap.run(func, np.zeros(3), scheduler="sync")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"chunks": 0}, "chunks must be 'auto' or a positive int"),
        ({"chunks": -5}, "got -5"),
        ({"chunks": "big"}, "got 'big'"),
        ({"chunks": True}, "got True"),
        ({"chunks": 2.5}, "got 2.5"),
        ({"skip": "ValueError"}, "skip must be an exception class or a tuple of them"),
        ({"skip": (ValueError, 3)}, "got .* with 3 of type int"),
        ({"skip": int}, "of type type"),
        ({"kwargs": [1, 2]}, "kwargs must be a mapping"),
        ({"kwargs": {1: 2}}, "kwargs must be a mapping of argument names"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(errors.OptionError, match=message):
        chunkmap.run(ok, np.zeros(3), scheduler="sync", **options)


@pytest.mark.parametrize("scheduler", ["gpu", "thread", 42, object()])
def test_unknown_scheduler(scheduler):
    with pytest.raises(errors.SchedulerError, match="unknown scheduler .* passed as scheduler=; expected one of 'sync', 'threads'"):
        chunkmap.run(ok, np.zeros(3), scheduler=scheduler)


def test_distributed_without_a_client():
    with pytest.raises(errors.SchedulerError, match="current distributed.Client, and there is none"):
        chunkmap.run(ok, np.zeros(3), scheduler="distributed")


def test_client_must_be_a_client():
    with pytest.raises(errors.SchedulerError, match="client must be a distributed.Client; got str"):
        chunkmap.run(ok, np.zeros(3), client="tcp://127.0.0.1:1")


@pytest.mark.parametrize("form", ["tcp://127.0.0.1:{}", "127.0.0.1:{}"])
def test_unreachable_scheduler_address(form):
    address = form.format(free_port())
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(errors.SchedulerUnreachableError, match=f"no dask scheduler answered at '{address}' within 1s"):
            chunkmap.run(ok, np.zeros(3), scheduler=address)


def test_element_error_pickles_with_its_details():
    error = errors.ElementError((1, 2), (0.5, -3), "InternalError", "out of domain")
    back = pickle.loads(pickle.dumps(error))
    assert (back.coords, back.inputs, back.exception_type, back.exception_message) == (
        (1, 2), (0.5, -3), "InternalError", "out of domain")
    assert str(back) == str(error)
    assert "skip=InternalError" in str(error)


def test_every_error_is_a_chunkmap_error_and_every_warning_a_chunkmap_warning():
    for name in errors.__all__:
        cls = getattr(errors, name)
        if issubclass(cls, Warning):
            assert issubclass(cls, errors.ChunkmapWarning)
        else:
            assert issubclass(cls, errors.ChunkmapError)
        assert name in errors.__doc__
