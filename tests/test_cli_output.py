"""``chunkmap run ... -o STORE.zarr``: a job written into a zarr store (``output=``), resumed after Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import zarr

from test_cli_run import STUB, inputs, interrupt_when, run_cli, seed_reference  # noqa: F401 (inputs: a fixture)
from test_output_store import dense_store


def assert_store_is_the_seed_job(store, a2, a1) -> None:
    """The store holds the serial loop's values and status codes, read with zarr alone."""
    values, status = dense_store(seed_reference(a2, a1))
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["values"][...], values)
    np.testing.assert_array_equal(group["status"][...], status)


def test_the_seed_job_into_a_zarr_store_equals_the_serial_loop(tmp_path, inputs):  # noqa: F811
    a1, a2 = inputs
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10",
                        "--skip", f"{STUB}:InternalError", "--scheduler", "threads", "-o", "out.zarr", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert_store_is_the_seed_job(tmp_path / "out.zarr", a2, a1)
    assert "result    out.zarr" in completed.stdout and not list(tmp_path.glob("*.npz"))
    failed = len(seed_reference(a2, a1).failures)
    assert f"failed    {failed:>14,}" in completed.stdout
    again = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10",
                    "--skip", f"{STUB}:InternalError", "--scheduler", "threads", "-o", "out.zarr", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"resumed   {int((a1 > -1e10).sum()):>14,}  from the store out.zarr" in again.stdout


def test_ctrl_c_keeps_the_finished_boxes_and_the_same_command_resumes(tmp_path, inputs):  # noqa: F811
    a1, a2 = inputs
    (tmp_path / "napping.py").write_text(textwrap.dedent("""
        import time
        from chunkmap.stub import slowlib

        def slow(x, y):
            time.sleep(0.01)
            return slowlib.slow_computation(x, y)
    """))
    args = [sys.executable, "-m", "chunkmap", "run", "napping:slow", "a2.npy", "a1.npy", "--mask", "in2 <= -1e10",
            "--skip", f"{STUB}:InternalError", "--scheduler", "threads", "--chunks", "40", "-o", "out.zarr"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    boxes = tmp_path / "out.zarr" / "boxes"
    stderr = interrupt_when(process, lambda: any(path.is_file() for path in boxes.glob("c/**/*")))
    assert process.returncode == 130, stderr
    assert stderr.strip() == "chunkmap: interrupted; finished boxes are kept in the store out.zarr: the same command resumes"
    done = np.asarray(zarr.open_group(tmp_path / "out.zarr", mode="r")["boxes"][...])[:, 0] >= 0
    assert 0 < done.sum() < len(done)  # stopped half way

    completed = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "resumed" in completed.stdout and "from the store out.zarr" in completed.stdout
    assert_store_is_the_seed_job(tmp_path / "out.zarr", a2, a1)


def test_a_store_with_checkpoint_or_a_file_in_its_place_is_refused_before_the_run(tmp_path, inputs):  # noqa: F811
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "--checkpoint", "ck", "-o", "out.zarr",
                        cwd=tmp_path)
    assert completed.returncode == 2
    assert "the store is the job's checkpoint" in completed.stderr and "leave out --checkpoint" in completed.stderr
    (tmp_path / "file.zarr").write_text("not a store")
    completed = run_cli(f"{STUB}:slow_computation", "a2.npy", "a1.npy", "-o", "file.zarr", cwd=tmp_path)
    assert completed.returncode == 2 and "is a file; expected a zarr store's folder" in completed.stderr
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "ck").exists()
