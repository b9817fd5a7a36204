"""Each failure keeps the inputs func was called with, on every path, against the serial loop's own inputs.

The serial loop (:func:`chunkmap.testing.serial_reference`) says which elements fail; their inputs
are read here straight from the broadcast numpy inputs at those coordinates.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import chunkmap
from chunkmap import codec
from chunkmap.checkpoint import decode_record
from chunkmap.checkpoint.records import MAGIC, PARTS
from chunkmap.errors import CheckpointWarning
from chunkmap.failures import FailureRecords
from chunkmap.result import Failure, Failures
from chunkmap.stub import slowlib
from chunkmap.testing import serial_reference

SHAPE = (20, 30)
DTYPES = [np.dtype(np.int32), np.dtype(np.float64), np.dtype(bool)]


class Picky(Exception):
    """What picky raises on its 'bad' inputs."""


class Poisoned(Exception):
    """The serial loop's stand-in for a crash or a hang (it must not crash the test process)."""


def picky(n, x, flag):
    """n + x, raising Picky for n a multiple of 7 or a flagged x > 0.8; poison values crash or hang for real."""
    if not (type(n) is int and type(x) is float and type(flag) is bool):
        raise TypeError(f"expected int, float, bool; got {type(n).__name__}, {type(x).__name__}, {type(flag).__name__}")
    if x in (slowlib.CRASH_VALUE, slowlib.HANG_VALUE):
        slowlib.slow_computation(x, 0.0)  # a segmentation fault, or a call that never returns
    if n % 7 == 0 or (flag and x > 0.8):
        raise Picky(f"picky about {n}, {x}, {flag}")
    return n + x


def picky_serially(n, x, flag):
    """picky as the serial loop may call it: the poison values raise instead."""
    if x == slowlib.CRASH_VALUE:
        raise Poisoned("crash")
    if x == slowlib.HANG_VALUE:
        raise Poisoned("timeout")
    return picky(n, x, flag)


def three_inputs(shape=SHAPE, seed=0):
    """int32 of shape (rows, 1), float64 of the full shape and bool of shape (columns,): they broadcast."""
    rng = np.random.default_rng(seed)
    n = rng.integers(-50, 50, (shape[0], 1)).astype(np.int32)
    x = rng.random(shape)
    flag = rng.random(shape[1]) < 0.5
    mask = rng.random(shape) < 0.1
    return (n, x, flag), mask


def expected_failures(arrays, mask):
    """``(coords, kind, inputs)`` of every failing element by the serial loop, the inputs read from the arrays."""
    reference = serial_reference(picky_serially, *arrays, mask=mask, skip=(Picky, Poisoned))
    broadcast = np.broadcast_arrays(*arrays)
    return [(coords, "exception" if kind == "Picky" else message,
             tuple(array[coords].item() for array in broadcast)) for coords, kind, message in reference.failures]


def assert_inputs_kept(result, arrays, mask):
    expected = expected_failures(arrays, mask)
    failures = result.failures
    assert len(expected) > 10
    assert [(failure.coords, failure.kind, failure.inputs) for failure in failures] == expected
    assert [column.dtype for column in failures.inputs] == DTYPES
    for number, column in enumerate(failures.inputs):
        assert column.shape == (len(failures),)
        assert column.tolist() == [inputs[number] for _, _, inputs in expected]
    first = failures[0].inputs
    assert [type(value) for value in first] == [int, float, bool]  # what func was called with


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_failures_keep_the_inputs_of_the_serial_loops_failures(scheduler):
    arrays, mask = three_inputs()
    result = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler=scheduler, chunks=37, progress=False)
    assert_inputs_kept(result, arrays, mask)


@pytest.mark.parametrize("shape", [SHAPE, (120, 90)], ids=["read-by-the-worker", "shared-memory"])
def test_crashes_and_timeouts_keep_their_inputs(shape):
    """Small inputs are read by the workers themselves (the parent reads a dead worker's element
    again), large ones go through shared memory (the parent has them)."""
    arrays, mask = three_inputs(shape, seed=1)
    n, x, flag = arrays
    for coords in [(0, 3), (7, 7), (shape[0] - 1, shape[1] - 2)]:
        x[coords], mask[coords] = slowlib.CRASH_VALUE, False
    x[11, 2], mask[11, 2] = slowlib.HANG_VALUE, False
    result = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler="processes", timeout=1.0,
                          chunks=400, progress=False)
    assert result.failures.counts_by_kind() == {
        "exception": len(result.failures) - 4, "crash": 3, "timeout": 1}
    assert_inputs_kept(result, arrays, mask)


def test_lazy_inputs_and_several_outputs_keep_the_inputs():
    da = pytest.importorskip("dask.array")
    arrays, mask = three_inputs()
    n, x, flag = arrays

    def pair(n, x, flag):
        return picky(n, x, flag), -n

    lazy = chunkmap.run(picky, da.from_array(n, chunks=(7, 1)), da.from_array(x, chunks=(7, 11)), flag,
                        mask=mask, skip=Picky, scheduler="sync", progress=False)
    assert_inputs_kept(lazy, arrays, mask)
    outputs = chunkmap.run(pair, *arrays, mask=mask, skip=Picky, outputs=("sum", "minus"), scheduler="threads",
                           chunks=50, progress=False)
    assert_inputs_kept(outputs, arrays, mask)


def test_a_cluster_keeps_the_inputs(local_cluster):
    arrays, mask = three_inputs()
    result = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, client=local_cluster, chunks=60, progress=False)
    assert_inputs_kept(result, arrays, mask)


def records_of(location: Path) -> list[Path]:
    return sorted(path for path in location.glob("*/chunk-*") if not path.name.startswith("."))


def test_a_resumed_run_keeps_the_inputs(tmp_path):
    arrays, mask = three_inputs()
    first = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler="sync", chunks=50,
                         checkpoint=tmp_path, progress=False)
    again = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler="sync", chunks=50,
                         checkpoint=tmp_path, progress=False)
    assert again.stats.resumed == len(first) + len(first.failures) and again.stats.rejected == 0
    assert_inputs_kept(again, arrays, mask)
    record = decode_record(records_of(tmp_path)[0].read_bytes())
    assert record.header["format"] == 4 and record.header["inputs"] == 3


def format_3(data: bytes) -> bytes:
    """A record as chunkmap wrote it before failures kept their inputs: format 3, ten parts."""
    record = decode_record(data)
    header = {key: value for key, value in record.header.items() if key != "inputs"} | {"format": 3}
    evaluation, failures = record.evaluation, record.evaluation.failures
    names = np.frombuffer(json.dumps(failures.type_names).encode(), np.uint8)
    parts = [evaluation.status, evaluation.values, record.failure_flat_index, failures.positions,
             failures.type_codes, names, np.frombuffer(b"".join(failures.blocks), np.uint8),
             np.array([len(block) for block in failures.blocks], np.int64), failures.block_counts,
             failures.text_ends]
    assert len(parts) == PARTS
    text = json.dumps(header, sort_keys=True).encode()
    pieces = [b"chunkmap-chunk-3\n", struct.pack("<Q", len(text)), text, struct.pack("<I", zlib.crc32(text))]
    for part in parts:
        payload = codec.encode(np.ascontiguousarray(part), checksum=True)
        pieces += [struct.pack("<Q", len(payload)), payload]
    return b"".join(pieces)


def test_an_old_format_record_is_computed_again_never_misread(tmp_path):
    arrays, mask = three_inputs()
    first = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler="sync", chunks=50,
                         checkpoint=tmp_path, progress=False)
    paths = records_of(tmp_path)
    for path in paths:
        path.write_bytes(format_3(path.read_bytes()))
    assert MAGIC != b"chunkmap-chunk-3\n" and records_of(tmp_path)[0].read_bytes().startswith(b"chunkmap-chunk-3\n")
    with pytest.warns(CheckpointWarning, match=rf"held {len(paths)} record\(s\) .*a checkpoint record of format 3, "
                                               rf"expected format 4 .*computed again"):
        again = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler="sync", chunks=50,
                             checkpoint=tmp_path, progress=False)
    assert again.stats.resumed == 0 and again.stats.rejected == len(paths) > 0
    assert len(again.failures) == len(first.failures)
    assert_inputs_kept(again, arrays, mask)


def test_the_repr_html_and_table_show_the_inputs():
    arrays, mask = three_inputs()
    failures = chunkmap.run(picky, *arrays, mask=mask, skip=Picky, scheduler="sync", progress=False).failures
    first = failures[0]
    text = repr(failures)
    assert f"{first.coords}  exception  {first.inputs!r}" in text.splitlines()[1]
    assert f" -> Picky: picky about {first.inputs[0]}" in text.splitlines()[1]
    page = failures._repr_html_()
    for name in ("in0", "in1", "in2"):
        assert f">{name}</th>" in page
    row = page.split("<tr>")[2]  # the first failure's row
    assert all(f">{value!r}</td>" in row for value in first.inputs)
    table = failures.to_pandas()
    assert list(table.columns) == ["dim_0", "dim_1", "kind", "in0", "in1", "in2", "type", "message"]
    assert [table[name].dtype for name in ("in0", "in1", "in2")] == DTYPES
    assert list(zip(table["in0"].tolist(), table["in1"].tolist(), table["in2"].tolist())) == [
        failure.inputs for failure in failures]


def test_records_keep_their_inputs_through_take_concat_and_equality():
    inputs = (np.array([np.nan, 2.5]), np.array([3, 4], np.int32))
    records = FailureRecords.from_tuples([(0, "E", "a"), (5, "F", "b")], inputs)
    joined = FailureRecords.concat([records, records.take([1])], [0, 10])
    assert joined.positions.tolist() == [0, 5, 15]
    np.testing.assert_array_equal(joined.inputs[0], [np.nan, 2.5, 2.5])
    np.testing.assert_array_equal(joined.inputs[1], np.array([3, 4, 4], np.int32), strict=True)
    assert joined.nbytes - dataclasses.replace(joined, inputs=()).nbytes == 3 * (8 + 4)  # the itemsizes
    with pytest.raises(ValueError, match=r"cannot join failure records with \[0, 2\] input columns"):
        FailureRecords.concat([records, FailureRecords.from_tuples([(1, "E", "c")])])
    with pytest.raises(ValueError, match="2 failures but input columns of lengths"):
        FailureRecords.from_tuples([(0, "E", "a"), (5, "F", "b")], (np.array([1.0]),))
    failures = Failures((2, 3), [0, 5], ["E", "F"], ["a", "b"], inputs=inputs)
    nan_input = failures[0]
    assert nan_input == Failure((0, 0), "exception", "E", "a")  # a NaN input never equals itself
    assert np.isnan(nan_input.inputs[0]) and nan_input.inputs[1] == 3
    assert "inputs=(nan, 3)" in repr(nan_input) and "inputs" not in repr(Failure((0,), "crash", "E", "m"))
    assert [column.tolist() for column in failures[1:].inputs] == [[2.5], [4]]
