"""``chunkmap run``: jobs from .npy files to an .npz, end to end in subprocesses, and the .npz format."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import numpy as np
import pytest

from chunkmap import cli, result_file, testing
from chunkmap.cli import inputs as cli_inputs
from chunkmap.cli import jobs, names
from chunkmap.cli.demo import make_inputs
from chunkmap.errors import FormatError, MissingFileError, NotCallableError, NpyFormatError, OptionError, ShapeError
from chunkmap.result import Failures, Result, Stats, unravel
from chunkmap.stub import slowlib

STUB = "chunkmap.stub.slowlib"


def interrupt_when(process: subprocess.Popen, ready: Callable[[], bool], wait: float = 60) -> str:
    """Send Ctrl-C (SIGINT) to ``process`` once ``ready()`` (or it ended, or ``wait`` s passed); its stderr."""
    deadline = time.monotonic() + wait
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    return stderr

def run_cli(*args: str, cwd=None, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chunkmap", "run", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def inputs(tmp_path):
    """The seed's inputs as .npy files: a1 with ~10% sentinels, a2."""
    a1, a2 = make_inputs((30, 40), seed=7)
    np.save(tmp_path / "a1.npy", a1)
    np.save(tmp_path / "a2.npy", a2)
    return a1, a2


def seed_reference(a2, a1):
    """The seed's loop: slow_computation(a2, a1) where not a1 <= -1e10, InternalError skipped."""
    return testing.serial_reference(slowlib.slow_computation, a2, a1, mask=a1 <= -1e10, skip=slowlib.InternalError)


def assert_matches_reference(result: Result, a2, a1):
    """``result`` is the seed's job over ``a2, a1``, element for element, with some InternalErrors."""
    testing.assert_matches_reference(result, slowlib.slow_computation, a2, a1, mask=a1 <= -1e10,
                                     skip=slowlib.InternalError)
    assert len(result.failures) > 0


# --- end to end --------------------------------------------------------------------------------


def test_the_seed_job_from_files_equals_the_serial_loop(tmp_path, inputs):
    a1, a2 = inputs
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10",
                        "--skip", f"{STUB}:InternalError", "--scheduler", "threads", "-o", "out.npz", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    result = result_file.load_result(tmp_path / "out.npz")
    assert_matches_reference(result, a2, a1)
    assert completed.stdout.splitlines()[0] == (
        f"chunkmap run: {STUB}:slow_computation over 2 inputs of shape 30x40, scheduler=threads"
    )
    assert f"computed  {result.stats.computed:>14,}" in completed.stdout
    assert "result    out.npz" in completed.stdout
    with np.load(tmp_path / "out.npz") as data:  # readable without chunkmap, without pickle
        xs, ys = data["coords"]
        np.testing.assert_array_equal(a1[xs, ys] > -1e10, True)
        assert json.loads(str(data["job"])) == {
            "function": f"{STUB}:slow_computation", "inputs": ["a2.npy", "a1.npy"], "mask": "in2 <= -1e10",
            "skip": [f"{STUB}:InternalError"], "kwargs": {},
        }
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_a_users_module_on_pythonpath_runs_on_worker_processes(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "userlib.py").write_text(textwrap.dedent("""
        class Negative(Exception):
            pass

        def weighted(x, y, z):
            if x < 0:
                raise Negative(f"x={x}")
            return x * 10 + y - z
    """))
    x = np.arange(-3, 21, dtype=np.int64).reshape(4, 6)
    y = np.linspace(0, 1, 6)  # broadcast along the rows
    z = np.full((4, 6), 0.5, dtype=np.float32)
    for name, array in (("x", x), ("y", y), ("z", z)):
        np.save(tmp_path / f"{name}.npy", array)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    completed = run_cli("userlib:weighted", "x.npy", "y.npy", "z.npy", "--mask", "in1 == 7 | in2 > 0.9",
                        "--skip", "userlib:Negative", "--scheduler", "processes", "--chunks", "5",
                        "-o", tmp_path / "out.npz", cwd=tmp_path, env=env)
    assert completed.returncode == 0, completed.stderr
    result = result_file.load_result(tmp_path / "out.npz")
    xb, yb, zb = np.broadcast_arrays(x, y, z)
    keep = ~((xb == 7) | (yb > 0.9)) & (xb >= 0)
    np.testing.assert_array_equal(result.flat_index, np.flatnonzero(keep))
    np.testing.assert_allclose(result.values, (xb * 10 + yb - zb.astype(float))[keep])
    np.testing.assert_array_equal(result.failures.flat_index, np.flatnonzero((xb < 0) & ~(yb > 0.9)))
    assert set(result.failures.types.tolist()) == {"Negative"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuchmodule:f", "a1.npy"], "cannot import the function 'nosuchmodule:f': module 'nosuchmodule' is not found"),
        ([f"{STUB}:slow_computatoin", "a1.npy"], f"module '{STUB}' has no attribute 'slow_computatoin'"),
        ([f"{STUB}", "a1.npy"], "must be given as MODULE:NAME"),
        (["os:sep", "a1.npy"], "'os:sep' is a str ('/'), not a function"),
        ([f"{STUB}:slow_computation", "a1.npy", "--skip", "os:sep"], "not an exception class"),
        ([f"{STUB}:slow_computation", "a1.npy", "--skip", "NoSuchError"], "the exception must be given as MODULE:NAME"),
        ([f"{STUB}:slow_computation", "a2.npy", "missing.npy"], "input file 'missing.npy' does not exist"),
        ([f"{STUB}:slow_computation", "a2.npy", "notes.txt"], "'notes.txt' is not a readable .npy file"),
        ([f"{STUB}:slow_computation", "a2.npy", "both.npz"], "'both.npz' is an .npz archive"),
        ([f"{STUB}:slow_computation", "a2.npy", "short.npy"],
         "do not broadcast to one shape: in1='a2.npy' (30, 40), in2='short.npy' (7,)"),
        ([f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10 | __import__('os')"],
         "unexpected name '__import__' at column 16 of the mask"),
        ([f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in3 > 0"], "'in3' at column 1 of the mask is out"),
        ([f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in1.real > 0"], "unexpected '.' at column 4"),
        ([f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--scheduler", "gpu"], "unknown scheduler 'gpu'"),
        ([f"{STUB}:slow_computation", "a2.npy", "--chunks", "0"], "expected 'auto' or a positive integer; got 0"),
        ([f"{STUB}:slow_computation", "a2.npy", "--timeout", "-1"], "expected a positive number of seconds; got -1"),
        ([f"{STUB}:slow_computation"], "the following arguments are required: INPUT.npy"),
    ],
)
def test_bad_jobs_exit_2_with_a_clear_message(tmp_path, inputs, args, message):
    (tmp_path / "notes.txt").write_text("not an array")
    np.savez(tmp_path / "both.npz", a=inputs[0], b=inputs[1])
    np.save(tmp_path / "short.npy", np.zeros(7))
    completed = run_cli(*args, "-o", "out.npz", cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out.npz").exists()


def test_an_unlisted_exception_fails_the_job_with_exit_1(tmp_path, inputs):
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "-o", "out.npz", cwd=tmp_path)
    assert completed.returncode == 1, completed.stderr
    assert "func raised InternalError" in completed.stderr
    assert f"pass --skip {STUB}:InternalError to record such elements and go on" in completed.stderr
    assert "skip=" not in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out.npz").exists()


def test_an_unwritable_output_fails_before_the_run(tmp_path, inputs):
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "-o", tmp_path / "no" / "such" / "out.npz", cwd=tmp_path)
    assert completed.returncode == 2
    assert "chunkmap: error: the output folder" in completed.stderr and "does not exist" in completed.stderr


def test_ctrl_c_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path, inputs):
    a1, a2 = inputs
    (tmp_path / "napping.py").write_text(textwrap.dedent("""
        import time
        from chunkmap.stub import slowlib

        def slow(x, y):
            time.sleep(0.004)
            return slowlib.slow_computation(x, y)
    """))
    args = [sys.executable, "-m", "chunkmap", "run", "napping:slow", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10",
            "--skip", f"{STUB}:InternalError", "--chunks", "40", "--checkpoint", "ck", "-o", "out.npz"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = interrupt_when(process, lambda: len(list((tmp_path / "ck").rglob("chunk-*"))) >= 3)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "chunkmap: interrupted; finished chunks are kept in the checkpoint ck"
    assert not (tmp_path / "out.npz").exists()
    kept = len(list((tmp_path / "ck").rglob("chunk-*")))
    assert 3 <= kept < int((a1 > -1e10).sum()) // 40  # stopped half way

    completed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    result = result_file.load_result(tmp_path / "out.npz")
    assert_matches_reference(result, a2, a1)
    assert result.stats.resumed >= kept * 40 - 40
    assert f"resumed   {result.stats.resumed:>14,}  from the checkpoint ck" in completed.stdout


def test_timeout_records_a_hung_call(tmp_path, inputs):
    a1, a2 = inputs
    hung = a2.copy()
    hung[2, 3] = slowlib.HANG_VALUE
    a1[2, 3] = 0.5
    np.save(tmp_path / "hung.npy", hung)
    np.save(tmp_path / "a1.npy", a1)
    completed = run_cli(f"{STUB}:slow_computation", "hung.npy", "a1.npy", "--mask", "in2 <= -1e10", "--skip",
                        f"{STUB}:InternalError", "--timeout", "1", "--scheduler", "processes", "-o", "out.npz",
                        cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    result = result_file.load_result(tmp_path / "out.npz")
    timeouts = [failure for failure in result.failures if failure.kind == "timeout"]
    assert [failure.coords for failure in timeouts] == [(2, 3)]
    expected = seed_reference(a2, a1)  # a2 without the hang trigger
    computed = np.ravel_multi_index(expected.coords, a1.shape)
    others = computed != np.ravel_multi_index((2, 3), a1.shape)
    np.testing.assert_array_equal(result.flat_index, computed[others])
    np.testing.assert_array_equal(result.values, expected.values[others])


@pytest.mark.parametrize("flag", ["--progress", "--no-progress"])
def test_progress_bar_on_stderr_only_when_asked(tmp_path, inputs, flag):
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10", "--skip",
                        f"{STUB}:InternalError", "--scheduler", "threads", flag, "-o", "out.npz", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    unmasked = int((inputs[0] > -1e10).sum())
    if flag == "--progress":
        assert "100%" in completed.stderr and f"{unmasked / 1000:.2f}k/{unmasked / 1000:.2f}k" in completed.stderr
    else:
        assert completed.stderr == ""


def test_ctrl_c_exits_130(tmp_path):
    (tmp_path / "sleepy.py").write_text(textwrap.dedent("""
        import os, time

        def nap(x):
            if not os.path.exists("started"):
                open("started", "w").close()
            time.sleep(0.01)
            return x
    """))
    np.save(tmp_path / "a.npy", np.zeros(10_000))  # 100 s of naps
    process = subprocess.Popen([sys.executable, "-m", "chunkmap", "run", "sleepy:nap", "a.npy", "--scheduler", "sync",
                                "-o", "out.npz"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = interrupt_when(process, (tmp_path / "started").exists)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "chunkmap: interrupted"
    assert not (tmp_path / "out.npz").exists()


# --- in process ------------------------------------------------------------------------------


def test_main_reports_an_interrupt_and_the_checkpoint(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "run_job", interrupted)
    assert cli.main(["run", "m:f", "a.npy", "-o", str(tmp_path / "o.npz"), "--checkpoint", "ck"]) == 130
    assert capsys.readouterr().err == "chunkmap: interrupted; finished chunks are kept in the checkpoint ck\n"
    assert cli.main(["run", "m:f", "a.npy", "-o", str(tmp_path / "o.npz")]) == 130
    assert capsys.readouterr().err == "chunkmap: interrupted\n"


def test_main_passes_long_run_options_only_when_given(monkeypatch, capsys, tmp_path):
    seen = []

    def fake_run_job(function, inputs, **options):
        seen.append(options)
        raise OptionError("stop here")

    monkeypatch.setattr(jobs, "run_job", fake_run_job)
    base = ["run", "m:f", "a.npy", "-o", "o.npz"]
    assert cli.main(base) == 2
    assert cli.main([*base, "--checkpoint", "ck", "--timeout", "2.5", "--no-progress"]) == 2
    assert cli.main([*base, "--progress"]) == 2
    assert capsys.readouterr().err.count("chunkmap: error: stop here") == 3
    assert [{k: v for k, v in options.items() if k in jobs.OPTIONAL_RUN_OPTIONS} for options in seen] == [
        {}, {"checkpoint": "ck", "timeout": 2.5, "progress": False}, {"progress": True}]


def test_options_run_does_not_accept_are_refused_before_the_run(tmp_path, inputs, monkeypatch):
    def older_run(func, *arrays, mask=None, skip=(), chunks="auto", scheduler=None, client=None, kwargs=None):
        raise AssertionError("must not be called")

    monkeypatch.setattr(jobs.core, "run", older_run)
    for option, value in (("checkpoint", "ck"), ("timeout", 5.0), ("progress", False)):
        with pytest.raises(OptionError, match=f"the {option}= option needs a chunkmap.run"):
            jobs.run_job(f"{STUB}:slow_computation", [tmp_path / "a1.npy"], **{option: value})


def test_run_job_in_process(tmp_path, inputs):
    a1, a2 = inputs
    result = jobs.run_job(f"{STUB}:slow_computation", [tmp_path / "a2.npy", tmp_path / "a1.npy"],
                          mask="in2 <= -1e10", skip=["chunkmap.stub.slowlib:InternalError"], scheduler="sync",
                          output=tmp_path / "out.npz")
    assert_matches_reference(result, a2, a1)
    assert_same_result(result_file.load_result(tmp_path / "out.npz"), result)


def test_inputs_reach_run_as_paths_and_broadcast_ones_as_arrays(tmp_path, monkeypatch):
    table = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "a.npy", table)
    np.save(tmp_path / "f.npy", np.asfortranarray(-table))
    np.save(tmp_path / "row.npy", np.array([0.5, 20.0, 1.5, 30.0]))
    np.save(tmp_path / "e.npy", np.zeros((0, 4)))
    handed = []
    real_run = jobs.core.run

    @functools.wraps(real_run)  # the same signature: run_job checks the options run accepts
    def recording_run(func, *arrays, **options):
        handed.append(arrays)
        return real_run(func, *arrays, **options)

    monkeypatch.setattr(jobs.core, "run", recording_run)
    monkeypatch.chdir(tmp_path)
    result = jobs.run_job("builtins:max", ["a.npy", tmp_path / "f.npy", tmp_path / "row.npy"], scheduler="sync")
    a, f, row = handed[0]
    assert (a, f) == (str(tmp_path / "a.npy"), str(tmp_path / "f.npy"))  # absolute: workers elsewhere find them
    np.testing.assert_array_equal(row, [0.5, 20.0, 1.5, 30.0])  # broadcast along the table: read whole
    expected = np.maximum(np.maximum(table, -table), [0.5, 20.0, 1.5, 30.0])
    np.testing.assert_array_equal(result.flat_index, np.arange(12))
    np.testing.assert_array_equal(result.values, expected.ravel())
    empty = jobs.run_job("builtins:abs", [tmp_path / "e.npy"], scheduler="sync")
    assert handed[1] == (str(tmp_path / "e.npy"),) and empty.shape == (0, 4) and len(empty.values) == 0


def test_job_inputs_errors(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{}], dtype=object), allow_pickle=True)
    with pytest.raises(MissingFileError, match="does not exist"):
        cli_inputs.job_inputs([tmp_path / "nope.npy"])
    with pytest.raises(NpyFormatError, match="holds Python objects"):
        cli_inputs.job_inputs([tmp_path / "obj.npy"])
    with pytest.raises(NpyFormatError, match="is a directory"):
        cli_inputs.job_inputs([tmp_path])
    with pytest.raises(OptionError, match="at least one input"):
        cli_inputs.job_inputs([])
    np.save(tmp_path / "a.npy", np.zeros(3))
    np.save(tmp_path / "b.npy", np.zeros(4))
    with pytest.raises(ShapeError, match=r"in1=.*a\.npy' \(3,\), in2=.*b\.npy' \(4,\)"):
        cli_inputs.job_inputs([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_resolve():
    assert names.resolve_function(f"{STUB}:slow_computation") is slowlib.slow_computation
    assert names.resolve_function("chunkmap.result:Result.to_dense") is Result.to_dense
    assert names.resolve_exception("ValueError") is ValueError
    assert names.resolve_exception("builtins:KeyboardInterrupt") is KeyboardInterrupt
    with pytest.raises(OptionError, match=r"module 'chunkmap.result:Result' has no attribute 'nope'"):
        names.resolve("chunkmap.result:Result.nope")
    with pytest.raises(NotCallableError, match="not a function"):
        names.resolve_function("chunkmap:__version__")
    with pytest.raises(OptionError, match="not an exception class"):
        names.resolve_exception("builtins:len")
    for spec in (":f", "m:", "mf", ""):
        with pytest.raises(OptionError, match="MODULE:NAME"):
            names.resolve(spec)


# --- the .npz format -------------------------------------------------------------------------


def make_result(shape, flat_index, values, failures, stats=None) -> Result:
    return Result(shape, unravel(np.asarray(flat_index, np.int64), shape), values, failures, stats)


def assert_same_result(got: Result, expected: Result):
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.flat_index, expected.flat_index)
    assert len(got.coords) == len(expected.coords)
    for axis, expected_axis in zip(got.coords, expected.coords):
        np.testing.assert_array_equal(axis, expected_axis)
    assert got.values.dtype == expected.values.dtype
    np.testing.assert_array_equal(got.values, expected.values)
    assert list(got.failures) == list(expected.failures)
    assert got.stats == expected.stats


STATS = Stats(elements=24, masked=3, computed=2, failed=2, wall_time=1.5, rate=2.67)


@pytest.mark.parametrize(
    "result",
    [
        make_result((4, 6), np.array([0, 23]), np.array([1.5, -2.0]),
               Failures((4, 6), [5, 7], ["InternalError", "Crash"], ["code 1", "signal 11"], ["exception", "crash"]),
               STATS),
        make_result((2, 3, 4), np.array([1, 2, 22]), np.array([1, 2, 3], dtype=np.int64),
               Failures((2, 3, 4), [], [], []), None),
        make_result((5,), np.array([4]), np.array([True]), Failures((5,), [0], ["E"], ["ünïcode ✓"], ["timeout"]), STATS),
        make_result((3,), np.array([0, 1]), np.array([1 + 2j, 3j]), Failures((3,), [], [], []), STATS),
        make_result((0, 3), np.empty(0, np.int64), np.empty(0), Failures((0, 3), [], [], []), STATS),
        make_result((), np.array([0]), np.array([7.0]), Failures((), [], [], []), STATS),
    ],
    ids=["2d-failures", "3d-int-no-stats", "1d-bool-unicode", "complex", "empty", "0d"],
)
def test_results_round_trip_through_npz(tmp_path, result):
    result_file.save_result(result, tmp_path / "r.npz")
    assert_same_result(result_file.load_result(tmp_path / "r.npz"), result)
    with np.load(tmp_path / "r.npz") as data:
        assert data["coords"].shape == (len(result.shape), len(result.values))
        assert data["failure_coords"].shape == (len(result.shape), len(result.failures))
        assert str(data["format"]) == result_file.FORMAT


def test_string_values_are_stored_as_unicode_and_objects_are_refused(tmp_path):
    strings = make_result((2,), np.array([0, 1]), np.array(["a", "bc"], dtype=object), Failures((2,), [], [], []))
    result_file.save_result(strings, tmp_path / "s.npz")
    assert result_file.load_result(tmp_path / "s.npz").values.tolist() == ["a", "bc"]
    objects = make_result((2,), np.array([0, 1]), np.array([None, (1, 2)], dtype=object), Failures((2,), [], [], []))
    with pytest.raises(FormatError, match=r"object dtype \(func returned NoneType, tuple\)"):
        result_file.save_result(objects, tmp_path / "s.npz")
    assert result_file.load_result(tmp_path / "s.npz").values.tolist() == ["a", "bc"]  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["s.npz"]


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    old = make_result((1,), np.array([0]), np.array([1.0]), Failures((1,), [], [], []), STATS)
    result_file.save_result(old, tmp_path / "r.npz")

    def broken_savez(file, **entries):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        result_file.save_result(make_result((1,), np.array([0]), np.array([2.0]), Failures((1,), [], [], [])), tmp_path / "r.npz")
    monkeypatch.undo()
    assert_same_result(result_file.load_result(tmp_path / "r.npz"), old)
    assert os.listdir(tmp_path) == ["r.npz"]


def test_load_result_errors(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        result_file.load_result(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", values=np.zeros(3))
    with pytest.raises(FormatError, match="not a chunkmap result"):
        result_file.load_result(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(FormatError, match="not an .npz result"):
        result_file.load_result(tmp_path / "junk.npz")


def test_stats_fields_added_or_removed_later_still_load(tmp_path):
    result_file.save_result(make_result((1,), np.array([0]), np.array([1.0]), Failures((1,), [], [], []), STATS), tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as data:
        entries = dict(data)
    stats = json.loads(str(entries["stats"]))
    stats["retries"] = 4
    del stats["rate"]
    entries["stats"] = np.array(json.dumps(stats))
    np.savez(tmp_path / "r.npz", **entries)
    loaded = result_file.load_result(tmp_path / "r.npz").stats
    assert loaded.elements == 24 and loaded.rate == 0


def test_the_installed_command_imports_from_the_current_directory(tmp_path):
    import shutil

    script = shutil.which("chunkmap", path=os.path.dirname(sys.executable)) or shutil.which("chunkmap")
    (tmp_path / "here.py").write_text("def triple(x):\n    return 3 * x\n")
    np.save(tmp_path / "x.npy", np.arange(6.0).reshape(2, 3))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([script, "run", "here:triple", "x.npy", "-o", "out.npz", "--scheduler", "processes"],
                               capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert result_file.load_result(tmp_path / "out.npz").values.tolist() == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0]
