"""Labelled results: to_xarray, to_pandas and failures_to_pandas against the serial loop's own tables."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import chunkmap
from chunkmap import errors
from chunkmap.labelled import STATUS, Labels, failures_to_pandas, status_codes, to_pandas, to_xarray
from chunkmap.result import Failures, Result

SENTINEL = -1e10


def seed_like(shape=(12, 15)):
    """Two float inputs, the first with sentinels on about a tenth of its elements."""
    rng = np.random.default_rng(14)
    a = rng.uniform(0, 1, shape)
    b = rng.uniform(0, 1, shape)
    a[rng.uniform(size=shape) < 0.1] = -1e11
    return a, b


def loop_tables(func, a, b, skip):
    """The serial loop: the computed elements' table, the failures' table, each element's status, a dense grid."""
    computed = {"dim_0": [], "dim_1": [], "values": []}
    failed = {"dim_0": [], "dim_1": [], "kind": [], "in0": [], "in1": [], "type": [], "message": []}
    states = np.empty(a.shape, dtype=object)
    dense = np.full(a.shape, np.nan)
    for (i, j), value in np.ndenumerate(a):
        if value <= SENTINEL:
            states[i, j] = "masked"
            continue
        try:
            out = func(value.item(), b[i, j].item())
        except skip as exc:
            for column, item in zip(failed.values(), (i, j, "exception", value.item(), b[i, j].item(),
                                                      type(exc).__name__, str(exc))):
                column.append(item)
            states[i, j] = "exception"
        else:
            for column, item in zip(computed.values(), (i, j, out)):
                column.append(item)
            states[i, j] = "computed"
            dense[i, j] = out
    return computed, failed, states, dense


@pytest.fixture(scope="module", params=["sync", "processes"])
def run(request):
    """A real run of the seed-like problem, and the serial loop's tables of the same inputs."""
    from elementwise import Boom, add_or_boom

    a, b = seed_like()
    result = chunkmap.run(add_or_boom, a, b, mask=a <= SENTINEL, skip=Boom, chunks=16, scheduler=request.param,
                          progress=False)
    return a, b, result, loop_tables(add_or_boom, a, b, Boom)


def with_labels(result, labels):
    """The result carrying ``labels``, as run() will set them for xarray inputs."""
    result.labels = labels
    return result


def grid():
    """An xarray input with dimension, non-dimension (2-D) and scalar coordinates, a name and attrs."""
    a, b = seed_like()
    lat, lon = np.linspace(-60, 60, a.shape[0]), np.arange(a.shape[1]) * 2.5
    return xr.DataArray(a, dims=("lat", "lon"), name="temperature", attrs={"units": "K"}, coords={
        "lat": ("lat", lat, {"units": "degrees_north"}), "lon": lon,
        "area": (("lat", "lon"), np.cos(np.deg2rad(lat))[:, None] * np.ones(a.shape[1])),
        "time": np.datetime64("2026-12-02")}), b


def test_to_pandas_equals_the_serial_loops_table(run):
    _, _, result, (computed, _, _, _) = run
    table = to_pandas(result)
    assert list(table.columns) == ["dim_0", "dim_1", "values"]
    assert [str(dtype) for dtype in table.dtypes] == ["int64", "int64", "float64"]
    assert table.to_dict("list") == computed
    assert list(table.index) == list(range(len(computed["values"])))


def test_failures_to_pandas_equals_the_serial_loops_failures(run):
    _, _, result, (_, failed, _, _) = run
    table = failures_to_pandas(result.failures)
    assert list(table.columns) == ["dim_0", "dim_1", "kind", "in0", "in1", "type", "message"]
    assert {column: table[column].tolist() for column in table.columns} == failed
    assert list(table["kind"].cat.categories) == ["exception", "crash", "timeout"]
    assert str(table["type"].dtype) == "category" and len(table) > 0


def test_to_xarray_is_nan_where_masked_or_failed_with_the_status_of_each_element(run):
    _, _, result, (_, _, states, dense) = run
    array = to_xarray(result, status=True)
    assert array.dims == ("dim_0", "dim_1") and array.name == "values" and array.dtype == np.float64
    np.testing.assert_array_equal(array.values, dense)
    status = array.coords["status"]
    assert status.dtype == np.int8
    assert status.attrs["flag_meanings"].split() == list(STATUS)
    np.testing.assert_array_equal(status.attrs["flag_values"], np.arange(len(STATUS)))
    names = np.array(STATUS, dtype=object)[status.values]
    np.testing.assert_array_equal(names, states)
    assert array.attrs["chunkmap_computed"] == result.stats.computed
    assert array.attrs["chunkmap_scheduler"] == result.stats.scheduler
    assert "status" not in to_xarray(result).coords


def test_to_xarray_gives_back_the_dims_coords_name_and_attrs_of_an_xarray_input():
    from elementwise import Boom, add_or_boom

    temperature, b = grid()
    result = chunkmap.run(add_or_boom, temperature.values, b, mask=temperature.values <= SENTINEL, skip=Boom,
                          scheduler="sync", progress=False)
    array = to_xarray(with_labels(result, Labels.of(temperature)))
    assert array.dims == temperature.dims and array.name == "temperature"
    assert array.attrs["units"] == "K"
    assert set(array.coords) == set(temperature.coords)
    for name, coord in temperature.coords.items():
        assert array.coords[name].dims == coord.dims
        np.testing.assert_array_equal(array.coords[name].values, coord.values)
    _, _, _, dense = loop_tables(add_or_boom, temperature.values, b, Boom)
    np.testing.assert_array_equal(array.values, dense)
    np.testing.assert_array_equal(array.sel(lat=temperature.lat[3]).values, dense[3])


def test_labels_of_a_dataarray_pickle_and_keep_only_its_own_coords():
    temperature, _ = grid()
    labels = pickle.loads(pickle.dumps(Labels.of(temperature)))
    assert labels.dims == ("lat", "lon") and labels.name == "temperature" and labels.attrs == {"units": "K"}
    assert {name: dims for name, (dims, _) in labels.coords.items()} == {
        "lat": ("lat",), "lon": ("lon",), "area": ("lat", "lon"), "time": ()}
    np.testing.assert_array_equal(labels.coords["lat"][1], temperature.lat.values)
    assert set(Labels.of(temperature.isel(lat=0)).coords) == {"lat", "lon", "area", "time"}
    assert Labels.of(temperature.isel(lat=0)).coords["lat"][0] == ()


def test_labelled_tables_are_named_after_the_dims():
    temperature, b = grid()
    result = with_labels(chunkmap.run(np.add, temperature.values, b, mask=temperature.values <= SENTINEL,
                                      scheduler="sync", progress=False), Labels.of(temperature))
    table = to_pandas(result)
    assert list(table.columns) == ["lat", "lon", "values"]
    assert list(failures_to_pandas(result.failures, ("lat", "lon")).columns) == [
        "lat", "lon", "kind", "type", "message"]


def test_int_values_become_float64_and_object_values_stay_objects_with_nan_as_to_dense_does():
    from elementwise import Boom, int_or_boom

    a = np.arange(12).reshape(3, 4)
    result = chunkmap.run(int_or_boom, a, skip=Boom, scheduler="sync", progress=False)
    assert result.values.dtype == np.int64
    array = to_xarray(result)
    expected = np.array([np.nan if x % 5 == 0 else float(x) for x in range(12)]).reshape(3, 4)
    assert array.dtype == np.float64
    np.testing.assert_array_equal(array.values, expected)
    assert to_pandas(result)["values"].dtype == np.int64

    words = chunkmap.run(str, a, mask=a % 2 == 1, scheduler="sync", progress=False)
    array = to_xarray(words)
    assert array.dtype == object
    assert array.isnull().values.tolist() == (a % 2 == 1).tolist()
    assert array.values[a % 2 == 0].tolist() == [str(x) for x in range(0, 12, 2)]
    assert pd.isna(array.values[a % 2 == 1]).all() and pd.isna(words.to_dense()[a % 2 == 1]).all()


def test_crashes_timeouts_and_new_failure_kinds_have_status_codes():
    failures = Failures((2, 3), [1, 2, 4], ["Crash", "Timeout", "OutputsError"], ["died", "slow", "3 values"],
                        ["crash", "timeout", "outputs"])
    result = Result((2, 3), (np.array([0, 1]), np.array([0, 2])), np.array([1.0, 2.0]), failures)
    codes, names = status_codes(result)
    assert names == (*STATUS, "outputs")
    assert [names[code] for code in codes.ravel()] == ["computed", "crash", "timeout", "masked", "outputs",
                                                       "computed"]
    assert to_xarray(result, status=True).coords["status"].attrs["flag_meanings"].endswith("timeout outputs")
    table = failures_to_pandas(failures)
    assert table["kind"].tolist() == ["crash", "timeout", "outputs"]
    assert list(table["kind"].cat.categories) == ["exception", "crash", "timeout", "outputs"]


def test_a_real_crash_is_a_crash_in_the_status_and_the_failures_table():
    from elementwise import cost_or_crash

    x = np.array([[1.0, 2.0, -1.0], [3.0, SENTINEL * 10, 4.0]])
    result = chunkmap.run(cost_or_crash, x, mask=x <= SENTINEL, scheduler="processes", progress=False)
    array = to_xarray(result, status=True)
    names = [STATUS[code] for code in array.coords["status"].values.ravel()]
    assert names == ["computed", "computed", "crash", "computed", "masked", "computed"]
    assert np.isnan(array.values[0, 2]) and np.isnan(array.values[1, 1])
    assert failures_to_pandas(result.failures)[["dim_0", "dim_1", "kind"]].values.tolist() == [[0, 2, "crash"]]


def two_output_result():
    """A Result of two outputs (a float and an int), a failure and a masked element."""
    shape, flat_index = (2, 3), np.array([0, 2, 3, 5])
    values = {"total": np.array([0.5, 1.5, 2.5, 3.5]), "larger": np.array([1, 0, 1, 1])}
    return Result(shape, np.unravel_index(flat_index, shape), values, Failures(shape, [4], ["Boom"], ["bad"]))


def total_larger_text(a, b):
    """Three outputs of mixed types: a float, an int and a str; KeyError on a tenth of the elements."""
    if a > 0.9:
        raise KeyError(f"too large: {a}")
    return a + b, int(a > b), f"{a:.2f}"


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_a_run_with_three_outputs_gives_a_dataset_and_a_table_equal_to_the_serial_loop(scheduler):
    a, b = seed_like()
    result = chunkmap.run(total_larger_text, a, b, mask=a <= SENTINEL, skip=KeyError,
                          outputs=("total", "larger", "text"), chunks=16, scheduler=scheduler, progress=False)
    table = {"dim_0": [], "dim_1": [], "total": [], "larger": [], "text": []}
    dense = {name: np.full(a.shape, np.nan, dtype) for name, dtype in (("total", float), ("larger", float),
                                                                       ("text", object))}
    states = np.full(a.shape, "masked", dtype=object)
    for (i, j), x in np.ndenumerate(a):
        if x <= SENTINEL:
            continue
        try:
            outs = total_larger_text(x.item(), b[i, j].item())
        except KeyError:
            states[i, j] = "exception"
            continue
        states[i, j] = "computed"
        for name, item in zip(table, (i, j, *outs)):
            table[name].append(item)
        for name, item in zip(dense, outs):
            dense[name][i, j] = item
    got = to_pandas(result)
    assert got.to_dict("list") == table
    assert [str(dtype) for dtype in got.dtypes[:4]] == ["int64", "int64", "float64", "int64"]
    dataset = to_xarray(result, status=True)
    assert list(dataset.data_vars) == ["total", "larger", "text"]
    for name, expected in dense.items():
        assert dataset[name].dtype == expected.dtype
        assert dataset[name].isnull().values.tolist() == (states != "computed").tolist()
        computed = states == "computed"
        assert dataset[name].values[computed].tolist() == expected[computed].tolist()
    np.testing.assert_array_equal(np.array(STATUS, dtype=object)[dataset["status"].values], states)


def test_several_outputs_give_a_dataset_and_a_column_each():
    result = two_output_result()
    dataset = to_xarray(result, status=True)
    assert isinstance(dataset, xr.Dataset) and list(dataset.data_vars) == ["total", "larger"]
    np.testing.assert_array_equal(dataset["total"].values, [[0.5, np.nan, 1.5], [2.5, np.nan, 3.5]])
    np.testing.assert_array_equal(dataset["larger"].values, [[1, np.nan, 0], [1, np.nan, 1]])
    assert [STATUS[code] for code in dataset["status"].values.ravel()] == [
        "computed", "masked", "computed", "computed", "exception", "computed"]
    table = to_pandas(result)
    assert list(table.columns) == ["dim_0", "dim_1", "total", "larger"]
    assert table.to_dict("list") == {"dim_0": [0, 0, 1, 1], "dim_1": [0, 2, 0, 2], "total": [0.5, 1.5, 2.5, 3.5],
                                     "larger": [1, 0, 1, 1]}
    assert table["larger"].dtype == np.int64


def test_outputs_named_like_a_dimension_are_refused():
    result = with_labels(two_output_result(), Labels(("total", "y")))
    with pytest.raises(errors.OptionError, match=r"outputs named \['total'\].*rename the outputs"):
        to_xarray(result)
    with pytest.raises(errors.OptionError, match=r"outputs named \['total'\]"):
        to_pandas(result)


def test_labels_must_have_one_dim_per_axis():
    result = with_labels(two_output_result(), Labels(("x",)))
    with pytest.raises(errors.ShapeError, match=r"labels have dims \('x',\) but its shape is \(2, 3\)"):
        to_xarray(result)


def test_no_failures_give_an_empty_table_with_every_column():
    table = failures_to_pandas(Failures((2, 3), [], [], []))
    assert list(table.columns) == ["dim_0", "dim_1", "kind", "type", "message"] and len(table) == 0


@pytest.mark.parametrize("module, convert, extra", [
    ("xarray", lambda result: to_xarray(result), "chunkmap[xarray]"),
    ("pandas", lambda result: to_pandas(result), "chunkmap[pandas]"),
    ("pandas", lambda result: failures_to_pandas(result.failures), "chunkmap[pandas]"),
], ids=["to_xarray", "to_pandas", "failures_to_pandas"])
def test_a_missing_library_names_the_extra_to_install(monkeypatch, module, convert, extra):
    monkeypatch.setitem(sys.modules, module, None)
    message = rf"needs {module}.*pip install {re.escape(extra)}"
    with pytest.raises(errors.MissingDependencyError, match=message) as caught:
        convert(two_output_result())
    assert isinstance(caught.value, ImportError) and caught.value.name == module


def test_importing_the_module_imports_neither_xarray_nor_pandas():
    code = ("import sys, chunkmap.labelled; "
            "print(sorted({name.partition('.')[0] for name in sys.modules} & {'xarray', 'pandas', 'dask', 'zarr'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_result_and_its_failures_convert_themselves(run):
    _, _, result, (computed, failed, _, dense) = run
    assert result.to_pandas().to_dict("list") == computed
    table = result.failures.to_pandas()
    assert {column: table[column].tolist() for column in table.columns} == failed
    array = result.to_xarray(status=True)
    np.testing.assert_array_equal(array.values, dense)
    assert "status" in array.coords and "status" not in result.to_xarray().coords
