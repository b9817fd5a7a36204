"""Clusters: the user's modules reach workers that cannot import them, tasks carry the function's name, the dashboard.

The modules are written into a folder that only this process has on ``sys.path``; the workers
are real `dask scheduler` / `dask worker` processes started from the command line
(conftest's ``cluster_address``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import subprocess
import sys
import textwrap
import urllib.request
import uuid

import numpy as np
import pytest
from dask.callbacks import Callback
from dask.utils import key_split
from distributed import Client, get_task_stream

import chunkmap
from chunkmap.cli.demo import make_inputs
from chunkmap.errors import ChunkmapError, WorkerImportError
from chunkmap.shipping import own_source
from chunkmap.testing import assert_matches_reference, free_port
from dask_processes import dask_command, die_with_parent, stop, wait_for_workers

HELPER = """
def bump(x):
    return x + 1.0
"""

PRICING = """
import math

from {helper} import bump

OFFSET = 0.5


class Boom(Exception):
    pass


def price_call(a, b):
    if math.floor(a * 1000) % 7 == 0:
        raise Boom(f"bad {{a!r}}")
    return bump(a) * b + OFFSET
"""


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """``write(stem, source)``: a module of the user's in a folder only this process imports from.

    The folder is on ``sys.path`` during the test; the modules imported from it are forgotten after.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(stem: str, source: str):
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield write
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def installed_package(folder, stem: str, version: str, source: str) -> str:
    """A package installed into ``folder`` (with its dist-info), as pip would; its name."""
    name = f"{stem}_{uuid.uuid4().hex[:8]}"
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text(source)
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    importlib.invalidate_caches()
    return name


@pytest.fixture
def client(cluster_address):
    with Client(cluster_address, timeout="10s", set_as_default=False) as client:
        yield client


def workers_find(client, name: str) -> set[bool]:
    return set(client.run(lambda: importlib.util.find_spec(name) is not None).values())


def test_own_modules_the_workers_cannot_import_go_by_value(user_modules, client):
    helper = user_modules("helper", HELPER)
    pricing = user_modules("pricing", PRICING.format(helper=helper.__name__))
    pricing.OFFSET = 2.5  # the session's state of the module travels with it
    assert workers_find(client, pricing.__name__) == workers_find(client, helper.__name__) == {False}
    a, b = make_inputs((30, 40), seed=21)
    mask = a <= -1e10
    result = chunkmap.run(pricing.price_call, a, b, mask=mask, skip=pricing.Boom, chunks=150, client=client)
    assert_matches_reference(result, pricing.price_call, a, b, mask=mask, skip=pricing.Boom)
    assert len(result.failures) > 0 and result.values.max() > 2.5
    assert workers_find(client, pricing.__name__) == {False}  # shipped, not installed


def test_own_modules_are_told_from_installed_ones(user_modules):
    import numpy

    assert own_source(user_modules("mine", HELPER))
    assert not own_source(numpy) and not own_source(importlib) and not own_source(chunkmap)


def test_an_installed_package_missing_on_the_workers_is_an_error_naming_the_fix(tmp_path, client, user_modules):
    """A package installed into a folder only this process sees: chunkmap does not ship it."""
    package = installed_package(tmp_path, "quantlib", "1.4", "def discount(x, y):\n    return x * y\n")
    library = importlib.import_module(package)
    assert not own_source(library)
    with get_task_stream(client=client) as stream:
        with pytest.raises(WorkerImportError) as raised:
            chunkmap.run(library.discount, np.arange(6.0), np.arange(6.0), client=client)
    message = str(raised.value)
    assert f"the dask workers {', '.join(sorted(client.nthreads()))} cannot import module {package!r}" in message
    assert "for function discount; chunkmap ships only your own .py modules by value" in message
    assert f"installed here from {package} 1.4" in message
    assert f"pip install {package}==1.4" in message and "client.upload_file('path/to/module.py')" in message
    assert raised.value.name == package
    assert isinstance(raised.value, ImportError) and isinstance(raised.value, ChunkmapError)
    assert stream.data == []  # raised before any task ran


def test_an_own_module_using_a_missing_package_names_the_package(tmp_path, client, user_modules):
    package = installed_package(tmp_path, "curves", "2.0", "RATE = 0.25\n")
    wrapper = user_modules("wrapper", f"import {package}\n\n\ndef value(x):\n    return x * {package}.RATE\n")
    with pytest.raises(WorkerImportError, match=f"cannot import module '{package}', which the run needs for "
                                                f"module {package}; .*installed here from {package} 2.0"):
        chunkmap.run(wrapper.value, np.arange(4.0), client=client)


#: a `dask worker` (no nanny: this very process runs the tasks) in an environment without chunkmap
WORKER_WITHOUT_CHUNKMAP = """
import sys
sys.modules["chunkmap"] = None  # import chunkmap raises ImportError, as where it is not installed
from distributed.cli.dask_worker import main
sys.argv = ["dask-worker", sys.argv[1], "--no-nanny", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
main()
"""


def test_workers_without_chunkmap_are_told_to_install_it(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    commands = [[*dask_command(), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                 "--no-dashboard"], [sys.executable, "-c", WORKER_WITHOUT_CHUNKMAP, address]]
    with contextlib.ExitStack() as stack:
        for i, command in enumerate(commands):
            log = stack.enter_context(open(tmp_path / f"{i}.log", "wb"))
            stack.callback(stop, subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=die_with_parent))
        wait_for_workers(address, 1, tmp_path)
        with pytest.raises(WorkerImportError, match=r"could not run chunkmap's check .*No module named "
                                                    r"'chunkmap.shipping'.*expected chunkmap on every worker: "
                                                    r"install it there \(chunkmap " + re.escape(chunkmap.__version__)) as raised:
            chunkmap.run(abs, np.arange(3.0), scheduler=address)
    assert raised.value.name == "chunkmap"


def test_cluster_tasks_are_named_after_the_function(ew, client):
    a = np.arange(600.0).reshape(20, 30)
    with get_task_stream(client=client) as stream:
        result = chunkmap.run(ew.add_or_boom, a, a, skip=ew.Boom, chunks=100, client=client)
    assert_matches_reference(result, ew.add_or_boom, a, a, skip=ew.Boom)
    keys = [entry["key"] for entry in stream.data]
    assert len(keys) >= 6
    assert {key_split(key) for key in keys} == {"chunkmap-add-or-boom"}, keys[:5]


class Keys(Callback):
    """The keys of the tasks a local dask scheduler runs."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def _pretask(self, key, dsk, state):
        self.keys.append(key)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_local_tasks_are_named_after_the_function(ew, scheduler):
    a = np.arange(50.0)
    with Keys() as seen:
        result = chunkmap.run(ew.scaled, a, a, kwargs={"scale": 2.0}, chunks=10, scheduler=scheduler)
    assert_matches_reference(result, ew.scaled, a, a, kwargs={"scale": 2.0})
    names = {key_split(key) for key in seen.keys}
    assert len(seen.keys) >= 6 and names - {"finalize-hlgfinalizecompute"} == {"chunkmap-scaled"}, names  # and dask's own


def test_the_dashboard_serves_its_status_page(local_cluster):
    assert importlib.util.find_spec("bokeh"), "the dashboard needs bokeh: pip install -e '.[test]'"
    with urllib.request.urlopen(local_cluster.dashboard_link, timeout=30) as response:
        assert response.status == 200
        page = response.read().decode()
    assert "bokeh" in page.lower() and "Dask" in page
