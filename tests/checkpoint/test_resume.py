"""Checkpoint and resume: killed runs lose at most their in-flight chunks, and never mix runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import chunkmap
from chunkmap.checkpoint import DirectoryStore, RunCheckpoint, decode_record, run_identity
from chunkmap.cli.demo import make_inputs as seed_inputs
from chunkmap.errors import OptionError
from chunkmap.plan import make_plan
from chunkmap.stub import slowlib

KILLED_RUN = """
import sys
import numpy as np
import chunkmap
from chunkmap.stub import set_cost
from chunkmap.stub import slowlib

if __name__ == "__main__":
    a_path, b_path, checkpoint = sys.argv[1:]
    set_cost(1_000_000)  # 1 ms per call, in the worker processes too
    a, b = np.load(a_path), np.load(b_path)

    def progress(done, total, failed):
        print(done, flush=True)

    chunkmap.run(slowlib.slow_computation, a, b, mask=a <= -1e10, skip=slowlib.InternalError,
                 chunks=100, checkpoint=checkpoint, progress=progress, scheduler="processes")
    print("finished", flush=True)
"""


def chunk_files(root: Path) -> list[Path]:
    return [path for path in root.glob("*/chunk-*") if not path.name.startswith(".")]


def test_a_killed_run_resumes_and_recomputes_only_what_was_in_flight(ew, tmp_path):
    a, b = seed_inputs((60, 60))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    (tmp_path / "run.py").write_text(KILLED_RUN)
    checkpoint = tmp_path / "checkpoint"
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), str(checkpoint)],
        stdout=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while len(chunk_files(checkpoint)) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    printed = process.communicate()[0].split()
    assert "finished" not in printed, "the run must be killed half way"
    saved_records = chunk_files(checkpoint)
    saved = len(saved_records)
    saved_elements = sum(len(decode_record(path.read_bytes()).evaluation.status) for path in saved_records)
    done_when_killed = int(printed[-1])

    mask = a <= -1e10
    result = chunkmap.run(slowlib.slow_computation, a, b, mask=mask, skip=slowlib.InternalError,
                          chunks=100, checkpoint=checkpoint, scheduler="processes")
    ew.assert_matches_reference(result, slowlib.slow_computation, [a, b], mask=mask, skip=slowlib.InternalError)
    unmasked = int((~mask).sum())
    chunks = -(-unmasked // 100)
    assert 8 <= saved < chunks
    assert result.stats.resumed == saved_elements  # every saved chunk reused, none recomputed
    assert len(chunk_files(checkpoint)) == chunks
    lost = done_when_killed - saved_elements  # finished (or partly) before the kill but not saved
    assert 0 <= lost <= os.cpu_count() * 100  # at most the chunks in flight on the workers


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_rerun_is_identical_to_an_uninterrupted_run(ew, tmp_path, scheduler):
    a, b = seed_inputs((25, 30), seed=1)
    options = dict(mask=a <= -1e10, skip=ew.Boom, chunks=64, scheduler=scheduler)
    first = chunkmap.run(ew.add_or_boom, a, b, checkpoint=tmp_path, **options)
    again = chunkmap.run(ew.add_or_boom, a, b, checkpoint=tmp_path, **options)
    plain = chunkmap.run(ew.add_or_boom, a, b, **options)
    for result in (first, again):
        np.testing.assert_array_equal(result.flat_index, plain.flat_index)
        np.testing.assert_array_equal(result.values, plain.values)
        assert list(result.failures) == list(plain.failures)
    assert first.stats.resumed == 0 and again.stats.resumed == first.stats.computed + first.stats.failed


def test_other_functions_inputs_or_kwargs_start_fresh_runs_and_say_what_differs(ew, tmp_path):
    a, b = seed_inputs((10, 12), seed=2)
    chunkmap.run(ew.scaled, a, b, checkpoint=tmp_path, scheduler="threads")
    variants = [
        (ew.add_or_boom, (a, b), {"skip": ew.Boom}, "the function (its code, bound state or name), skip, timeout, chunks or outputs"),
        (ew.scaled, (a, b), {"kwargs": {"scale": 2.0}}, "kwargs"),
        (ew.scaled, (a, b * 1.0000001), {}, "the inputs"),
        (ew.scaled, (a, b), {"mask": a > 0.9}, "the mask"),
        (ew.scaled, (a, b), {"chunks": 7}, "skip, timeout, chunks or outputs"),
    ]
    for number, (func, arrays, options, differs) in enumerate(variants, start=2):
        with pytest.warns(chunkmap.errors.CheckpointWarning, match=f"holds {number - 1} other run.*differs in: {re.escape(differs)}$"):
            result = chunkmap.run(func, *arrays, checkpoint=tmp_path, scheduler="threads", **options)
        assert result.stats.resumed == 0
        ew.assert_matches_reference(result, func, list(arrays), mask=options.get("mask"), skip=options.get("skip", ()),
                                    kwargs=options.get("kwargs"))
        assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == number


def test_a_torn_or_corrupt_record_is_recomputed(ew, tmp_path):
    a, b = seed_inputs((20, 20), seed=3)
    first = chunkmap.run(ew.scaled, a, b, chunks=50, checkpoint=tmp_path, scheduler="threads")
    records = sorted(chunk_files(tmp_path))
    records[0].write_bytes(records[0].read_bytes()[:-7])  # torn
    data = bytearray(records[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the values
    records[1].write_bytes(bytes(data))
    with pytest.warns(chunkmap.errors.CheckpointWarning, match=r"held 2 record\(s\) that do not belong .*damaged"):
        again = chunkmap.run(ew.scaled, a, b, chunks=50, checkpoint=tmp_path, scheduler="threads")
    np.testing.assert_array_equal(again.values, first.values)
    assert again.stats.resumed == 400 - 100 and again.stats.rejected == 2


def test_the_recorded_layout_is_reused_with_auto(ew, tmp_path):
    """A run started elsewhere (other workers, another pilot) resumes with its own chunking."""
    a, b = seed_inputs((9, 11), seed=4)
    plan = make_plan([a, b])
    identity = run_identity(ew.scaled, plan.source, (), None, None, "auto")
    started_elsewhere = RunCheckpoint(DirectoryStore(tmp_path), identity, {})
    started_elsewhere.begin(plan.with_layout([1, 2, 10], 7))
    started_elsewhere.close()
    result = chunkmap.run(ew.scaled, a, b, checkpoint=tmp_path, scheduler="threads")
    ew.assert_matches_reference(result, ew.scaled, [a, b])
    sizes = sorted(len(decode_record(path.read_bytes()).evaluation.status) for path in chunk_files(tmp_path))
    assert sizes == sorted([1, 1, 8] + [7] * 12 + [5])  # 99 = 1 + 1 + 8 + 12 * 7 + 5
    manifest = json.loads((tmp_path / identity.run_id / "manifest.json").read_text())
    assert (manifest["layout"]["head"], manifest["layout"]["chunk_size"]) == ([1, 2, 10], 7)


def test_a_fresh_auto_run_records_its_pilot_layout(ew, tmp_path):
    a, b = seed_inputs((30, 40), seed=5)
    first = chunkmap.run(ew.scaled, a, b, checkpoint=tmp_path, scheduler="threads")
    (manifest_path,) = tmp_path.glob("*/manifest.json")
    layout = json.loads(manifest_path.read_text())["layout"]
    assert layout["head"][:2] == [1, 2] and layout["chunk_size"] >= 1  # rounds of 1, then 8, ... per worker
    again = chunkmap.run(ew.scaled, a, b, checkpoint=tmp_path, scheduler="threads")
    assert again.stats.resumed == 1200
    np.testing.assert_array_equal(again.values, first.values)


def test_bad_checkpoint_option():
    with pytest.raises(OptionError, match="checkpoint must be a directory path, a redis:// URL, a chunkmap.Checkpoint or a store"):
        chunkmap.run(abs, np.arange(3), checkpoint=42, scheduler="sync")
