"""How a chunk's inputs reach a worker and its evaluation comes back, through the slot's shared buffer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from chunkmap.local.transport import InputBuffer, send_back, take_back
from chunkmap.source import ArraySource
from chunkmap.local.transport import IndexedColumns, SourceSlice, chunk_inputs, request


@pytest.fixture
def buffer():
    made = InputBuffer()
    yield made
    made.close()


def in_worker(shared):
    """The request as the worker sees it: unpickled, attached to the segment by name."""
    return pickle.loads(pickle.dumps(shared))


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.complex128, np.bool_, [("a", "<f8"), ("b", "<i2")]])
def test_status_and_values_written_back_come_out_equal(buffer, dtype):
    shared = in_worker(buffer.take([np.arange(1000.0), np.arange(1000.0)], np.arange(0, 1000, 3)))
    status = (np.arange(334) % 5 == 0).astype(np.uint8)
    values = np.zeros(334 - np.count_nonzero(status), dtype)
    values.view(np.uint8)[:] = np.arange(values.nbytes) % 251
    layout = send_back(shared, [status, values])
    assert layout is not None
    got_status, got_values = take_back(buffer, layout)
    np.testing.assert_array_equal(got_status, status)
    assert got_values.dtype == values.dtype and got_values.tobytes() == values.tobytes()
    assert not np.shares_memory(got_values, buffer.shared.array)  # copies: the slot may serve again


def test_what_cannot_go_through_the_buffer_goes_through_the_pipe(buffer):
    shared = in_worker(buffer.store([np.arange(10.0)]))
    status = np.zeros(10, np.uint8)
    assert send_back(shared, [status, np.array([object()] * 10)]) is None  # Python objects
    assert send_back(shared, [status, np.zeros(len(buffer.shared.array), np.float64)]) is None  # does not fit
    source = ArraySource((np.arange(10.0),), (10,))
    assert send_back(SourceSlice.of(source, 0, 10), [status, np.zeros(10)]) is None  # no shared buffer


def test_in_memory_chunks_are_picked_by_flat_index_and_broadcast_ones_gathered(buffer):
    a = np.arange(24000.0).reshape(40, 600)  # too large to travel in each request
    valid = (np.arange(24000) % 3 != 0).reshape(40, 600)
    big = ArraySource((a, a * 10), (40, 600), valid=valid)
    flat_index, inputs = chunk_inputs(big, 5, 20)
    assert isinstance(inputs, IndexedColumns)
    np.testing.assert_array_equal(flat_index, [i for i in range(5, 20) if i % 3])
    columns = in_worker(request(inputs, 2, 7, buffer)).columns()
    np.testing.assert_array_equal(columns[0], a.reshape(-1)[flat_index[2:7]])
    np.testing.assert_array_equal(columns[1], 10 * a.reshape(-1)[flat_index[2:7]])
    broadcast = ArraySource((a, np.arange(600.0)), (40, 600), valid=valid)
    flat_index, inputs = chunk_inputs(broadcast, 5, 20)
    assert not isinstance(inputs, IndexedColumns)
    np.testing.assert_array_equal(in_worker(request(inputs, 0, 3, buffer)).columns()[1], flat_index[:3] % 600)


def price_and_vega(a, b):
    if (a * 1000) % 7 < 0.5:
        raise ArithmeticError("no price")
    return a + b, int(a * 100) - int(b * 100)


def test_several_outputs_of_large_inputs_come_back_through_shared_memory_as_the_serial_loop():
    """Inputs too large for the requests: chunks are picked into the buffer and the structured values
    (one field per output) written back over them."""
    chunkmap = pytest.importorskip("chunkmap")
    rng = np.random.default_rng(3)
    a, b = rng.random((90, 110)), rng.random((90, 110))
    mask = a < 0.1
    result = chunkmap.run(price_and_vega, a, b, mask=mask, skip=ArithmeticError, outputs=("price", "vega"),
                          scheduler="processes", chunks=1500, progress=False)
    expected = [(x, y, *price_and_vega(a[x, y], b[x, y])) for x, y in zip(*np.nonzero(~mask))
                if (a[x, y] * 1000) % 7 >= 0.5]
    xs, ys, price, vega = result
    assert list(zip(xs.tolist(), ys.tolist(), price.tolist(), vega.tolist())) == expected
    assert vega.dtype == np.int64 and len(result.failures) == np.count_nonzero(~mask) - len(expected)
