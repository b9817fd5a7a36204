"""Shared fixtures: the test functions, pickled by value so any worker process can run them."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys

import cloudpickle
import pytest
from distributed import Client, LocalCluster

sys.path.insert(0, os.path.dirname(__file__))
import elementwise  # noqa: E402
from dask_processes import dask_command, die_with_parent, stop, wait_for_workers  # noqa: E402

from chunkmap.testing import free_port  # noqa: E402

cloudpickle.register_pickle_by_value(elementwise)


@pytest.fixture(scope="session")
def ew():
    """The module of test functions and the serial reference."""
    return elementwise


@pytest.fixture(scope="session")
def cluster_address(tmp_path_factory):
    """A real cluster on loopback: one `dask scheduler` and two single-threaded `dask worker`s."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask-logs")
    commands = {"scheduler": ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]}
    for i in range(2):
        commands[f"worker-{i}"] = ["worker", address, "--nthreads", "1", "--no-dashboard", "--host",
                                   "127.0.0.1", "--name", f"worker-{i}", "--local-directory", str(logs / f"w{i}")]
    # Like a user's own module in a real deployment, the test functions are importable there.
    pythonpath = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    with contextlib.ExitStack() as stack:
        processes = []
        for name, arguments in commands.items():
            log = stack.enter_context(open(logs / f"{name}.log", "wb"))
            processes.append(subprocess.Popen([*dask_command(), *arguments], stdout=log, stderr=log, env=env,
                                              preexec_fn=die_with_parent))
            stack.callback(stop, processes[-1])
        wait_for_workers(address, 2, logs)
        yield address


@pytest.fixture(autouse=True, scope="module")
def collect_garbage_per_module():
    """Collect garbage after each test module: a socket it leaked then fails its own last test with
    the ResourceWarning, not whichever later test the collector happened to run in (under load, an
    unclosed socket surfaced in tests/shm/test_array.py, whose code opens none)."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def local_cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            yield client


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_notebook(monkeypatch):
    """Execute ``notebooks/NAME`` headless (with extra environment variables); return (notebook, text).

    Fails on any cell error; ``text`` is everything the code cells printed.
    """
    import nbformat
    from nbclient import NotebookClient

    def run(name: str, **environment: str):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        notebook = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
        outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
        errors = [output for output in outputs if output.output_type == "error"]
        assert not errors, errors[0].get("evalue")
        return notebook, "".join(output.get("text", "") for output in outputs)

    return run
