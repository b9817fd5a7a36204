"""runs(), run_failures() and remove() read a location without the run's inputs, and trust no stray record."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import chunkmap
from chunkmap.checkpoint import DirectoryStore, remove, run_failures, runs
from chunkmap.errors import CheckpointError


def finished(ew, folder):
    a = np.random.default_rng(0).random((20, 40))
    return chunkmap.run(ew.add_or_boom, a, a, skip=ew.Boom, chunks=100, checkpoint=folder, scheduler="threads")


def test_stray_records_are_neither_counted_nor_listed(ew, tmp_path):
    result = finished(ew, tmp_path)
    (run,) = runs(tmp_path)
    folder = tmp_path / run.run_id
    assert list(run_failures(tmp_path)) == list(result.failures)
    assert [f.inputs for f in run_failures(tmp_path)] == [f.inputs for f in result.failures] != []
    shutil.copy(folder / "chunk-000000000", folder / "chunk-000000099")  # outside the layout
    shutil.copy(folder / "chunk-000000000", folder / "chunk-000000003")  # filed under another chunk
    (after,) = runs(tmp_path)
    assert (after.chunks_done, after.chunks) == (8, 8)
    listed = run_failures(tmp_path)
    in_chunk_3 = (result.failures.flat_index >= 300) & (result.failures.flat_index < 400)
    assert listed.flat_index.tolist() == result.failures.flat_index[~in_chunk_3].tolist()


def test_a_missing_location_or_manifest_is_an_error_not_an_empty_answer(ew, tmp_path):
    with pytest.raises(CheckpointError, match="there is no checkpoint directory at"):
        runs(tmp_path / "typo")
    finished(ew, tmp_path)
    (run,) = runs(tmp_path)
    (tmp_path / run.run_id / "manifest.json").unlink()
    (again,) = runs(tmp_path)
    assert again.state == "stopped" and again.problem == "the manifest is missing"
    with pytest.raises(CheckpointError, match="has lost its manifest, so the coordinates of its failures are unknown"):
        run_failures(tmp_path)


def test_remove_takes_the_folder_and_what_a_killed_writer_left(ew, tmp_path):
    finished(ew, tmp_path)
    (run,) = runs(tmp_path)
    (tmp_path / run.run_id / ".chunk-000000004.0123.tmp").write_bytes(b"torn")
    assert remove(tmp_path, run.run_id[:6]) == run.run_id
    assert list(tmp_path.iterdir()) == [] and runs(DirectoryStore(tmp_path)) == []
