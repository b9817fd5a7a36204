"""Progress counts elements, reaches exactly the total, and never moves backwards."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import chunkmap
from chunkmap.errors import OptionError
from chunkmap.stub import slowlib


def recorded_run(*args, **options):
    updates = []
    result = chunkmap.run(*args, progress=lambda *counts: updates.append(counts), **options)
    return result, updates


def assert_monotone_to_total(updates, total, failed):
    done = [u[0] for u in updates]
    fails = [u[2] for u in updates]
    assert done == sorted(done) and fails == sorted(fails)
    assert all(u[1] == total for u in updates)
    assert updates[-1] == (total, total, failed)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_counts_reach_the_unmasked_total(ew, scheduler):
    a = np.random.default_rng(0).random((30, 40))
    mask = a > 0.9
    result, updates = recorded_run(ew.add_or_boom, a, a, mask=mask, skip=ew.Boom, chunks=64, scheduler=scheduler)
    assert_monotone_to_total(updates, int((~mask).sum()), len(result.failures))


def test_element_level_updates_inside_chunks_on_processes():
    """A single chunk of 2 ms calls reports progress element by element from the heartbeat."""
    from chunkmap.stub import set_cost

    set_cost(2_000_000)
    try:
        a = np.linspace(0, 1, 600)
        result, updates = recorded_run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=600)
    finally:
        set_cost(0)
    assert len(updates) > 5  # one chunk, yet many updates
    assert_monotone_to_total(updates, 600, len(result.failures))


def test_crashes_and_reruns_are_counted_once():
    a = np.linspace(0, 1, 500)
    a[[17, 300]] = slowlib.CRASH_VALUE
    result, updates = recorded_run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=250)
    assert sorted(f.coords[0] for f in result.failures if f.kind == "crash") == [17, 300]
    assert_monotone_to_total(updates, 500, len(result.failures))


def test_a_resumed_run_starts_from_the_checkpointed_count(ew, tmp_path):
    a = np.random.default_rng(1).random(1000)
    chunkmap.run(ew.scaled, a, a, chunks=100, checkpoint=tmp_path, scheduler="threads")
    _, updates = recorded_run(ew.scaled, a, a, chunks=100, checkpoint=tmp_path, scheduler="threads")
    assert updates == [(1000, 1000, 0)]


def test_a_tqdm_bar_on_request(capsys):
    chunkmap.run(abs, np.arange(-50, 50), progress=True, scheduler="threads")
    err = capsys.readouterr().err
    assert "chunkmap" in err and "100/100" in err


def test_missing_tqdm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(OptionError, match=r"pip install 'chunkmap\[progress\]'"):
        chunkmap.run(abs, np.arange(3), progress=True, scheduler="sync")


@pytest.mark.parametrize("progress", ["yes", 1, object()])
def test_bad_progress_option(progress):
    with pytest.raises(OptionError, match="progress must be None .* True, False or a callable"):
        chunkmap.run(abs, np.arange(3), progress=progress, scheduler="sync")
