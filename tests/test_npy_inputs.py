""".npy files as inputs of run: read in place, chunk by chunk, by the workers themselves."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import chunkmap
from chunkmap.cli.demo import make_inputs
from chunkmap.errors import DtypeError, MissingFileError, NpyFormatError, ShapeError
from chunkmap.npy import NpyReader
from chunkmap.stub import slowlib


@pytest.fixture
def files(tmp_path):
    a1, a2 = make_inputs((40, 50))
    np.save(tmp_path / "a1.npy", a1)
    np.save(tmp_path / "a2.npy", np.asfortranarray(a2).astype(">f8"))  # Fortran order, big-endian
    return tmp_path, a1, a2


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_file_inputs_match_the_serial_loop(ew, files, scheduler):
    folder, a1, a2 = files
    mask = a1 <= -1e10
    result = chunkmap.run(slowlib.slow_computation, folder / "a2.npy", str(folder / "a1.npy"), mask=mask,
                          skip=slowlib.InternalError, scheduler=scheduler)
    ew.assert_matches_reference(result, slowlib.slow_computation, [a2, a1], mask=mask, skip=slowlib.InternalError)


def test_file_inputs_on_real_dask_workers(ew, files, cluster_address):
    folder, a1, a2 = files
    result = chunkmap.run(slowlib.slow_computation, NpyReader(folder / "a2.npy"), folder / "a1.npy",
                          mask=lambda x, y: y <= -1e10, skip=slowlib.InternalError, scheduler=cluster_address)
    ew.assert_matches_reference(result, slowlib.slow_computation, [a2, a1], mask=a1 <= -1e10, skip=slowlib.InternalError)


def test_files_mix_with_broadcast_arrays(ew, files):
    folder, a1, _ = files
    row = np.linspace(0, 1, 50)
    result = chunkmap.run(ew.add_or_boom, folder / "a1.npy", row, skip=ew.Boom, scheduler="threads")
    ew.assert_matches_reference(result, ew.add_or_boom, [a1, row], skip=ew.Boom)


def test_workers_read_their_own_slices(files, monkeypatch):
    """With file inputs a request carries paths and offsets: no shared buffer is filled."""
    folder, a1, a2 = files
    sizes = []
    original = chunkmap.local.pool.WorkerProcess.evaluate
    monkeypatch.setattr(chunkmap.local.pool.WorkerProcess, "evaluate",
                        lambda self, payload, *a, **k: sizes.append(len(payload)) or original(self, payload, *a, **k))
    stored = []
    monkeypatch.setattr(chunkmap.local.transport.InputBuffer, "store", lambda self, columns: stored.append(1))
    result = chunkmap.run(slowlib.slow_computation, folder / "a2.npy", folder / "a1.npy", skip=slowlib.InternalError,
                          chunks=500, scheduler="processes")
    assert result.stats.computed + result.stats.failed == 2000
    assert stored == [] and sizes and max(sizes) < 2_000


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "missing.npy", MissingFileError, "missing.npy"),
        (lambda p: (np.save(p / "small.npy", np.zeros((40, 1))), p / "small.npy")[1], ShapeError,
         r"is the .npy file .*small.npy of shape \(40, 1\); a file input must have the inputs' full shape \(40, 50\)"),
        (lambda p: (np.save(p / "text.npy", np.array([["x"] * 50] * 40)), p / "text.npy")[1], DtypeError, "<U1"),
        (lambda p: ((p / "junk.npy").write_bytes(b"not an array"), p / "junk.npy")[1], NpyFormatError, "junk.npy"),
    ],
    ids=["missing", "shape", "dtype", "not-npy"],
)
def test_bad_files(files, make, error, message):
    folder, a1, _ = files
    with pytest.raises(error, match=message):
        chunkmap.run(abs, a1, make(folder), scheduler="sync")


def test_checkpoint_names_a_file_by_path_size_and_mtime(ew, files):
    folder, a1, a2 = files
    first = chunkmap.run(ew.scaled, folder / "a1.npy", a2, checkpoint=folder / "ckpt", scheduler="threads")
    again = chunkmap.run(ew.scaled, folder / "a1.npy", a2, checkpoint=folder / "ckpt", scheduler="threads")
    assert again.stats.resumed == 2000
    np.save(folder / "a1.npy", a1 + 1)  # a changed file is a different run
    with pytest.warns(chunkmap.errors.CheckpointWarning, match=r"differs in: the inputs$"):
        changed = chunkmap.run(ew.scaled, folder / "a1.npy", a2, checkpoint=folder / "ckpt", scheduler="threads")
    assert changed.stats.resumed == 0
    ew.assert_matches_reference(changed, ew.scaled, [a1 + 1, a2])
    assert not np.array_equal(changed.values, first.values)


LARGER_THAN_MEMORY = """
import resource, sys
import numpy as np
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import chunkmap
try:
    np.ones(limit // 8)  # the limit is real: this much memory cannot be had
    raise SystemExit("the address-space limit did not hold")
except MemoryError:
    pass
result = chunkmap.run(lambda x, y: x + y, sys.argv[1], sys.argv[2],
                      mask=lambda x, y: x < 0.9999, scheduler="processes")
print(len(result.values), float(result.values.sum()))
"""


def test_inputs_larger_than_the_memory_limit_stream_from_disk(tmp_path):
    """Two 600 MB inputs (1.2 GB) under a 1 GB address-space limit, in parent and workers alike."""
    n = 75_000_000
    rng = np.random.default_rng(1)
    reference_count, reference_sum = 0, 0.0
    for name in ("x.npy", "y.npy"):
        out = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=np.float64, shape=(n,))
        for start in range(0, n, 5_000_000):
            out[start : start + 5_000_000] = rng.random(min(5_000_000, n - start))
        out.flush()
        del out
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = np.load(tmp_path / "y.npy", mmap_mode="r")
    for start in range(0, n, 5_000_000):
        xs, ys = np.asarray(x[start : start + 5_000_000]), np.asarray(y[start : start + 5_000_000])
        keep = xs >= 0.9999
        reference_count += int(keep.sum())
        reference_sum += float((xs[keep] + ys[keep]).sum())
    del x, y
    script = tmp_path / "run.py"
    script.write_text(LARGER_THAN_MEMORY)
    limit = 1 << 30
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    completed = subprocess.run([sys.executable, str(script), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(limit)],
                               capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    count, total = completed.stdout.split()
    assert int(count) == reference_count
    assert float(total) == pytest.approx(reference_sum, rel=1e-12)
