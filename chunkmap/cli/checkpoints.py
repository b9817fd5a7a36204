"""``chunkmap status``, ``chunkmap failures`` and ``chunkmap remove``: a checkpoint location from the shell.

See :mod:`chunkmap.checkpoint.status` for what they read; the exit status follows :mod:`chunkmap.cli`.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, TextIO

from ..errors import ChunkmapError

if TYPE_CHECKING:
    from ..checkpoint import RunStatus
    from ..result import Failures

__all__ = ["add_parsers", "COMMANDS"]


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The ``status``, ``failures`` and ``remove`` subcommands."""
    where = "a checkpoint directory (--checkpoint of chunkmap run) or a redis:// URL"
    status = commands.add_parser("status", help="show the runs stored at a checkpoint location",
                                 description="Show every run stored at CKPT: function, shape, elements and chunks "
                                             "done, failures by kind, when it started and last wrote, and whether "
                                             "it is running (pid and host), stopped or finished.")
    status.add_argument("checkpoint", metavar="CKPT", help=where)
    failures = commands.add_parser("failures", help="list the failed elements of a stored run",
                                   description="List the elements of one run whose call failed: coordinates "
                                               "(x0, x1, ... one per axis), kind (exception, crash, timeout), "
                                               "exception type and message.")
    failures.add_argument("checkpoint", metavar="CKPT", help=where)
    failures.add_argument("--run", metavar="ID", default=None,
                          help="the run's id or a unique prefix of it (needed when CKPT holds several runs)")
    failures.add_argument("--csv", action="store_true",
                          help="write CSV to stdout: columns x0, x1, ..., kind, type, message; nothing truncated")
    remove = commands.add_parser("remove", help="delete stored runs from a checkpoint location",
                                 description="Delete each RUN (an id or a unique prefix) from CKPT; a running "
                                             "run is refused. Exits 2 if any RUN could not be removed.")
    remove.add_argument("checkpoint", metavar="CKPT", help=where)
    remove.add_argument("runs", metavar="RUN", nargs="+", help="run ids, or unique prefixes of them")


def status_command(args: argparse.Namespace) -> int:
    """``chunkmap status CKPT``: one block per run, oldest first."""
    from ..checkpoint import runs

    found = runs(args.checkpoint)  # a ChunkmapError for a missing directory or a file
    if not found:
        print(f"chunkmap status: no runs in {args.checkpoint}")
        return 0
    print(f"chunkmap status: {len(found)} run{'s' if len(found) != 1 else ''} in {args.checkpoint}")
    for run in found:
        print()
        print(status_block(run))
    return 0


def status_block(run: RunStatus) -> str:
    """The lines ``chunkmap status`` shows for one run."""
    known = run.problem is None  # without a readable manifest the shape and totals are unknown
    lines = [
        ("run", run.run_id),
        ("function", run.function),
        ("shape", "x".join(map(str, run.shape)) or ("0-d" if known else "?")),
        ("elements", done_of(run.elements_done, run.unmasked, " unmasked") if known else "?"),
        ("chunks", done_of(run.chunks_done, run.chunks) if known else f"{run.chunks_done:,} stored / ?"),
        ("failed", failed_text(run.failed) + ("" if run.finished or not run.failed else "  (at the last update)")),
        ("started", run.started_text),
        ("updated", run.updated_text),
        ("state", run.state),
    ]
    if run.problem:
        lines.append(("problem", run.problem))
    return "\n".join(f"{label:<10}{value}" for label, value in lines)


def done_of(done: int, total: int, unit: str = "") -> str:
    """``"1,234 / 5,000 (24.6%)"``; the share is rounded down, so 100% means all."""
    share = f" ({math.floor(1000 * done / total) / 10:.1f}%)" if total else ""
    return f"{done:,} / {total:,}{unit}{share}"


def failed_text(failed: dict[str, int]) -> str:
    """``"27 (crash: 2, exception: 25)"``, or ``"0"``."""
    total = sum(failed.values())
    return f"{total:,} ({by_kind(failed)})" if total else "0"


def by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {count:,}" for kind, count in sorted(counts.items()) if count)


def failures_command(args: argparse.Namespace) -> int:
    """``chunkmap failures CKPT [--run ID] [--csv]``: one run's failed elements."""
    from ..checkpoint import run_failures, runs

    location = args.checkpoint
    failures = run_failures(location, args.run)  # a ChunkmapError unless args.run names one intact run
    run = next(run for run in runs(location) if run.run_id.startswith(args.run or ""))
    if args.csv:
        write_failures_csv(failures, sys.stdout)
        return 0
    print(f"chunkmap failures: run {run.run_id} ({run.function}) in {args.checkpoint}: "
          f"{len(failures):,} failed elements")
    if len(failures):
        print(failures_table(failures, shutil.get_terminal_size().columns))
        kinds = by_kind(Counter(failures.kinds.tolist()))
        print(f"{len(failures):,} rows ({kinds}); --csv writes them with nothing cut")
    return 0


def failure_rows(failures: Failures) -> tuple[list[str], list[list[Any]]]:
    """The header (``x0, x1, ...``, kind, type, message) and one row per failure, in C order."""
    from ..checkpoint.status import iter_failure_rows

    header = [*(f"x{axis}" for axis in range(len(failures.shape))), "kind", "type", "message"]
    return header, [[*coords, kind, type_, message] for coords, kind, type_, message in iter_failure_rows(failures)]


def write_failures_csv(failures: Failures, out: TextIO) -> None:
    """Every failure as CSV (header, then one row each), nothing truncated."""
    header, rows = failure_rows(failures)
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)


def failures_table(failures: Failures, width: int = 100) -> str:
    """An aligned table: coordinates right-aligned, messages on one line cut to fit ``width``."""
    header, rows = failure_rows(failures)
    axes = len(header) - 3
    cells = [header] + [[*map(str, row[:-1]), " ".join(str(row[-1]).split())] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header) - 1)]
    room = max(20, width - sum(widths) - 2 * len(widths) - 1)
    align: list[Callable[[str, int], str]] = [str.rjust] * axes + [str.ljust] * 2
    return "\n".join("  ".join([*(fit(cell, size) for fit, cell, size in zip(align, row, widths)),
                                 shorten(row[-1], room)]) for row in cells)


def shorten(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 3] + "..."


def remove_command(args: argparse.Namespace) -> int:
    """``chunkmap remove CKPT RUN...``: removes each run it can; 2 if any could not be removed."""
    from ..checkpoint import remove

    location = args.checkpoint
    status = 0
    for run in args.runs:
        try:
            print(f"removed run {remove(location, run)} from {args.checkpoint}")
        except ChunkmapError as exc:
            print(f"chunkmap: error: {exc}", file=sys.stderr)
            status = 2
    return status


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": status_command,
    "failures": failures_command,
    "remove": remove_command,
}
