"""``run(..., output="results.zarr")``: tasks write their boxes into a zarr store; kill, rerun, reopen.

Every store is read back independently (zarr and xarray, not chunkmap) and compared with the
serial loop; a run SIGKILLed mid-way and rerun resumes and ends equal to it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import chunkmap
from chunkmap.errors import OutputStoreError
from chunkmap.labelled import STATUS
from chunkmap.testing import serial_reference


def root_plus(x, y):
    if x < 0:
        raise ValueError(f"negative {x:.3f}")
    return math.sqrt(x) + y


def price_and_vega(x, y):
    return x * y, x > y


@pytest.fixture(scope="module")
def grid():
    rng = np.random.default_rng(11)
    return rng.normal(size=(41, 33)), rng.normal(size=(33,))


def expected_store(func, a, b, mask):
    """The serial loop's result, and the dense values and status codes it implies."""
    reference = serial_reference(func, a, b, mask=mask, skip=ValueError)
    return reference, *dense_store(reference)


def dense_store(reference):
    """The dense values and status codes of a store holding ``reference`` (the serial loop's result)."""
    values = np.full(reference.shape, np.nan)
    values[reference.coords] = reference.values
    status = np.full(reference.shape, STATUS.index("masked"), np.int8)
    status[reference.coords] = STATUS.index("computed")
    for coords, _, _ in reference.failures:
        status[coords] = STATUS.index("exception")
    return values, status


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_the_store_holds_exactly_the_serial_result(grid, tmp_path, scheduler):
    a, b = grid
    mask = a > 1.5
    result = chunkmap.run(root_plus, da.from_array(a, chunks=(8, 11)), b, mask=mask, skip=ValueError,
                          scheduler=scheduler, progress=False, output=tmp_path / "out.zarr")
    reference, values, status = expected_store(root_plus, a, b, mask)
    group = zarr.open_group(tmp_path / "out.zarr", mode="r")
    np.testing.assert_array_equal(group["values"][...], values)
    np.testing.assert_array_equal(group["status"][...], status)
    ds = xr.open_zarr(tmp_path / "out.zarr", consolidated=False)
    np.testing.assert_array_equal(ds["values"].values, values)
    # the result reads the store on demand, as the in-memory result would hold it
    assert (result.stats.computed, result.stats.failed, result.stats.masked) == (
        len(reference.values), len(reference.failures), reference.masked)
    assert "computed" in repr(result) and "values" not in vars(result)  # shown from its counts, nothing read
    np.testing.assert_array_equal(result.values, reference.values)
    for got, want in zip(result.coords, reference.coords):
        np.testing.assert_array_equal(got, want)
    assert [(f.coords, f.type, f.message) for f in result.failures] == reference.failures
    assert [f.inputs for f in result.failures] == [(a[coords], b[coords[1]]) for coords, _, _ in reference.failures]
    np.testing.assert_array_equal(result.to_dense(), values)
    np.testing.assert_array_equal(result.to_xarray(status=True).status.values, status)


def test_numpy_inputs_and_several_outputs(grid, tmp_path):
    a, b = grid
    result = chunkmap.run(price_and_vega, a, b, outputs=("price", "vega"), scheduler="threads", progress=False,
                          output=tmp_path / "two.zarr", chunks=200)
    group = zarr.open_group(tmp_path / "two.zarr", mode="r")
    np.testing.assert_allclose(group["price"][...], a * b)
    np.testing.assert_array_equal(group["vega"][...], (a > b).astype(float))
    assert sorted(result.to_xarray().data_vars) == ["price", "vega"]
    assert group["price"].chunks[0] * group["price"].chunks[1] <= 400  # chunked as the work


def test_xarray_inputs_keep_their_dims_and_coords_in_the_store(grid, tmp_path):
    a, b = grid
    field = xr.DataArray(a, dims=("lat", "lon"), coords={"lon": np.arange(33) * 10.0}).chunk({"lat": 10})
    chunkmap.run(root_plus, field, xr.DataArray(b, dims=("lon",)), skip=ValueError, scheduler="sync",
                 progress=False, output=tmp_path / "xr.zarr")
    ds = xr.open_zarr(tmp_path / "xr.zarr", consolidated=False)
    assert ds["values"].dims == ("lat", "lon")
    np.testing.assert_array_equal(ds["lon"].values, np.arange(33) * 10.0)


def test_another_call_or_foreign_data_is_refused_and_left_as_it_is(grid, tmp_path):
    a, b = grid
    chunkmap.run(root_plus, a, b, skip=ValueError, scheduler="sync", progress=False, output=tmp_path / "o.zarr")
    before = zarr.open_group(tmp_path / "o.zarr", mode="r")["values"][...]
    with pytest.raises(OutputStoreError, match="another call .*inputs"):
        chunkmap.run(root_plus, a + 1, b, skip=ValueError, scheduler="sync", progress=False,
                     output=tmp_path / "o.zarr")
    with pytest.raises(OutputStoreError, match="another call .*function"):
        chunkmap.run(price_and_vega, a, b, scheduler="sync", progress=False, output=tmp_path / "o.zarr",
                     outputs=2)
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "o.zarr", mode="r")["values"][...], before)
    foreign = zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    foreign.create_array("mine", shape=(3,), dtype="f8")
    with pytest.raises(OutputStoreError, match="other data"):
        chunkmap.run(root_plus, a, b, skip=ValueError, scheduler="sync", progress=False,
                     output=tmp_path / "foreign.zarr")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(OutputStoreError, match="no zarr group"):
        chunkmap.run(root_plus, a, b, skip=ValueError, scheduler="sync", progress=False, output=tmp_path / "notes")
    assert [path.name for path in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_values_a_float64_store_cannot_hold_are_refused(tmp_path):
    with pytest.raises(OutputStoreError, match="complex128"):
        chunkmap.run(complex, np.arange(4.0), scheduler="sync", progress=False, output=tmp_path / "c.zarr")


def test_an_input_that_cannot_be_fingerprinted_is_written_but_never_resumed(tmp_path):
    lazy = da.random.default_rng(1).random(100, chunks=10)
    chunkmap.run(float, lazy, scheduler="sync", progress=False, output=tmp_path / "r.zarr")
    assert np.isfinite(zarr.open_group(tmp_path / "r.zarr", mode="r")["values"][...]).all()
    with pytest.raises(OutputStoreError, match="cannot resume .*cannot find in its graph"):
        chunkmap.run(float, lazy, scheduler="sync", progress=False, output=tmp_path / "r.zarr")


KILLED_RUN = """
import math, sys, time
import numpy as np
import chunkmap
import zarr

def slow_root(x, y):
    time.sleep(0.01)
    if x < 0:
        raise ValueError("negative")
    return math.sqrt(x) + y

rng = np.random.default_rng(11)
a, b = rng.normal(size=(41, 33)), rng.normal(size=(33,))
stored = zarr.create_array(store=sys.argv[1] + "/in.zarr", shape=a.shape, chunks=(5, 33), dtype="f8", overwrite=False) \\
    if sys.argv[2] == "first" else zarr.open_array(sys.argv[1] + "/in.zarr")
if sys.argv[2] == "first":
    stored[...] = a
result = chunkmap.run(slow_root, stored, b, mask=lambda x, y: x > 1.5, skip=ValueError, scheduler="threads",
                      progress=False, output=sys.argv[1] + "/out.zarr", chunks=165)
print(result.stats.resumed, result.stats.computed, result.stats.failed)
"""


@pytest.mark.slow
def test_killed_mid_run_and_rerun_resumes_and_equals_the_reference(grid, tmp_path):
    a, b = grid
    script = textwrap.dedent(KILLED_RUN)
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "first"], stdout=subprocess.DEVNULL)
    boxes = tmp_path / "out.zarr" / "boxes"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(path.is_file() for path in boxes.glob("c/**/*")):
        time.sleep(0.05)  # until the client has written the counts of some finished boxes
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), "again"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed, computed, failed = map(int, done.stdout.split())
    assert 0 < resumed < computed + failed, "the rerun should take some boxes from the killed run, not all"
    _, values, status = expected_store(root_plus, a, b, a > 1.5)
    group = zarr.open_group(tmp_path / "out.zarr", mode="r")
    np.testing.assert_array_equal(group["values"][...], values)
    np.testing.assert_array_equal(group["status"][...], status)


def test_a_store_on_a_cluster(grid, tmp_path, cluster_address):
    a, b = grid
    chunkmap.run(root_plus, da.from_array(a, chunks=(10, 33)), b, skip=ValueError, scheduler=cluster_address,
                 progress=False, output=tmp_path / "cluster.zarr")
    _, values, status = expected_store(root_plus, a, b, None)
    group = zarr.open_group(tmp_path / "cluster.zarr", mode="r")
    np.testing.assert_array_equal(group["values"][...], values)
    np.testing.assert_array_equal(group["status"][...], status)
    with pytest.raises(OutputStoreError, match="MemoryStore"):
        chunkmap.run(root_plus, a, b, skip=ValueError, scheduler=cluster_address, progress=False,
                     output=zarr.storage.MemoryStore())
    assert os.path.isdir(tmp_path / "cluster.zarr")


@pytest.mark.parametrize("wrap", ["zarr", "dask", "xarray"])
def test_an_edited_zarr_input_is_a_new_call_however_it_is_wrapped(grid, tmp_path, wrap):
    a, b = grid
    zarr.create_array(store=str(tmp_path / "in.zarr"), data=a, chunks=(10, 33))
    xr.Dataset({"a": (("y", "x"), a)}).to_zarr(tmp_path / "ds.zarr", consolidated=False)

    def opened():
        if wrap == "xarray":
            return xr.open_zarr(tmp_path / "ds.zarr", consolidated=False).a
        stored = zarr.open_array(str(tmp_path / "in.zarr"))
        return da.from_zarr(stored) if wrap == "dask" else stored

    def call():
        return chunkmap.run(root_plus, opened(), 1.0, skip=ValueError, scheduler="sync", progress=False,
                            output=tmp_path / "out.zarr")

    call()
    assert call().stats.resumed > 0  # the same call, the same data: resumed
    edited = zarr.open_array(str(tmp_path / ("ds.zarr/a" if wrap == "xarray" else "in.zarr")), mode="r+")
    time.sleep(0.01)
    edited[3, 4] = 123.0  # one element rewritten in place
    with pytest.raises(OutputStoreError, match="inputs"):
        call()


def test_a_store_removed_and_created_again_is_never_written_through_a_stale_handle(grid, tmp_path):
    """Tasks keep a store's open arrays by its token: a new store at the same path is opened anew."""
    import shutil

    a, b = grid
    for first in (True, False):  # the second: another shape and chunking at the same path, in the same process
        inputs = (a, b) if first else (a[:19, :7] * 2, b[:7])
        result = chunkmap.run(root_plus, *inputs, skip=ValueError, scheduler="threads", progress=False,
                              output=tmp_path / "again.zarr", chunks=50 if first else 13)
        assert result.stats.resumed == 0
        _, values, status = expected_store(root_plus, *inputs, None)
        group = zarr.open_group(tmp_path / "again.zarr", mode="r")
        np.testing.assert_array_equal(group["values"][...], values)
        np.testing.assert_array_equal(group["status"][...], status)
        shutil.rmtree(tmp_path / "again.zarr")


def test_a_store_of_an_older_format_is_refused_and_left_as_it_is(grid, tmp_path):
    a, b = grid
    chunkmap.run(root_plus, a, b, skip=ValueError, scheduler="sync", progress=False, output=tmp_path / "old.zarr")
    group = zarr.open_group(tmp_path / "old.zarr", mode="r+")
    group.attrs["chunkmap"] = dict(group.attrs["chunkmap"], format=1)
    with pytest.raises(OutputStoreError, match="another version of chunkmap .*format 1.*format 2"):
        chunkmap.run(root_plus, a, b, skip=ValueError, scheduler="sync", progress=False, output=tmp_path / "old.zarr")
    assert zarr.open_group(tmp_path / "old.zarr", mode="r").attrs["chunkmap"]["format"] == 1


def test_failures_round_trip_through_the_store_with_every_input_dtype(tmp_path):
    """The failures' columns (codes into tables, inputs as their bytes) read back as the in-memory result has them."""

    def picky(x, n, flag):
        if flag or n % 3 == 0:
            raise ValueError(f"no: {x!r} ünïcode\n{n}")
        return x * n

    x = np.linspace(-1, 1, 40).astype(">f4")
    n = np.arange(40, dtype=np.int16)
    flag = np.arange(40) % 7 == 0
    stored = chunkmap.run(picky, x, n, flag, skip=ValueError, scheduler="threads", progress=False,
                          output=tmp_path / "f.zarr", chunks=9)
    memory = chunkmap.run(picky, x, n, flag, skip=ValueError, scheduler="sync", progress=False)
    assert stored.failed_count == memory.failed_count == len(memory.failures) > 0
    assert [(f.coords, f.kind, f.type, f.message) for f in stored.failures] == [
        (f.coords, f.kind, f.type, f.message) for f in memory.failures]
    assert [f.inputs for f in stored.failures] == [f.inputs for f in memory.failures]
    assert [column.dtype for column in stored.failures.inputs] == [column.dtype for column in memory.failures.inputs]
