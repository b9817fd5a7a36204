"""Crash consistency: a driver SIGKILLed at random moments, rerun each time, ends with the exact result.

A run with ``checkpoint=DIR`` is killed (SIGKILL: no ``finally``, no ``atexit``) at 30+ moments
drawn from a seeded RNG and spread over the run: early (imports done, planning, the pilot of
``chunks="auto"``, the first records), mid-run (record writes), and at the end (the last chunk,
the final progress and manifest writes, the lease release, writing the result). After every kill
the checkpoint is checked: every visible file is whole (records decode, the manifest parses), and
*poisoned* temporary files are planted where the store writes its own (``.chunk-N.<hex>.tmp``,
``.manifest.json.<hex>.tmp``, ``.progress.json.<hex>.tmp``): valid records with wrong values, a
manifest with another layout, a progress record claiming a million chunks. Were one of them read
as data, a result would be wrong, a record rejected or a warning shown. Every completed run
(intermediate ones too) must equal the serial loop exactly, with nothing rejected and no warning
of any kind. The drivers run on ``threads`` and ``sync``, a few on ``processes``; a round of
kills ends with a completed run and the next round starts a new checkpoint, alternating
``chunks="auto"`` (its first run killed in the pilot) and small ints. Another seed:
``CHUNKMAP_CRASH_SEED=7``.

Starting Python and importing dask costs ~1 s per process, which 30+ driver processes cannot
afford, so the drivers are forked from a *fork server* (:data:`DRIVER`, one process that imports
chunkmap once and forks a fresh driver per order). Each driver is a real, separate process that
takes the lease, writes the records and dies by SIGKILL; the fork server sends the signal itself
at the moment the order asks for (after the driver's ``ready``, after a share of its elements,
after its last element, plus a random delay), so that the signal lands without the latency of a
round trip to the test, and it reaps the driver before reporting, so the driver's pid (in its
lease) is dead when the next driver starts. The Redis twin
(``tests/redis/test_checkpoint_crash.py``) reuses this module's fork server.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chunkmap.checkpoint import decode_record, encode_record
from chunkmap.checkpoint.records import accept
from chunkmap.checkpoint.run import read_manifest
from chunkmap.checkpoint.stores import DirectoryStore
from chunkmap.cli import demo
from chunkmap.kernel import ChunkOutput, Evaluation
from chunkmap.plan import make_plan
from chunkmap.result_file import load_result
from chunkmap.stub import slowlib

#: the fork server; reads one JSON order per line on stdin, answers one JSON report per line
DRIVER = r'''
import ctypes, json, os, select, signal, sys, threading, time, traceback, warnings

libc = ctypes.CDLL(None)
libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the test

import numpy as np
import chunkmap
import chunkmap.checkpoint, chunkmap.core, chunkmap.engine, chunkmap.result_file  # dask and the rest, imported once for every driver
from chunkmap.stub import set_cost
from chunkmap.stub import slowlib

try:
    import redis  # for FLUSHDB orders: imported here, not while a driver runs
except ImportError:
    redis = None

#: a driver still running after this many seconds is killed and reported as hung
HARD_LIMIT = 120.0


def drive(order, events):
    """In the forked driver: run the call, reporting each step as a line on ``events``."""
    def send(*words):
        os.write(events, (" ".join(str(word) for word in words) + "\n").encode())

    def show(message, category, filename, lineno, file=None, line=None):
        send("warning", category.__name__, json.dumps(str(message)))

    warnings.showwarning = show
    warnings.simplefilter("always")
    set_cost(order["cost_ns"])  # here and in worker processes
    with np.load(order["inputs"]) as data:
        a, b = data["a"], data["b"]

    def progress(done, total, failed):
        send("done", done, total)

    checkpoint = order["checkpoint"]
    if order.get("log_store"):
        checkpoint = Logged(chunkmap.checkpoint.open_store(checkpoint), send)
    send("ready")
    result = chunkmap.run(slowlib.slow_computation, a, b, mask=a <= -1e10, skip=slowlib.InternalError,
                          chunks=order["chunks"], scheduler=order["scheduler"], checkpoint=checkpoint,
                          progress=progress)
    send("returned", result.stats.resumed, result.stats.rejected)
    chunkmap.result_file.save_result(result, order["result"])  # atomic: absent or whole
    send("finished")


class Logged:
    """The order's store, telling the fork server when the run has a manifest: it read one when it
    opened (a resumed run: ``begin`` writes nothing), or it created one (``begin`` of a new run)."""

    def __init__(self, store, send):
        self.store, self.send, self.location = store, send, store.location

    def __getattr__(self, name):
        return getattr(self.store, name)

    def get(self, key):
        data = self.store.get(key)
        if key.endswith("/manifest.json") and data is not None:
            self.send("manifest", "read")
        return data

    def create(self, key, data):
        made = self.store.create(key, data)
        if key.endswith("/manifest.json"):
            self.send("manifest", "created" if made else "exists")
        return made


def flush(url):
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def watch(pid, read, order):
    """Follow the driver's events, do the order's actions when they are due, reap it, report."""
    actions = [dict(action) for action in order.get("actions", [])]
    due = {}
    report = {"events": 0, "last": "started", "warnings": [], "error": None, "killed_after": None,
              "flushed_after": [], "flushed_after_begin": [], "first_done": None, "began": False}
    buffer = b""
    started = time.monotonic()
    eof = False

    def arm(event, done=None, total=None):
        now = time.monotonic()
        for number, action in enumerate(actions):
            if number in due:
                continue
            if action["arm"] == "ready" and event == "ready":
                due[number] = now + action["delay"]
            elif action["arm"] == "fraction" and event == "done":
                base = report["first_done"]
                if done >= base + action["fraction"] * (total - base):
                    due[number] = now + action["delay"]
            elif action["arm"] == "end" and event == "done" and done >= total:
                due[number] = now + action["delay"]

    def take(line):
        words = line.split(" ")
        report["events"] += 1
        if words[0] == "warning":
            report["warnings"].append([words[1], json.loads(line.split(" ", 2)[2])])
            return
        if words[0] == "error":
            report["error"] = json.loads(line.split(" ", 1)[1])
            return
        if words[0] == "manifest":
            report["began"] = True
            return
        report["last"] = line
        if words[0] == "done":
            done, total = int(words[1]), int(words[2])
            if report["first_done"] is None:
                report["first_done"] = done
            arm("done", done, total)
        elif words[0] == "ready":
            arm("ready")

    while True:
        now = time.monotonic()
        for number in sorted(due):
            action = actions[number]
            if now >= due[number] and not action.get("taken"):
                action["taken"] = True
                if action["do"] == "kill":
                    os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still this driver
                    report["killed_after"] = report["last"]
                else:
                    flush(action["url"])
                    report["flushed_after"].append(report["last"])
                    report["flushed_after_begin"].append(report["began"])
        if report["killed_after"] is not None or eof:
            break
        if now - started > HARD_LIMIT:
            os.kill(pid, signal.SIGKILL)
            report["error"] = f"hung: no end after {HARD_LIMIT} s (last event {report['last']!r})"
            break
        waits = [due[number] - now for number in due if not actions[number].get("taken")]
        ready, _, _ = select.select([read], [], [], max(0.0, min(waits)) if waits else 1.0)
        if ready:
            data = os.read(read, 1 << 16)
            if not data:
                eof = True
                continue
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                take(line.decode())
    _, status = os.waitpid(pid, 0)
    os.set_blocking(read, False)
    try:
        while True:  # what the driver wrote before it died
            data = os.read(read, 1 << 16)
            if not data:
                break
            buffer += data
    except BlockingIOError:
        pass
    *lines, _ = buffer.split(b"\n")
    killed_after = report["killed_after"]
    for line in lines:
        take(line.decode())
    report["killed_after"] = killed_after
    os.close(read)
    report["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    report["exit"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    report["seconds"] = time.monotonic() - started
    return report


def serve():
    for line in sys.stdin:
        order = json.loads(line)
        if threading.active_count() != 1:  # forking a process with threads could deadlock the driver
            print(json.dumps({"error": f"the fork server has {threading.active_count()} threads"}), flush=True)
            continue
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            libc.prctl(1, signal.SIGKILL)  # the driver dies with the fork server
            code = 0
            try:
                drive(order, write)
            except BaseException:
                os.write(write, ("error " + json.dumps(traceback.format_exc()) + "\n").encode())
                code = 1
            try:
                chunkmap.shutdown()
            finally:
                os._exit(code)
        os.close(write)
        print(json.dumps(watch(pid, read, order)), flush=True)


serve()
'''

#: the per-call cost of the stub in the drivers (ns), so that one run lasts ~0.3-1 s
COST_NS = 120_000
SHAPE = (40, 50)
#: a fixed seed: a failure replays (the kill moments themselves still vary with timing)
SEED = int(os.environ.get("CHUNKMAP_CRASH_SEED", "20240611"))
KILLS = 32
TMP = re.compile(r"\.(chunk-\d{9}|manifest\.json|progress\.json|lease)\.[0-9a-f]{32}\.tmp")


class ForkServer:
    """The :data:`DRIVER` fork server, a subprocess of the test."""

    def __init__(self, folder: Path) -> None:
        script = folder / "crash_driver.py"
        script.write_text(DRIVER)
        self.log_path = folder / "crash_driver.log"
        self.log = open(self.log_path, "wb")
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        env.pop("SLOWLIB_COST_NS", None)
        self.process = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, env=env)

    def run(self, **order: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the fork server died: {self.log_path.read_text(errors='replace')[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()  # end of orders: the fork server exits
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.process.stdout.close()
        self.log.close()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_inputs(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = demo.make_inputs(shape, seed)
    return a, b, a <= demo.MASK_BELOW


def kill_action(rng: random.Random, estimate: float) -> tuple[str, dict[str, Any]]:
    """A random moment to kill a driver: its mode (for the tally) and the fork server's action."""
    mode = rng.choices(["early", "mid", "late", "end", "uniform"], weights=[2, 3, 2, 3, 3])[0]
    if mode == "early":  # planning, the pilot, the manifest, the first records
        action = {"arm": "ready", "delay": rng.uniform(0.0, 0.12)}
    elif mode == "mid":
        action = {"arm": "fraction", "fraction": rng.uniform(0.05, 0.9), "delay": rng.uniform(0.0, 0.01)}
    elif mode == "late":
        action = {"arm": "fraction", "fraction": rng.uniform(0.9, 1.0), "delay": rng.uniform(0.0, 0.01)}
    elif mode == "end":  # the last record, finish(): the manifest check and final progress, the release
        action = {"arm": "end", "delay": rng.uniform(0.0, 0.006)}
    else:
        action = {"arm": "ready", "delay": rng.uniform(0.0, 1.2 * estimate)}
    return mode, {"do": "kill", **action}


def run_folders(checkpoint: Path) -> list[Path]:
    return sorted(path for path in checkpoint.iterdir() if path.is_dir()) if checkpoint.exists() else []


def check_whole(checkpoint: Path) -> dict[str, Any] | None:
    """After a kill: every visible file of the checkpoint is whole. Returns the manifest, if any."""
    folders = run_folders(checkpoint)
    assert len(folders) <= 1, f"one call makes one run, found {folders}"
    if not folders:
        return None
    folder = folders[0]
    store = DirectoryStore(checkpoint)
    for path in folder.iterdir():
        name = path.name
        if name.startswith("."):
            assert TMP.fullmatch(name), f"an unexpected hidden file {path}"
        elif name.startswith("chunk-"):
            assert re.fullmatch(r"chunk-\d{9}", name), path
            record = decode_record(path.read_bytes())  # a visible record is never torn
            assert record.header["run"] == folder.name and record.chunk == int(name[6:])
        elif name == "progress.json":
            assert isinstance(json.loads(path.read_bytes()), dict)
        else:
            assert name in ("lease", "manifest.json"), f"an unexpected file {path}"
    manifest = read_manifest(store, folder.name)  # raises if not whole
    if manifest is not None:
        for path in folder.glob("chunk-*"):
            assert decode_record(path.read_bytes()).header["layout"] == manifest["layout"]
    return manifest


def poison_record(folder: Path, number: int, plan: Any, layout: dict[str, Any]) -> bytes:
    """A record of chunk ``number`` that would be accepted, with wrong values (computed, -999 each)."""
    chunk = plan.chunks[number]
    flat_index = plan.source.flat_index(chunk.start, chunk.stop)
    evaluation = Evaluation(np.zeros(chunk.size, np.uint8), np.full(chunk.size, -999, np.int64))
    data = encode_record(ChunkOutput(number, flat_index, evaluation), chunk, folder.name, layout)
    assert accept(decode_record(data), chunk, flat_index, folder.name, layout) is None  # it would be used
    return data


def plant_poison(checkpoint: Path, manifest: dict[str, Any], arrays: list[np.ndarray], mask: np.ndarray,
                 rng: random.Random) -> set[str]:
    """Temporary files the store must never read: if it did, the result would be wrong or warned about.

    Returns their names.
    """
    (folder,) = run_folders(checkpoint)
    layout = manifest["layout"]
    plan = make_plan(arrays, mask=mask).with_layout(layout["head"], layout["chunk_size"], layout["tail"])
    stored = {int(path.name[6:]) for path in folder.glob("chunk-*")}
    missing = sorted(set(range(len(plan.chunks))) - stored)
    planted = {}
    for number in ([rng.choice(missing)] if missing else []) + ([rng.choice(sorted(stored))] if stored else []):
        planted[f".chunk-{number:09d}.{uuid.uuid4().hex}.tmp"] = poison_record(folder, number, plan, layout)
    other = dict(manifest, layout=dict(layout, chunk_size=layout["chunk_size"] + 1))
    planted[f".manifest.json.{uuid.uuid4().hex}.tmp"] = json.dumps(other).encode()
    planted[f".progress.json.{uuid.uuid4().hex}.tmp"] = json.dumps({"chunks": 10**6, "elements": 10**9}).encode()
    for name, data in planted.items():
        (folder / name).write_bytes(data)
    return set(planted)


def check_completed(ew, result_path: Path, arrays, mask, where: str) -> None:
    """A driver that completed (or was killed after writing its result): the result is exact.

    Nothing is rejected: kills, restarts and flushes lose records but never leave a wrong one.
    """
    result = load_result(result_path)
    try:
        ew.assert_matches_reference(result, slowlib.slow_computation, arrays, mask=mask, skip=slowlib.InternalError)
    except AssertionError as exc:
        raise AssertionError(f"{where}: the result differs from the serial loop: {exc}") from None
    stats = result.stats
    assert stats.computed + stats.failed + stats.masked == stats.elements, where
    assert stats.rejected == 0, f"{where}: {stats.rejected} record(s) rejected (a .tmp read as data?)"


def check_report(report: dict[str, Any], where: str, allow_checkpoint_warnings: bool = False) -> None:
    assert report.get("error") is None, f"{where}: the driver failed:\n{report['error']}"
    if allow_checkpoint_warnings:
        others = [warning for warning in report["warnings"] if warning[0] != "CheckpointWarning"]
    else:
        others = report["warnings"]
    assert not others, f"{where}: the driver warned: {others}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_driver_killed_at_random_moments_resumes_to_the_exact_result(ew, tmp_path):
    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    history: list[str] = []
    kills = rounds = completions = planted = 0
    with ForkServer(tmp_path) as server:
        # calibration: an uninterrupted run gives the duration the "uniform" kill moments spread over
        a, b, mask = make_inputs(1000)
        np.savez(tmp_path / "inputs-calibration.npz", a=a, b=b)
        report = server.run(inputs=str(tmp_path / "inputs-calibration.npz"), checkpoint=str(tmp_path / "calibration"),
                            result=str(tmp_path / "result-calibration.npz"), chunks=24, scheduler="threads",
                            cost_ns=COST_NS)
        check_report(report, "calibration")
        check_completed(ew, tmp_path / "result-calibration.npz", [a, b], mask, "calibration")
        estimate = report["seconds"]
        while kills < KILLS:
            a, b, mask = make_inputs(rounds)
            inputs = tmp_path / f"inputs-{rounds}.npz"
            np.savez(inputs, a=a, b=b)
            checkpoint = tmp_path / f"checkpoint-{rounds}"
            chunks = ["auto", 16, 24, "auto", 40, 12][rounds % 6]
            quota = rng.randint(3, 7)
            killed_here = 0
            poisons: set[str] = set()  # the names of the poisoned files planted in this round
            left_before: set[str] = set()  # the store's own temporary files left by earlier kills
            while True:
                scheduler = rng.choices(["threads", "sync", "processes"], weights=[6, 4, 1])[0]
                if kills in (2, 13, 25):  # a few processes drivers whatever the RNG says
                    scheduler = "processes"
                last = killed_here >= quota or kills >= KILLS
                mode, action = kill_action(rng, estimate)
                if chunks == "auto" and killed_here == 0:  # the first run of the round: kill it in its pilot
                    mode, action = "pilot", {"do": "kill", "arm": "ready", "delay": rng.uniform(0.0, 0.3 * estimate)}
                result_path = tmp_path / f"result-{rounds}-{killed_here}.npz"
                where = "\n  ".join([*history[-6:], f"round {rounds} (chunks={chunks!r}) run {killed_here} on "
                                                    f"{scheduler}" + ("" if last else f", kill {mode} {action}")])
                report = server.run(inputs=str(inputs), checkpoint=str(checkpoint), result=str(result_path),
                                    chunks=chunks, scheduler=scheduler, cost_ns=COST_NS,
                                    actions=[] if last else [action])
                check_report(report, where)
                history.append(f"{where.rpartition(chr(10))[2].strip()}: killed after {report['killed_after']!r}, "
                               f"{report['seconds']:.2f} s")
                if result_path.exists():  # completed, or killed after writing its result
                    check_completed(ew, result_path, [a, b], mask, where)
                    completions += 1
                if report["signal"] is not None:
                    kills += 1
                    killed_here += 1
                    manifest = check_whole(checkpoint)
                    left = {path.name for folder in run_folders(checkpoint) for path in folder.iterdir()
                            if TMP.fullmatch(path.name)} - poisons - left_before
                    left_before |= left
                    tally["kills leaving a .tmp of the store's own"] += bool(left)
                    last_event = report["killed_after"] or ""
                    if manifest is None:
                        tally["before the manifest (startup, plan, pilot)"] += 1
                    elif last_event.startswith("done") and int(last_event.split()[1]) >= int(last_event.split()[2]):
                        tally["after the last element (last record, finish, release, result)"] += 1
                    elif last_event.startswith("returned"):
                        tally["after run() returned (writing the result)"] += 1
                    else:
                        tally["mid-run (records)"] += 1
                    tally[f"on {scheduler}"] += 1
                    tally[f"chunks={'auto' if chunks == 'auto' else 'int'}"] += 1
                    if manifest is not None:
                        poisons |= plant_poison(checkpoint, manifest, [a, b], mask, rng)
                    continue
                assert report["exit"] == 0, f"{where}: exit {report['exit']}"
                assert result_path.exists(), where
                break  # a completion ends the round
            planted += len(poisons)
            rounds += 1
    summary = (f"{kills} kills in {rounds} rounds, {completions} completed runs, {planted} poisoned .tmp files: "
               f"{dict(tally)}")
    print(summary)
    assert kills >= KILLS
    assert tally["before the manifest (startup, plan, pilot)"] >= 2, summary
    assert tally["mid-run (records)"] >= 5, summary
    assert tally["after the last element (last record, finish, release, result)"] >= 1, summary
    assert tally["on processes"] >= 2 and tally["chunks=auto"] >= 5, summary
    assert planted >= 2 * KILLS, summary
