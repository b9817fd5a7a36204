"""Crash consistency against a real redis-server: kills, restarts without persistence, FLUSHDB mid-run.

The twin of ``tests/checkpoint/test_crash.py`` (whose fork server it reuses: the drivers are
separate processes forked from one that imported chunkmap once). A driver with
``checkpoint="redis://..."`` on a redis-server of the test's own (no persistence) is SIGKILLed at
random moments; between a kill and the rerun the server is sometimes killed and started again on
the same port (:meth:`RedisServer.kill` then :meth:`RedisServer.start`, which reuses its port), so
that everything is lost; and some runs have the database flushed under them (``FLUSHDB`` with
redis-py, done by the fork server at a random share of the run, so that it lands without the
latency of a round trip to the test). Every completed run must equal the serial loop exactly. A
run that had its database flushed under it and still completed must say so
(:class:`~chunkmap.errors.CheckpointWarning`); without a flush in the round nothing may warn.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from chunkmap.checkpoint import decode_record
from chunkmap.checkpoint.run import RECORD, read_manifest
from chunkmap.redis.checkpoint import RedisChunkStore


def _crash_module():
    """``tests/checkpoint/test_crash.py`` (its fork server and checks), loaded by path."""
    path = Path(__file__).resolve().parents[1] / "checkpoint" / "test_crash.py"
    spec = importlib.util.spec_from_file_location("chunkmap_tests_checkpoint_crash", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crash = _crash_module()
SEED = crash.SEED + 1
KILLS = 12


def check_whole(url: str) -> dict | None:
    """After a kill: every record in the database decodes and belongs to the one run; its manifest parses."""
    store = RedisChunkStore(url)
    keys = list(store.keys(""))
    runs = {key.partition("/")[0] for key in keys if "/" in key}
    assert len(runs) <= 1, f"one call makes one run, found {runs}"
    for key in keys:
        run, _, name = key.partition("/")
        if name.startswith("chunk-"):
            assert RECORD.fullmatch(name), key
            record = decode_record(store.get(key))
            assert record.header["run"] == run and record.chunk == int(name[6:])
        elif name == "progress.json":
            assert isinstance(json.loads(store.get(key)), dict)
        else:
            assert name in ("lease", "manifest.json"), f"an unexpected key {key}"
    return read_manifest(store, runs.pop()) if runs else None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_checkpoint_survives_kills_restarts_and_flushes(ew, own_server, tmp_path):
    server = own_server(persist=False)
    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    kills = rounds = 0
    with crash.ForkServer(tmp_path) as drivers:
        a, b, mask = crash.make_inputs(2000)
        np.savez(tmp_path / "inputs-calibration.npz", a=a, b=b)
        report = drivers.run(inputs=str(tmp_path / "inputs-calibration.npz"),
                             checkpoint=server.url.replace("/0", "/15"),
                             result=str(tmp_path / "result-calibration.npz"), chunks=24, scheduler="threads",
                             cost_ns=crash.COST_NS)
        crash.check_report(report, "calibration")
        crash.check_completed(ew, tmp_path / "result-calibration.npz", [a, b], mask, "calibration")
        estimate = report["seconds"]
        while kills < KILLS:
            a, b, mask = crash.make_inputs(100 + rounds)
            inputs = tmp_path / f"inputs-{rounds}.npz"
            np.savez(inputs, a=a, b=b)
            url = server.url.replace("/0", f"/{rounds % 15}")  # a database per round: one run in each
            chunks = ["auto", 16, 24, "auto", 40][rounds % 5]
            quota = rng.randint(2, 4)
            killed_here = 0
            flushed = False  # the round lost data to a FLUSHDB: CheckpointWarnings are legitimate
            while True:
                scheduler = rng.choices(["threads", "sync", "processes"], weights=[6, 4, 1])[0]
                if kills in (4, 10):  # a few processes drivers whatever the RNG says
                    scheduler = "processes"
                last = killed_here >= quota or kills >= KILLS
                actions = []
                if not last:
                    mode, action = crash.kill_action(rng, estimate)
                    actions.append(action)
                if last and (rng.random() < 0.6 or rounds < 4):  # FLUSHDB under a run that completes
                    actions.append({"do": "flush", "url": url, "arm": "fraction", "fraction": rng.uniform(0.7, 0.85),
                                    "delay": rng.uniform(0.0, 0.01)})
                elif not last and (rng.random() < 0.3 or kills in (1, 6, 9)):  # FLUSHDB, then (likely) the kill
                    actions.append({"do": "flush", "url": url, "arm": "fraction", "fraction": rng.uniform(0.05, 0.5),
                                    "delay": rng.uniform(0.0, 0.01)})
                result_path = tmp_path / f"result-{rounds}-{killed_here}.npz"
                where = f"round {rounds} (chunks={chunks!r}) run {killed_here} on {scheduler}, actions {actions}"
                report = drivers.run(inputs=str(inputs), checkpoint=url, result=str(result_path), chunks=chunks,
                                     scheduler=scheduler, cost_ns=crash.COST_NS, actions=actions, log_store=True)
                flushed_now = bool(report["flushed_after"])
                flushed = flushed or flushed_now
                tally["flushes"] += flushed_now
                crash.check_report(report, where, allow_checkpoint_warnings=flushed)
                if result_path.exists():
                    crash.check_completed(ew, result_path, [a, b], mask, where)
                    tally["completed runs"] += 1
                    if any(report["flushed_after_begin"]) and check_whole(url) is not None:
                        # flushed after the run created its manifest, yet a manifest is there: the run
                        # noticed the loss and wrote it again, and must have said so
                        assert any(kind == "CheckpointWarning" for kind, _ in report["warnings"]), (
                            f"{where}: the database was flushed under a run that completed, and it said nothing")
                        tally["flushed runs that completed and warned"] += 1
                if report["signal"] is not None:
                    kills += 1
                    killed_here += 1
                    tally[f"killed on {scheduler}"] += 1
                    check_whole(url)
                    if rng.random() < 0.35 or kills in (2, 7, 11):  # everything lost: a restart without persistence
                        server.kill()
                        server.start()
                        tally["server restarts"] += 1
                        assert check_whole(url) is None
                    continue
                assert report["exit"] == 0 and result_path.exists(), where
                break
            rounds += 1
    summary = f"{kills} kills in {rounds} rounds: {dict(tally)}"
    print(summary)
    assert tally["server restarts"] >= 3 and tally["flushes"] >= 3, summary
    assert tally["flushed runs that completed and warned"] >= 1 and tally["killed on processes"] >= 2, summary
