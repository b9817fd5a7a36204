"""Progress counts elements, reaches exactly the total, never moves backwards, and rates this run only."""

from __future__ import annotations

import io
import re
import sys
import threading

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
    assert "abs: 100%" in err and "100/100" in err  # named after the function


def test_missing_tqdm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(OptionError, match=r"pip install 'chunkmap\[progress\]'"):
        chunkmap.run(abs, np.arange(3), progress=True, scheduler="sync")


@pytest.mark.parametrize("progress", ["yes", 1, object()])
def test_bad_progress_option(progress):
    with pytest.raises(OptionError, match="progress must be None .* True, False, a dict of tqdm options, a tqdm bar"):
        chunkmap.run(abs, np.arange(3), progress=progress, scheduler="sync")


@pytest.mark.parametrize("options, message", [
    ({"total": 5}, r"except total and initial, which the run sets; got the key\(s\) 'total'"),
    ({"initial": 1, 3: 4}, r"got the key\(s\) 'initial', 3"),
    ({"colour_of_bar": "red"}, r"options tqdm does not know .*colour_of_bar"),
])
def test_bad_tqdm_options(options, message):
    with pytest.raises(OptionError, match=message):
        chunkmap.run(abs, np.arange(3), progress=options, scheduler="sync")


def final_line(text: str) -> str:
    """The last state a tqdm bar printed to a file."""
    return text.replace("\n", "\r").strip("\r").split("\r")[-1]


def displayed_rate(line: str) -> float:
    return float(re.search(r"([\d.]+)el/s", line).group(1))


def captured_run(*args, **options):
    """A run with a tqdm bar written to a string (no unit scaling: exact counts and rates)."""
    bar = io.StringIO()
    result = chunkmap.run(*args, progress={"file": bar, "unit_scale": False, "mininterval": 0}, **options)
    return result, bar.getvalue()


def slow_inputs(size=4000, cost_ns=50_000):
    from chunkmap.stub import set_cost

    set_cost(cost_ns)
    return np.linspace(0, 1, size)


@pytest.fixture
def no_cost():
    yield
    from chunkmap.stub import set_cost

    set_cost(0)


@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_the_final_rate_is_the_runs_rate(scheduler, no_cost):
    a = slow_inputs()
    result, text = captured_run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, scheduler=scheduler)
    line = final_line(text)
    assert line.startswith("slow_computation: 100%") and "4000/4000" in line
    assert displayed_rate(line) == pytest.approx(result.stats.rate, rel=0.1)


def test_a_dict_of_tqdm_options_overrides_the_defaults(ew):
    bar = io.StringIO()
    chunkmap.run(ew.scaled, np.arange(10.0), np.arange(10.0), scheduler="sync",
                 progress={"desc": "fit", "file": bar, "bar_format": "{desc}|{n}|{total}"})
    assert final_line(bar.getvalue()) == "fit|10|10"


def cancelled_halfway(a, checkpoint):
    """Run slow_computation over ``a`` in chunks of 200 until half is done: the rest is left to resume."""
    cancel = threading.Event()

    def cancel_halfway(done, total, failed):
        if done >= total // 2:
            cancel.set()

    with pytest.raises(chunkmap.errors.RunCancelledError):
        chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=200, scheduler="sync",
                     checkpoint=checkpoint, cancel=cancel, progress=cancel_halfway)


def test_resumed_elements_are_the_bars_start_not_its_rate(tmp_path, no_cost):
    a = slow_inputs()
    cancelled_halfway(a, tmp_path)
    result, text = captured_run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=200,
                                scheduler="sync", checkpoint=tmp_path)
    resumed = result.stats.resumed
    assert 0 < resumed < 4000
    states = text.replace("\n", "\r").strip("\r").split("\r")
    assert f" {resumed}/4000 " in states[1]  # after the empty bar: the resumed count, at once
    assert "4000/4000" in states[-1]
    rate = displayed_rate(states[-1])
    assert rate == pytest.approx(result.stats.rate, rel=0.1)
    assert rate < 0.75 * 4000 / result.stats.wall_time  # the resumed half is not part of it


def test_a_tqdm_bar_of_the_callers_is_reset_updated_and_left_open(ew):
    from tqdm import tqdm

    out = io.StringIO()
    with tqdm(total=1, desc="mine", file=out, mininterval=0) as bar:
        for size in (30, 20):
            chunkmap.run(ew.scaled, np.arange(float(size)), np.arange(float(size)), scheduler="sync", progress=bar)
            assert (bar.n, bar.total, bar.disable) == (size, size, False)  # still open for the next run
        assert final_line(out.getvalue()).startswith("mine: 100%")


def test_the_callable_counts_resumed_elements_as_done(tmp_path):
    a = np.linspace(0, 1, 1000)
    cancelled_halfway(a, tmp_path)
    result, updates = recorded_run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, chunks=200,
                                   scheduler="sync", checkpoint=tmp_path)
    assert updates[0][:2] == (result.stats.resumed, 1000) and 0 < result.stats.resumed < 1000
    assert_monotone_to_total(updates, 1000, len(result.failures))


def test_a_disabled_bar_resumes_quietly(ew, tmp_path, capsys):
    a = np.arange(100.0)
    for _ in range(2):
        result = chunkmap.run(ew.scaled, a, a, chunks=10, checkpoint=tmp_path, scheduler="sync",
                              progress={"disable": True})
    assert result.stats.resumed == 100 and capsys.readouterr().err == ""
