"""Property test: any sequence of runs, interrupts, edits and damage to a checkpoint gives exact results.

Hypothesis draws a sequence of 3-8 actions on one directory checkpoint: run to completion, run
interrupted after ``k`` elements (a ``progress=`` callback raising KeyboardInterrupt), edit the
function (two versions built with ``exec`` whose code differs), change ``kwargs``, change the
inputs, delete a record, copy a record over another, corrupt a record (a flipped byte or a
truncation), delete the manifest, edit the manifest (another ``chunk_size`` in its layout); the
first action is a run, so that there is something to damage. After every run, and after a final
run that ends every example, the Result equals the serial loop of the *current* function, kwargs
and inputs exactly, and the counts add up. Further:

- nothing warns but :class:`~chunkmap.errors.CheckpointWarning`, and not even that while the
  checkpoint holds a single call and nobody touched its files;
- a run of a call that completed before, with no damage since, computes nothing (everything
  resumed);
- ``stats.rejected`` of a run that completes is exactly the number of record files in its folder
  that do not belong: files that do not decode (flipped, truncated), that name another run or
  another chunk (copied), or that were made with another layout than the run's (the manifest's,
  or without one the layout of the run's first readable record) -- and if there are any, the run
  warns.

``chunks`` is drawn from ``"auto"`` and small ints. With ``quick_pilot`` the pilot's thresholds
(:data:`chunkmap.sizing.PILOT_SECONDS`, :data:`~chunkmap.sizing.PILOT_GROWTH`) are lowered for
the example, so that ``"auto"`` cuts these small inputs into a pilot head *and* equal chunks
(with the default thresholds the pilot does all of a small input); the layout then depends on
timing, which is allowed: the layout is stored with the run and any layout must give the exact
result. ``CHUNKMAP_PROPERTY_EXAMPLES=2000`` hunts longer (add ``--timeout 1400``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import chunkmap
from chunkmap import sizing
from chunkmap.checkpoint import decode_record, run_identity
from chunkmap.errors import CheckpointWarning, CodecError
from chunkmap.plan import make_plan

#: two versions of the function: different code, different values, different failing elements
SOURCES = (
    "def func(a, b, scale=1.0):\n"
    "    if math.floor(a * 1000) % 7 == 0:\n"
    "        raise Boom(f'bad a {a!r}')\n"
    "    return a * scale + b\n",
    "def func(a, b, scale=1.0):\n"
    "    if math.floor(b * 1000) % 5 == 0:\n"
    "        raise Boom(f'bad b {b!r}')\n"
    "    return a - b * scale\n",
)
KWARGS = (None, {"scale": 2.0}, {"scale": -0.5})
SHAPE = (10, 12)
#: examples per run of the test (more to hunt: CHUNKMAP_PROPERTY_EXAMPLES=2000)
EXAMPLES = int(os.environ.get("CHUNKMAP_PROPERTY_EXAMPLES", "50"))

RUNS = st.one_of(st.tuples(st.just("run")), st.tuples(st.just("interrupt"), st.integers(1, 110)))
ACTIONS = st.one_of(
    RUNS,
    st.tuples(st.just("edit function")),
    st.tuples(st.just("change kwargs"), st.integers(1, len(KWARGS) - 1)),
    st.tuples(st.just("change inputs"), st.integers(1, 2)),
    st.tuples(st.just("delete record"), st.integers(0, 10**6)),
    st.tuples(st.just("copy record"), st.integers(0, 10**6), st.integers(1, 10**6)),
    st.tuples(st.just("corrupt record"), st.integers(0, 10**6), st.sampled_from(["flip", "truncate"]),
              st.floats(0.0, 1.0)),
    st.tuples(st.just("delete manifest")),
    st.tuples(st.just("edit manifest"), st.integers(1, 12)),
)


def build(version: int, ew) -> Any:
    """A fresh function object of ``version`` (the same code each time: the same identity)."""
    namespace = {"__name__": "chunkmap_generated_functions", "math": math, "Boom": ew.Boom}
    exec(compile(SOURCES[version], f"<generated version {version}>", "exec"), namespace)
    return namespace["func"]


def inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.random(SHAPE), rng.random(SHAPE)
    return a, b, rng.random(SHAPE) < 0.15


class World:
    """The current call and its checkpoint folder, and what the test knows about the folder."""

    def __init__(self, ew, chunks: Any, scheduler: str) -> None:
        self.ew, self.chunks, self.scheduler = ew, chunks, scheduler
        self.folder = Path(tempfile.mkdtemp(prefix="chunkmap-properties-"))
        self.version, self.kwargs, self.seed = 0, 0, 0
        self.func = build(0, ew)
        self.a, self.b, self.mask = inputs(0)
        self.pristine = True  # one call only, and nobody touched its files: nothing may warn
        self.complete: set[str] = set()  # runs that completed with no damage since
        self.log: list[str] = []

    @property
    def run_id(self) -> str:
        source = make_plan([self.a, self.b], mask=self.mask).source
        return run_identity(self.func, source, (self.ew.Boom,), KWARGS[self.kwargs], None, self.chunks).run_id

    def records(self, any_run: bool = False) -> list[Path]:
        """Record files of the current call's run if it has any (or ``any_run``), else of every run."""
        own = [] if any_run else sorted((self.folder / self.run_id).glob("chunk-*"))
        return own or sorted(self.folder.glob("*/chunk-*"))

    def foreign_records(self, run_id: str) -> list[str]:
        """The record files of run ``run_id`` that do not belong to it: unreadable, of another run or
        chunk, or of another layout than the run will use (its manifest's, or without one the
        layout of its first readable record, as ``RunCheckpoint.stored_layout`` recovers it)."""
        folder = self.folder / run_id
        files = sorted(folder.glob("chunk-*"))
        headers: dict[Path, dict | None] = {}
        for path in files:
            try:
                headers[path] = decode_record(path.read_bytes()).header
            except CodecError:
                headers[path] = None
        layout = None
        if (folder / "manifest.json").exists():
            layout = json.loads((folder / "manifest.json").read_text())["layout"]
        else:
            layout = next((header["layout"] for header in headers.values() if header and header["run"] == run_id), None)
        return [path.name for path, header in headers.items()
                if header is None or header["run"] != run_id or header["chunk"] != int(path.name[6:])
                or header["layout"] != layout]

    def damaged(self) -> None:
        self.pristine = False
        self.complete.clear()

    def run(self, interrupt_at: int | None = None) -> None:
        ew, run_id = self.ew, self.run_id
        raised = []

        def progress(done: int, total: int, failed: int) -> None:
            if not raised and done >= interrupt_at:
                raised.append(done)
                raise KeyboardInterrupt

        kwargs = KWARGS[self.kwargs]
        foreign = self.foreign_records(run_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = chunkmap.run(self.func, self.a, self.b, mask=self.mask, skip=ew.Boom, chunks=self.chunks,
                                      scheduler=self.scheduler, kwargs=kwargs, checkpoint=self.folder,
                                      progress=progress if interrupt_at is not None else None)
            except KeyboardInterrupt:
                assert raised, "a KeyboardInterrupt that the progress callback did not raise"
                result = None
        where = " -> ".join(self.log)
        others = [str(w.message) for w in caught if not issubclass(w.category, CheckpointWarning)]
        assert not others, f"{where}: unexpected warnings {others}"
        if self.pristine:
            assert not caught, f"{where}: a single untouched call warned: {[str(w.message) for w in caught]}"
        if result is None:
            self.log[-1] += f" (interrupted at {raised[0]})"
            event("a run interrupted")
            return
        try:
            ew.assert_matches_reference(result, self.func, [self.a, self.b], mask=self.mask, skip=ew.Boom,
                                        kwargs=kwargs)
        except AssertionError as exc:
            raise AssertionError(f"{where}: the result differs from the serial loop: {exc}") from None
        stats = result.stats
        assert stats.computed + stats.failed + stats.masked == stats.elements, where
        assert stats.elements == self.a.size and stats.masked == int(self.mask.sum()), where
        if run_id in self.complete:
            assert stats.resumed == stats.computed + stats.failed, (
                f"{where}: the call had completed and nothing was damaged, yet it computed "
                f"{stats.computed + stats.failed - stats.resumed} elements again")
        self.log[-1] += f" (resumed {stats.resumed}, rejected {stats.rejected})"
        assert stats.rejected == len(foreign), (
            f"{where}: {len(foreign)} record(s) did not belong ({foreign}), {stats.rejected} rejected")
        if foreign:
            assert any(issubclass(w.category, CheckpointWarning) and "do not belong" in str(w.message)
                       for w in caught), f"{where}: records that do not belong were refused without a word"
        self.complete.add(run_id)
        event("a run resumed records" if stats.resumed else "a run resumed nothing")
        if stats.rejected:
            event("a run rejected records")
        if any(issubclass(w.category, CheckpointWarning) for w in caught):
            event("a run warned")
        manifest = self.folder / run_id / "manifest.json"
        if self.chunks == "auto" and manifest.exists():
            layout = json.loads(manifest.read_text())["layout"]
            cut = layout["head"][-1] < layout["unmasked"]
            event("auto: head and equal chunks" if cut else "auto: all in the pilot")

    def act(self, action: tuple) -> None:
        kind = action[0]
        self.log.append(f"{kind}{list(action[1:]) if action[1:] else ''}")
        if kind == "run":
            self.run()
        elif kind == "interrupt":
            self.run(interrupt_at=action[1])
        elif kind == "edit function":
            self.version ^= 1
            self.func = build(self.version, self.ew)
            self.pristine = False
        elif kind == "change kwargs":
            self.kwargs = (self.kwargs + action[1]) % len(KWARGS)
            self.pristine = False
        elif kind == "change inputs":
            self.seed = (self.seed + action[1]) % 3
            self.a, self.b, self.mask = inputs(self.seed)
            self.pristine = False
        elif kind in ("delete record", "copy record", "corrupt record"):
            self._damage_record(action)
        elif kind in ("delete manifest", "edit manifest"):
            path = self.folder / self.run_id / "manifest.json"
            if not path.exists():
                self.log[-1] += " (no manifest)"
                return
            self.damaged()
            if kind == "delete manifest":
                path.unlink()
                return
            manifest = json.loads(path.read_text())
            size = manifest["layout"]["chunk_size"]
            manifest["layout"]["chunk_size"] = action[1] if action[1] != size else size + 1
            self.log[-1] += f" (chunk_size {size} -> {manifest['layout']['chunk_size']})"
            path.write_text(json.dumps(manifest, indent=1))

    def _damage_record(self, action: tuple) -> None:
        records = self.records()
        if not records:
            self.log[-1] += " (no records)"
            return
        self.damaged()
        target = records[action[1] % len(records)]
        self.log[-1] += f" ({target.parent.name[:6]}/{target.name}"
        if action[0] == "delete record":
            target.unlink()
        elif action[0] == "copy record":
            everywhere = self.records(any_run=True)  # maybe a record of another run (another call)
            source = everywhere[(everywhere.index(target) + action[2]) % len(everywhere)]
            self.log[-1] += f" <- {source.parent.name[:6]}/{source.name}"
            if source != target:  # filed under another chunk's name, or another run's folder
                shutil.copyfile(source, target)
        else:
            data = bytearray(target.read_bytes())
            at = min(int(action[3] * len(data)), len(data) - 1)
            if not data:
                self.log[-1] += " (empty already)"
            elif action[2] == "flip":
                data[at] ^= 0xFF
            else:
                del data[at:]
            self.log[-1] += f" {action[2]} at {at} of {len(target.read_bytes())}"
            target.write_bytes(bytes(data))
        self.log[-1] += ")"

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(first=("run",), actions=[("edit function",), ("edit manifest", 1), ("edit function",), ("edit function",),
                                  ("interrupt", 1), ("interrupt", 71), ("edit manifest", 1)],
         chunks=3, scheduler="threads", quick_pilot=False)  # CI found: a save in flight written after the interrupt
@given(first=RUNS, actions=st.lists(ACTIONS, min_size=2, max_size=7),
       chunks=st.sampled_from(["auto", "auto", 1, 2, 3, 5, 8]), scheduler=st.sampled_from(["sync", "threads"]),
       quick_pilot=st.booleans())
def test_any_sequence_of_runs_interrupts_and_damage_gives_exact_results(ew, first, actions, chunks, scheduler,
                                                                         quick_pilot):
    world = World(ew, chunks, scheduler)
    with contextlib.ExitStack() as stack:
        stack.callback(world.close)
        if quick_pilot:
            stack.enter_context(mock.patch.object(sizing, "PILOT_SECONDS", 0.0))
            stack.enter_context(mock.patch.object(sizing, "PILOT_GROWTH", 2))
        for action in [first, *actions]:  # 3 to 8 actions, the first a run: something to damage
            world.act(action)
        world.act(("run",))  # whatever happened, a final run is exact
