"""Ctrl-C: a run stops within a second (plus one call) on every local scheduler, and names its checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

#: a run of 1 ms calls that would take 10 s; says "ready" once it computes, then what the interrupt said
DRIVER = r"""
import json, sys, time, numpy as np, chunkmap
from chunkmap.stub import slowlib, set_cost
scheduler, checkpoint = sys.argv[1], sys.argv[2] or None
set_cost(1_000_000)
a = np.random.default_rng(0).random(20_000)
started = []
def progress(done, total, failed):
    if not started:
        started.append(1)
        print("ready", flush=True)
try:
    chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, scheduler=scheduler,
                 progress=progress, checkpoint=checkpoint)
except KeyboardInterrupt as interrupt:
    import traceback
    frames = [frame.filename for frame in traceback.extract_tb(interrupt.__traceback__)]
    print(json.dumps({"at": time.monotonic(), "message": str(interrupt), "frames": frames}), flush=True)
"""


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_ctrl_c_stops_a_run_within_a_second(scheduler, tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, scheduler, str(tmp_path / "ckpt")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        sent = time.monotonic()
        driver.send_signal(signal.SIGINT)
        report = json.loads(driver.stdout.readline())
        assert driver.wait(timeout=30) == 0
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
    latency = report["at"] - sent
    print(f"{scheduler}: Ctrl-C latency {latency * 1000:.0f} ms")  # measured; the bound below is generous
    assert latency < 5
    assert re.fullmatch(rf"interrupted after [\d,]+ of 20,000 elements; finished chunks are kept in "
                        rf"{re.escape(str(tmp_path / 'ckpt'))}; run the same call again to resume", report["message"])
    assert not [frame for frame in report["frames"] if "dask" in frame or "local" + os.sep in frame]


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_a_cancel_event_set_from_another_thread_stops_the_run(scheduler, tmp_path):
    import threading

    import numpy as np

    import chunkmap
    from chunkmap.errors import RunCancelledError
    from chunkmap.stub import slowlib

    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    slowlib.set_cost_ns(1_000_000)  # 1 ms per call: 10 s of work on 2 cores
    timer.start()
    try:
        started = time.monotonic()
        with pytest.raises(RunCancelledError, match=r"the run was cancelled \(its cancel= event was set\) after "
                                                     r"[\d,]+ of 20,000 elements; finished chunks are kept in ") as raised:
            chunkmap.run(slowlib.slow_computation, np.full(20_000, 0.5), np.full(20_000, 0.25), scheduler=scheduler,
                         cancel=cancel, checkpoint=tmp_path, progress=False,
                         workers=chunkmap.Workers(setup=(slowlib.set_cost_ns, (1_000_000,))))
        stopped = time.monotonic() - started
    finally:
        timer.cancel()
        slowlib.set_cost_ns(0)
    print(f"{scheduler}: stopped {stopped - 1:.2f} s after the cancel")  # measured; the bound is generous
    assert stopped < 6
    assert str(raised.value).endswith(f"kept in {tmp_path}; run the same call again to resume")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_the_callers_event_is_never_set_by_chunkmap():
    import threading

    import numpy as np

    import chunkmap

    cancel = threading.Event()
    with pytest.raises(chunkmap.ElementError):
        chunkmap.run(lambda x: 1 / x, np.arange(3.0), scheduler="threads", cancel=cancel, progress=False)
    assert not cancel.is_set()
    with pytest.raises(chunkmap.errors.OptionError, match="cancel must be a threading.Event"):
        chunkmap.run(abs, np.arange(3.0), cancel=True)


def test_a_run_cancelled_without_a_checkpoint_says_nothing_was_kept():
    import threading

    import numpy as np

    import chunkmap
    from chunkmap.errors import RunCancelledError

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RunCancelledError, match=r"after 0 of 5 elements; nothing was kept: pass checkpoint= to keep "
                                                r"work$"):
        chunkmap.run(abs, np.arange(5), scheduler="sync", cancel=cancel, progress=False)


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_two_ctrl_c_in_a_script_end_it_at_once_with_one_short_traceback(scheduler, tmp_path):
    # "ready" once the run has counted its first elements: the run is under way, whatever the load
    script = ("import sys, numpy as np, chunkmap\nfrom chunkmap.stub import slowlib, set_cost\nset_cost(1_000_000)\n"
              "a = np.random.default_rng(0).random(20_000)\nseen = []\n"
              "def started(done, total, failed):\n    if not seen:\n        seen.append(done)\n"
              "        print('ready', flush=True)\n"
              "chunkmap.run(slowlib.slow_computation, a, a, skip=slowlib.InternalError, scheduler=sys.argv[1], "
              "progress=started)\n")
    driver = subprocess.Popen([sys.executable, "-c", script, scheduler], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        time.sleep(0.03)
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=30)
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()
        driver.stderr.close()
    assert stderr.count("Traceback") == 1 and "Exception ignored" not in stderr and "During handling" not in stderr
    assert re.search(r"KeyboardInterrupt: interrupted after [\d,]+ of 20,000 elements; nothing was kept: pass "
                     r"checkpoint= to keep work\n$", stderr)
    assert "dask" not in stderr and len(stderr.splitlines()) <= 6


def test_after_an_interrupt_ctrl_c_is_ignored_for_a_grace_period_then_works_again(monkeypatch):
    from chunkmap import system

    with pytest.raises(KeyboardInterrupt):
        with system.one_interrupt():
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is system._after_interrupt
    signal.raise_signal(signal.SIGINT)  # a second Ctrl-C as the interrupt reaches the caller: ignored
    with system.one_interrupt():  # the next run takes Ctrl-C over again
        assert signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, system._after_interrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with system.one_interrupt():
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(system, "_grace_ends", [0.0])  # the grace period is over
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
