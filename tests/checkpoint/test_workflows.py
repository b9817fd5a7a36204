"""The workflows that used to give silent wrong results, on a directory checkpoint: exact or a clear error.

Each test is one case of issue 11, checked against the serial loop.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import chunkmap
from chunkmap.checkpoint import DirectoryStore, RunCheckpoint, run_identity
from chunkmap.cli.demo import make_inputs
from chunkmap.errors import CheckpointBusyError, CheckpointError, CheckpointWarning, IdentityError
from chunkmap.plan import make_plan
from chunkmap.stub import slowlib


def inputs(shape=(40, 50), seed=0):
    return make_inputs(shape, seed)


def only_run(folder: Path) -> Path:
    (run,) = [path for path in folder.iterdir() if path.is_dir()]
    return run


def records(run: Path) -> list[Path]:
    return sorted(path for path in run.glob("chunk-*"))


def test_a_lost_manifest_and_another_pilot_layout_never_mix_records(ew, tmp_path):
    """Case 1: records of the old layout are not filed into the new layout's slots."""
    a, b = inputs()
    mask = a <= -1e10
    first = chunkmap.run(ew.add_or_boom, a, b, mask=mask, skip=ew.Boom, checkpoint=tmp_path, scheduler="threads")
    run = only_run(tmp_path)
    (run / "manifest.json").unlink()
    with pytest.warns(CheckpointWarning, match="had lost its manifest; the chunk layout was recovered from its records"):
        again = chunkmap.run(ew.add_or_boom, a, b, mask=mask, skip=ew.Boom, checkpoint=tmp_path, scheduler="threads")
    assert again.stats.resumed == first.stats.computed + first.stats.failed
    ew.assert_matches_reference(again, ew.add_or_boom, [a, b], mask=mask, skip=ew.Boom)

    # The rerun's pilot chose another layout (a different machine load): no old record fits it.
    (run / "manifest.json").unlink()
    plan = make_plan([a, b], mask=mask)
    checkpoint = RunCheckpoint(DirectoryStore(tmp_path), run_identity(ew.add_or_boom, plan.source, (ew.Boom,), None,
                                                                       None, "auto"), {})
    checkpoint.begin(plan.with_layout([2, 4, 20], 97))
    checkpoint.close()
    old_records = len(records(run))
    with pytest.warns(CheckpointWarning, match=r"that do not belong to this run's chunks \(\d+ made with another chunk layout"):
        third = chunkmap.run(ew.add_or_boom, a, b, mask=mask, skip=ew.Boom, checkpoint=tmp_path, scheduler="threads")
    assert third.stats.resumed == 0 and third.stats.rejected == old_records
    ew.assert_matches_reference(third, ew.add_or_boom, [a, b], mask=mask, skip=ew.Boom)


SECOND_RUN = """
import sys, numpy as np, chunkmap
from chunkmap.stub import set_cost
from chunkmap.stub import slowlib
if __name__ == "__main__":
    set_cost(2_000_000)
    a = np.load(sys.argv[1])
    def progress(done, total, failed):
        print("progress", done, flush=True)
    result = chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=20, checkpoint=sys.argv[2],
                          scheduler="threads", progress=progress)
    print("finished", result.stats.resumed, flush=True)
"""


def test_two_runs_of_the_same_call_at_once(tmp_path):
    """Case 2: the second run fails at once naming the first; the checkpoint stays sound."""
    a = np.random.default_rng(2).random((20, 20))
    np.save(tmp_path / "a.npy", a)
    (tmp_path / "run.py").write_text(SECOND_RUN)
    folder = tmp_path / "checkpoint"
    with subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "a.npy"), str(folder)],
                          stdout=subprocess.PIPE, text=True) as first:
        assert first.stdout.readline().startswith("progress")
        time.sleep(0.3)
        with pytest.raises(CheckpointBusyError, match=rf"process {first.pid} on host .* started"):
            chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=20, checkpoint=folder,
                         scheduler="threads")
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 0 and "finished 0" in output
    again = chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=20, checkpoint=folder,
                         scheduler="threads")
    assert again.stats.resumed == 400
    plain = chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=20, scheduler="threads")
    np.testing.assert_array_equal(again.values, plain.values)
    np.testing.assert_array_equal(again.flat_index, plain.flat_index)


def test_a_copied_or_swapped_record_is_refused(ew, tmp_path):
    """Case 4: ``cp chunk-3 chunk-4`` and swapped files give the exact result."""
    a, b = inputs(seed=4)
    options = dict(mask=a <= -1e10, skip=ew.Boom, chunks=100, checkpoint=tmp_path, scheduler="threads")
    chunkmap.run(ew.add_or_boom, a, b, **options)
    files = records(only_run(tmp_path))
    shutil.copy(files[3], files[4])
    five, six = files[5].read_bytes(), files[6].read_bytes()
    files[5].write_bytes(six)
    files[6].write_bytes(five)
    with pytest.warns(CheckpointWarning, match=r"held 3 record\(s\) that do not belong .*its chunk is \d, expected"):
        again = chunkmap.run(ew.add_or_boom, a, b, **options)
    assert again.stats.rejected == 3
    ew.assert_matches_reference(again, ew.add_or_boom, [a, b], mask=a <= -1e10, skip=ew.Boom)


class Model:
    def __init__(self, scale):
        self.scale = scale

    def predict(self, a, b):
        return self.scale * (a + b)


def test_methods_of_other_instances_are_other_runs(tmp_path):
    """Case 5: ``Model(3).predict`` does not get ``Model(2).predict``'s values."""
    a, b = inputs((10, 10), seed=5)
    two = chunkmap.run(Model(2).predict, a, b, checkpoint=tmp_path, scheduler="threads")
    with pytest.warns(CheckpointWarning, match=r"differs in: the function \(its code, bound state or name\)$"):
        three = chunkmap.run(Model(3).predict, a, b, checkpoint=tmp_path, scheduler="threads")
    assert three.stats.resumed == 0
    np.testing.assert_allclose(three.values, 1.5 * two.values)


def test_a_method_of_a_swig_object_needs_a_name(tmp_path):
    """Case 5, SWIG: the object cannot be fingerprinted, so run() says so; a name decides."""
    a, b = inputs((10, 10), seed=6)
    with pytest.raises(IdentityError, match=r"slowlib.Model whose state cannot be pickled"):
        chunkmap.run(slowlib.Model(2.0).predict, a, b, skip=slowlib.InternalError, checkpoint=tmp_path,
                     scheduler="threads")
    named = chunkmap.Checkpoint(tmp_path, name="model-2")
    first = chunkmap.run(slowlib.Model(2.0).predict, a, b, skip=slowlib.InternalError, checkpoint=named,
                         scheduler="threads")
    again = chunkmap.run(slowlib.Model(2.0).predict, a, b, skip=slowlib.InternalError, checkpoint=named,
                         scheduler="threads")
    assert again.stats.resumed == first.stats.computed + first.stats.failed == 100
    with pytest.warns(CheckpointWarning, match=r"differs in: the function"):
        other = chunkmap.run(slowlib.Model(3.0).predict, a, b, skip=slowlib.InternalError,
                             checkpoint=chunkmap.Checkpoint(tmp_path, name="model-3"), scheduler="threads")
    np.testing.assert_allclose(other.values, 1.5 * first.values)


def test_editing_the_function_in_its_module_and_reloading(tmp_path, monkeypatch):
    """Case 6: after an edit and ``importlib.reload``, the new values, nothing resumed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "user_model.py"
    module.write_text("def f(a, b):\n    return a * 2 + b\n")
    import user_model

    a, b = inputs((12, 12), seed=7)
    folder = tmp_path / "checkpoint"
    first = chunkmap.run(user_model.f, a, b, checkpoint=folder, scheduler="threads")
    module.write_text("def f(a, b):\n    return a * 3 + b\n")
    os.utime(module, ns=(time.time_ns() + 10**9,) * 2)  # a new mtime even on a coarse clock
    importlib.reload(user_model)
    with pytest.warns(CheckpointWarning, match=r"differs in: the function"):
        second = chunkmap.run(user_model.f, a, b, checkpoint=folder, scheduler="threads")
    assert second.stats.resumed == 0
    np.testing.assert_allclose(second.values, first.values + a.reshape(-1))


def test_another_timeout_is_another_run(tmp_path):
    """Case 7: timeout failures of one timeout are not reused under another."""
    a = np.array([0.1, slowlib.HANG_VALUE, 0.3, 0.4])
    first = chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, timeout=0.5, chunks=1,
                         checkpoint=tmp_path, scheduler="processes")
    assert [f.kind for f in first.failures] == ["timeout"]
    with pytest.warns(CheckpointWarning, match="differs in: skip, timeout, chunks or outputs$"):
        second = chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, timeout=0.7, chunks=1,
                              checkpoint=tmp_path, scheduler="processes")
    assert second.stats.resumed == 0 and [f.kind for f in second.failures] == ["timeout"]


SCRIPT = """
import sys, numpy as np, chunkmap
{above}
def f(a, b):
    return a - b

if __name__ == "__main__":
    a = np.arange(200.0).reshape(10, 20)
    result = chunkmap.run(f, a, a.T.copy().reshape(10, 20), checkpoint=sys.argv[1], scheduler="sync")
    print(result.stats.resumed, result.values.sum())
"""


def test_a_script_function_keeps_its_checkpoint_when_lines_move(tmp_path):
    """Case 8: a line added above the function does not lose the checkpoint."""
    script = tmp_path / "job.py"
    folder = tmp_path / "checkpoint"
    outputs = []
    for above in ("", "import os  # added while fixing a typo\n\n\nTYPO = 'fixed'\n"):
        script.write_text(SCRIPT.format(above=above))
        outputs.append(subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True,
                                      check=True).stdout.split())
    assert outputs[0][0] == "0" and outputs[1][0] == "200" and outputs[0][1] == outputs[1][1]


@pytest.mark.parametrize("damage, message", [
    ("{not json", "is not valid JSON"),
    ('{"run": "x", "layout": {}}', "is not one chunkmap wrote for this run"),
])
def test_a_corrupt_manifest_is_a_checkpoint_error(ew, tmp_path, damage, message):
    """Case 9: a manifest that is not chunkmap's gives a CheckpointError saying how to start afresh."""
    a, b = inputs((10, 10), seed=9)
    chunkmap.run(ew.scaled, a, b, checkpoint=tmp_path, scheduler="threads")
    run = only_run(tmp_path)
    (run / "manifest.json").write_text(damage)
    with pytest.raises(CheckpointError, match=rf"{message}.*chunkmap remove {tmp_path} {run.name}"):
        chunkmap.run(ew.scaled, a, b, checkpoint=tmp_path, scheduler="threads")


def test_an_edited_layout_or_an_extra_record_is_recomputed(ew, tmp_path):
    """Case 9: an edited (valid) layout and an extra record give the exact result."""
    a, b = inputs(seed=10)
    options = dict(mask=a <= -1e10, chunks=100, checkpoint=tmp_path, scheduler="threads")
    chunkmap.run(ew.scaled, a, b, **options)
    run = only_run(tmp_path)
    shutil.copy(records(run)[0], run / "chunk-000099999")
    with pytest.warns(CheckpointWarning, match="1 filed under a name that is no chunk of the layout"):
        again = chunkmap.run(ew.scaled, a, b, **options)
    assert again.stats.rejected == 1
    assert chunkmap.run(ew.scaled, a, b, **options).stats.rejected == 0  # removed: not noticed again (no warning)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["layout"]["chunk_size"] = 150
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(CheckpointWarning, match="made with another chunk layout"):
        edited = chunkmap.run(ew.scaled, a, b, **options)
    for result in (again, edited):
        ew.assert_matches_reference(result, ew.scaled, [a, b], mask=a <= -1e10)


def test_a_directory_where_a_record_should_be(ew, tmp_path):
    a, b = inputs((10, 10), seed=11)
    chunkmap.run(ew.scaled, a, b, chunks=30, checkpoint=tmp_path, scheduler="threads")
    target = records(only_run(tmp_path))[1]
    target.unlink()
    target.mkdir()
    with pytest.warns(CheckpointWarning, match="recorded 4 finished chunks but holds 3"), \
            pytest.raises(CheckpointError, match=rf"cannot write '.*/{target.name}'.*a directory is where a record should be; remove it"):
        chunkmap.run(ew.scaled, a, b, chunks=30, checkpoint=tmp_path, scheduler="threads")


FULL_DISK = """
import json, os, sys, numpy as np, chunkmap
from chunkmap.errors import CheckpointError
folder = sys.argv[1]
a = np.random.default_rng(0).random(20_000)
calls = []
def f(x):
    calls.append(x)
    return x * 2
try:
    chunkmap.run(f, a, chunks=1000, checkpoint=folder, scheduler="sync")
except CheckpointError as exc:
    (run,) = os.listdir(folder)
    names = os.listdir(os.path.join(folder, run))
    print(json.dumps({"calls": len(calls), "message": str(exc), "names": names}))
"""


def test_a_full_disk_stops_the_run_at_once_and_leaves_no_partial_file(tmp_path):
    """A real full file system: a 64 kB tmpfs mounted in a mount namespace of the test's own."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    command = f"mount -t tmpfs -o size=64k tmpfs {folder} && exec {sys.executable} -c \"$0\" {folder}"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", command, FULL_DISK],
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert report["calls"] < 20_000  # stopped at the first refused write
    assert "No space left on device; free some space there, or give run() another checkpoint= location" in report["message"]
    assert not [name for name in report["names"] if name.endswith(".tmp")]
    assert 0 < len([name for name in report["names"] if name.startswith("chunk-")]) < 20  # what fitted is kept


def test_a_run_folder_deleted_during_the_run_is_noticed(ew, tmp_path):
    a, b = inputs(seed=12)
    deleted = []

    def delete_once(done, total, failed):
        if done >= 800 and not deleted:
            deleted.append(done)
            shutil.rmtree(only_run(tmp_path), ignore_errors=True)

    options = dict(mask=a <= -1e10, chunks=100, checkpoint=tmp_path, scheduler="sync")
    with pytest.warns(CheckpointWarning, match="lost the lease or manifest of run .* they were written again"):
        first = chunkmap.run(ew.scaled, a, b, progress=delete_once, **options)
    with pytest.warns(CheckpointWarning, match="the store lost data"):
        again = chunkmap.run(ew.scaled, a, b, **options)
    assert 0 < again.stats.resumed < first.stats.computed
    for result in (first, again):
        ew.assert_matches_reference(result, ew.scaled, [a, b], mask=a <= -1e10)


class SlowDirectoryStore(DirectoryStore):
    """A directory whose writes take 0.2 s (a slow network file system)."""

    def put(self, key, data):
        time.sleep(0.2)
        super().put(key, data)


def test_writes_in_flight_end_before_run_returns_and_none_start_after(tmp_path):
    """On threads, an interrupt leaves other chunks finishing: run() returns only once their writes are
    done, and writes nothing after it released the lease."""
    a = np.arange(400.0)

    def interrupt(done, total, failed):
        if done >= 40:
            raise KeyboardInterrupt

    store = SlowDirectoryStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        chunkmap.run(abs, a, chunks=20, checkpoint=store, scheduler="threads", progress=interrupt)
    written = sorted(path.name for path in only_run(tmp_path).iterdir())
    time.sleep(0.6)
    assert sorted(path.name for path in only_run(tmp_path).iterdir()) == written
    assert not [name for name in written if name.endswith(".tmp")]
    again = chunkmap.run(abs, a, chunks=20, checkpoint=store, scheduler="threads")
    np.testing.assert_array_equal(again.values, a)
