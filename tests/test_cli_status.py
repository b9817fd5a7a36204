"""``chunkmap status``, ``failures`` and ``remove`` on real checkpoints; a result that cannot be written."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli_run import assert_matches_reference, inputs, run_cli  # noqa: F401 (inputs is a fixture)

import chunkmap
from chunkmap import cli, result_file
from chunkmap.checkpoint import decode_record, runs
from chunkmap.cli import demo, jobs
from chunkmap.errors import CheckpointWarning

STUB = "chunkmap.stub.slowlib"
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def main(capsys, *args) -> tuple[int, str, str]:
    """``chunkmap ARGS`` in this process: exit status, stdout, stderr."""
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def chunk_files(checkpoint: Path) -> list[Path]:
    return [path for path in checkpoint.glob("*/chunk-*") if not path.name.startswith(".")]


def csv_rows(failures) -> list[list[str]]:
    """What ``chunkmap failures --csv`` must write for ``failures`` after its header, as csv.reader reads it."""
    return [[*map(str, failure.coords), failure.kind, failure.type, failure.message] for failure in failures]


def awkward(a, b):
    """a + b, failing where a < 0.3 with messages a table must cut and CSV must quote."""
    if a < 0.3:
        raise ValueError(f'bad, "quoted" input {a!r}\nsecond line ü ' + "x" * 120)
    return a + b


def finished_run(ew, checkpoint: Path, func=None, scale: float = 1.0):
    a = np.linspace(0, 1, 300).reshape(15, 20) * scale
    return chunkmap.run(func or ew.add_or_boom, a, np.ones((15, 20)), mask=a > 0.95 * scale, skip=(ew.Boom, ValueError),
                        chunks=40, checkpoint=checkpoint, scheduler="threads", progress=False)


# --- status ---------------------------------------------------------------------------------------


def test_status_of_a_finished_run(ew, tmp_path, capsys):
    result = finished_run(ew, tmp_path / "ck")
    [run] = runs(tmp_path / "ck")
    status, out, err = main(capsys, "status", tmp_path / "ck")
    assert (status, err) == (0, "")
    unmasked = result.stats.elements - result.stats.masked
    chunks = -(-unmasked // 40)
    failed = result.stats.failed
    assert re.fullmatch(textwrap.dedent(f"""\
        chunkmap status: 1 run in {re.escape(str(tmp_path / 'ck'))}

        run       {run.run_id}
        function  elementwise.add_or_boom
        shape     15x20
        elements  {unmasked} / {unmasked} unmasked \\(100.0%\\)
        chunks    {chunks} / {chunks} \\(100.0%\\)
        failed    {failed} \\(exception: {failed}\\)
        started   {TIME}
        updated   {TIME}
        state     finished
        """), out), out
    assert 0 < failed < unmasked < 300


def test_status_shows_a_damaged_or_missing_manifest(ew, tmp_path, capsys):
    finished_run(ew, tmp_path / "ck")
    [run] = runs(tmp_path / "ck")
    manifest = tmp_path / "ck" / run.run_id / "manifest.json"
    manifest.write_text("{not json")
    status, out, _ = main(capsys, "status", tmp_path / "ck")
    assert status == 0
    assert re.search(r"^problem   the checkpoint manifest .*manifest.json is not valid JSON", out, re.M), out
    assert "elements  ?\n" in out and "chunks    8 stored / ?\n" in out
    status, _, err = main(capsys, "failures", tmp_path / "ck")
    assert status == 2 and err.startswith("chunkmap: error: the checkpoint manifest") and "chunkmap remove" in err
    manifest.unlink()
    status, out, _ = main(capsys, "status", tmp_path / "ck")
    assert status == 0 and "problem   the manifest is missing\n" in out and "function  ?\n" in out
    status, _, err = main(capsys, "failures", tmp_path / "ck", "--csv")
    assert status == 2 and "has lost its manifest, so the coordinates of its failures are unknown" in err


KILLED_RUN = """
import sys
import chunkmap
from chunkmap.cli.demo import make_inputs
from chunkmap.stub import set_cost
from chunkmap.stub import slowlib

set_cost(1_000_000)  # 1 ms per call: 50 ms per chunk of 50
a1, a2 = make_inputs(150)
chunkmap.run(slowlib.slow_computation, a2, a1, mask=a1 <= -1e10, skip=slowlib.InternalError, chunks=50,
             checkpoint=sys.argv[1], scheduler="processes")
print("finished", flush=True)
"""


def test_status_of_a_running_then_killed_run_and_remove(tmp_path, capsys):
    checkpoint = tmp_path / "ck"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(checkpoint)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(chunk_files(checkpoint)) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        status, out, _ = main(capsys, "status", checkpoint)
        assert status == 0
        assert f"state     running (pid {process.pid} on {socket.gethostname()})\n" in out, out
        [run_id] = re.findall(r"^run       (\w+)$", out, re.M)
        status, out, err = main(capsys, "remove", checkpoint, run_id[:8])
        assert (status, out) == (2, "")
        assert err == (f"chunkmap: error: run {run_id} in {checkpoint} is running (process {process.pid} on host "
                       f"{socket.gethostname()}); it was not removed. Stop it or let it finish, then remove it\n")
    finally:
        process.send_signal(signal.SIGKILL)
    assert "finished" not in process.communicate(timeout=60)[0], "the run must be killed half way"

    records = chunk_files(checkpoint)
    elements = sum(len(decode_record(path.read_bytes()).evaluation.status) for path in records)
    a1, _ = demo.make_inputs(150)
    unmasked = int((a1 > -1e10).sum())
    chunks = -(-unmasked // 50)
    assert 3 <= len(records) < chunks
    status, out, _ = main(capsys, "status", checkpoint)
    assert status == 0
    share = f"{np.floor(1000 * elements / unmasked) / 10:.1f}"
    assert f"\nelements  {elements:,} / {unmasked:,} unmasked ({share}%)\n" in out, out
    assert f"\nchunks    {len(records):,} / {chunks:,} (" in out
    assert "\nstate     stopped\n" in out
    assert re.search(rf"^updated   {TIME}$", out, re.M)
    status, out, _ = main(capsys, "failures", checkpoint, "--csv")  # what the stored chunks hold
    assert status == 0 and {tuple(row[2:4]) for row in list(csv.reader(io.StringIO(out)))[1:]} <= {
        ("exception", "InternalError")}

    status, out, err = main(capsys, "remove", checkpoint, run_id[:8])
    assert (status, out, err) == (0, f"removed run {run_id} from {checkpoint}\n", "")
    assert os.listdir(checkpoint) == []
    assert main(capsys, "status", checkpoint) == (0, f"chunkmap status: no runs in {checkpoint}\n", "")


# --- failures -------------------------------------------------------------------------------------


def test_failures_as_csv_are_complete_and_exact(ew, tmp_path, capsys):
    result = finished_run(ew, tmp_path / "ck", func=awkward)
    status, out, err = main(capsys, "failures", tmp_path / "ck", "--csv")
    assert (status, err) == (0, "")
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert rows[0] == ["x0", "x1", "kind", "type", "message"]
    expected = csv_rows(result.failures)
    assert rows[1:] == expected
    assert len(expected) == 90 and '"quoted"' in expected[0][-1] and "\n" in expected[0][-1]


def test_failures_table_is_aligned_and_cuts_long_messages(ew, tmp_path, capsys, monkeypatch):
    result = finished_run(ew, tmp_path / "ck", func=awkward)
    monkeypatch.setenv("COLUMNS", "80")
    status, out, err = main(capsys, "failures", tmp_path / "ck")
    assert (status, err) == (0, "")
    [run] = runs(tmp_path / "ck")
    title, header, *rows, footer = out.splitlines()
    assert title == (f"chunkmap failures: run {run.run_id} ({awkward.__module__}.awkward) in {tmp_path / 'ck'}: "
                     f"90 failed elements")
    assert header.split() == ["x0", "x1", "kind", "type", "message"]
    assert footer == "90 rows (exception: 90); --csv writes them with nothing cut"
    assert len(rows) == len(result.failures)
    assert all(len(line) < 80 for line in [header, *rows])
    assert len({line.index("exception") for line in rows}) == 1  # aligned
    first = result.failures[0]
    assert rows[0].startswith(f" {first.coords[0]}   {first.coords[1]}  exception  ValueError  bad, \"quoted\" input")
    assert re.search(r" second line ü x+\.\.\.$", rows[0]) and len(rows[0]) == 79  # one line, cut to the width


def test_failures_of_a_run_without_failures(ew, tmp_path, capsys):
    chunkmap.run(ew.scaled, np.arange(6.0), np.ones(6), checkpoint=tmp_path, scheduler="threads")
    status, out, _ = main(capsys, "failures", tmp_path)
    assert status == 0 and out.endswith(": 0 failed elements\n")
    assert main(capsys, "failures", tmp_path, "--csv") == (0, "x0,kind,type,message\r\n", "")


def test_runs_are_named_by_a_unique_prefix(ew, tmp_path, capsys):
    first = finished_run(ew, tmp_path)
    with pytest.warns(CheckpointWarning, match="holds 1 other run"):
        second = finished_run(ew, tmp_path, scale=0.5)
    ids = [run.run_id for run in runs(tmp_path)]  # oldest first
    length = next(n for n in range(1, 25) if len({run_id[:n] for run_id in ids}) == 2)
    status, out, _ = main(capsys, "status", tmp_path)
    assert status == 0 and out.startswith(f"chunkmap status: 2 runs in {tmp_path}\n")
    assert out.count("state     finished") == 2
    for run_id, result in zip(ids, (first, second)):
        status, out, err = main(capsys, "failures", tmp_path, "--run", run_id[:length], "--csv")
        assert (status, err) == (0, "")
        assert list(csv.reader(io.StringIO(out)))[1:] == csv_rows(result.failures)
    status, _, err = main(capsys, "failures", tmp_path)
    assert status == 2 and f"holds 2 runs ({', '.join(sorted(ids))}); name one" in err and "--run ID" in err
    status, _, err = main(capsys, "failures", tmp_path, "--run", "")
    assert status == 2 and "holds several run(s) starting with ''" in err
    status, _, err = main(capsys, "failures", tmp_path, "--run", "zzz")
    assert status == 2 and err.startswith(f"chunkmap: error: the checkpoint {tmp_path} holds no run(s) starting with "
                                          f"'zzz'; its runs are: {', '.join(sorted(ids))}")

    status, out, err = main(capsys, "remove", tmp_path, "zzz", ids[1][:length])  # removes what it can
    assert status == 2 and "starting with 'zzz'" in err
    assert out == f"removed run {ids[1]} from {tmp_path}\n"
    assert [run.run_id for run in runs(tmp_path)] == [ids[0]]


# --- locations ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["failures"], ["failures", "--csv"], ["remove", "abc"]])
def test_a_missing_location_or_a_file_is_an_error(tmp_path, capsys, command):
    name, *rest = command
    status, out, err = main(capsys, name, tmp_path / "nope", *rest)
    assert (status, out) == (2, "")
    assert err == (f"chunkmap: error: there is no checkpoint directory at {tmp_path / 'nope'} (the path does not "
                   f"exist); expected the directory given to run(checkpoint=...) or chunkmap run --checkpoint, or a "
                   f"redis:// URL\n")
    (tmp_path / "file").write_text("")
    status, _, err = main(capsys, name, tmp_path / "file", *rest)
    assert status == 2 and f"there is no checkpoint directory at {tmp_path / 'file'} (it is a file); expected" in err


def test_an_empty_location(tmp_path, capsys):
    assert main(capsys, "status", tmp_path) == (0, f"chunkmap status: no runs in {tmp_path}\n", "")
    status, _, err = main(capsys, "failures", tmp_path)
    assert status == 2 and f"the checkpoint {tmp_path} holds no runs" in err
    status, _, err = main(capsys, "remove", tmp_path, "abc")
    assert status == 2 and "holds no runs" in err


def test_a_reader_that_stops_early_is_no_error(ew, tmp_path):
    chunkmap.run(ew.always_boom, np.zeros(20_000), skip=ew.Boom, checkpoint=tmp_path, chunks=5000, scheduler="threads")
    process = subprocess.Popen([sys.executable, "-m", "chunkmap", "failures", str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("chunkmap failures: run ")
    process.stdout.close()  # as `| head -1` does, long before 20,000 rows are written
    with process.stderr:
        assert process.stderr.read() == ""
    assert process.wait(timeout=60) == 0


# --- chunkmap run: a result that cannot be written ------------------------------------------------


def assert_kept_and_rerun_writes_it(completed, tmp_path, args, inputs, reason):
    """The failed write's message and leftovers, then the same command again: all resumed, the same result."""
    a1, a2 = inputs
    output = args[args.index("-o") + 1]
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr == (
        f"chunkmap: error: cannot write the result {output!r}: {reason}; every finished chunk is kept in the "
        f"checkpoint ck: fix the cause and run the same command again with --checkpoint ck, which writes the "
        f"result from the checkpoint without computing anything again\n")
    assert not [path for path in tmp_path.rglob("*.tmp")]
    [run] = runs(tmp_path / "ck")
    assert run.state == "finished" and run.chunks_done == run.chunks
    os.makedirs(tmp_path / os.path.dirname(output), exist_ok=True)  # the fix

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    unmasked = int((a1 > -1e10).sum())
    assert f"resumed   {unmasked:>14,}  from the checkpoint ck" in again.stdout
    result = result_file.load_result(tmp_path / output)
    assert_matches_reference(result, a2, a1)
    plain = jobs.run_job(f"{STUB}:slow_computation", [tmp_path / "a2.npy", tmp_path / "a1.npy"], mask="in2 <= -1e10",
                         skip=[f"{STUB}:InternalError"], scheduler="sync")
    np.testing.assert_array_equal(result.flat_index, plain.flat_index)
    np.testing.assert_array_equal(result.values, plain.values)
    assert list(result.failures) == list(plain.failures)


def test_a_result_whose_folder_vanished_is_kept_in_the_checkpoint(tmp_path, inputs):
    (tmp_path / "vanishing.py").write_text(textwrap.dedent(f"""
        import shutil
        from {STUB} import slow_computation

        def slow(x, y):
            shutil.rmtree("out", ignore_errors=True)  # the output folder is deleted during the run
            return slow_computation(x, y)
    """))
    (tmp_path / "out").mkdir()
    args = ["vanishing:slow", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10", "--skip", f"{STUB}:InternalError",
            "--scheduler", "threads", "--chunks", "50", "--checkpoint", "ck", "-o", "out/result.npz"]
    completed = run_cli(*args, cwd=tmp_path)
    assert_kept_and_rerun_writes_it(completed, tmp_path, args, inputs, "No such file or directory")


def test_a_result_on_a_full_disk_is_kept_in_the_checkpoint(tmp_path, inputs):
    """A real full file system for the result only: a 16 kB tmpfs mounted in a mount namespace of its own."""
    (tmp_path / "small").mkdir()
    args = [f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10", "--skip",
            f"{STUB}:InternalError", "--scheduler", "threads", "--chunks", "50", "--checkpoint", "ck",
            "-o", "small/result.npz"]
    command = 'mount -t tmpfs -o size=16k tmpfs small && exec "$0" -m chunkmap run "$@"'
    completed = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", command,
                                sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert_kept_and_rerun_writes_it(completed, tmp_path, args, inputs, "No space left on device")
