"""Which backend a run uses: the registry, and dask's precedence (argument, dask.config, active Client)."""

from __future__ import annotations

import os
import threading

import dask
import dask.threaded
import numpy as np
import pytest
from distributed import Client

import chunkmap
from chunkmap.backends import ALIASES, BACKENDS, resolve
from chunkmap.errors import OptionError, SchedulerError

INPUT = np.zeros(6)


def where(ew, **options) -> set[str]:
    """Where the calls of a run ran: 'here' (this thread), 'threads' (this process), 'pool', 'cluster'."""
    threads = set(chunkmap.run(ew.thread_id, INPUT, chunks=2, progress=False, **options).values.tolist())
    if threads == {threading.get_ident()}:
        return {"here"}
    parents = set(chunkmap.run(ew.parent_pid, INPUT, chunks=2, progress=False, **options).values.tolist())
    if parents == {os.getppid()}:
        return {"threads"}  # the calls ran in this process, whose parent is the test runner's
    return {"pool" if parent == os.getpid() else "cluster" for parent in parents}


def test_every_registered_name_and_dask_alias_resolves_to_its_backend():
    local = {name: factory for name, factory in BACKENDS.items() if name != "distributed"}
    for name in local:
        backend = resolve(name)
        assert backend.name == name and backend.workers >= 1
        assert backend.isolates == (name == "processes")
    for alias, name in ALIASES.items():
        if name != "distributed":
            assert resolve(alias).name == name
            assert resolve(alias.upper()).name == name  # dask lower-cases names too


def test_the_argument_decides_first(ew):
    with dask.config.set(scheduler="threads"):
        assert where(ew, scheduler="sync") == {"here"}
        assert where(ew, scheduler="processes") == {"pool"}


def test_dask_config_decides_when_there_is_no_argument(ew):
    assert where(ew) == {"pool"}  # nothing set: local processes
    with dask.config.set(scheduler="sync"):
        assert where(ew) == {"here"}
    with dask.config.set(scheduler="threading"):
        assert where(ew) == {"threads"}
    with dask.config.set(scheduler=dask.threaded.get):
        assert where(ew) == {"threads"}


def test_an_unknown_setting_names_its_origin_and_the_registry():
    with dask.config.set(scheduler="gpu"):
        with pytest.raises(SchedulerError, match=r"unknown scheduler 'gpu' in dask.config 'scheduler'; "
                                                 r"expected one of 'sync', 'threads', 'processes', 'distributed'"):
            chunkmap.run(abs, INPUT)
    with pytest.raises(SchedulerError, match=r"unknown scheduler 'gpu' passed as scheduler=; expected one of"):
        chunkmap.run(abs, INPUT, scheduler="gpu")


def test_the_active_client_decides_after_dask_config(ew, cluster_address):
    with Client(cluster_address, timeout="5s"):  # the default client: dask's "scheduler" is dask.distributed
        assert where(ew) == {"cluster"}
        with dask.config.set(scheduler="sync"):
            assert where(ew) == {"here"}
    assert where(ew) == {"pool"}  # closed: back to the default


def test_a_client_made_current_but_not_default_is_the_active_client(ew, local_cluster):
    with local_cluster.as_current():
        assert where(ew) == {"cluster"}
    assert where(ew) == {"pool"}


def test_a_timeout_on_a_backend_that_cannot_isolate_is_refused_before_any_work():
    calls = []
    with pytest.raises(OptionError, match="timeout= needs calls isolated in worker processes, which "
                                          "scheduler='threads' does not do"):
        chunkmap.run(calls.append, INPUT, scheduler="threads", timeout=1)
    assert calls == []


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_a_local_run_evaluates_its_chunks_in_layout_order(ew, scheduler):
    """On one worker, elements are called in the layout's order, chunk after chunk (dask's own
    order of independent tasks starts chunk 9 first and chunk 0 last)."""
    a = np.arange(600.0)
    result = chunkmap.run(ew.called_at, a, chunks=20, scheduler=scheduler, workers=1, progress=False)
    assert len(result) == a.size
    called = np.empty(a.size)
    called[result.coords[0]] = result.values
    assert (np.diff(called) >= 0).all(), np.argsort(called[::20]).tolist()
