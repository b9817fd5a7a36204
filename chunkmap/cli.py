"""The ``chunkmap`` command line (also ``python -m chunkmap``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import ChunkmapError

__all__ = ["main"]


def integer(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text}")
    return value


def positive_int(text: str) -> int:
    return integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return integer(text, 0, "an integer >= 0")


def chunks_option(text: str) -> int | str:
    return text if text == "auto" else integer(text, 1, "'auto' or a positive integer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chunkmap",
        description="Run a slow scalar function over every element of large numpy arrays, in parallel.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the seed's job on the bundled SWIG library and print a summary",
        description="Two (size x size) float64 arrays with ~10%% masked sentinels, "
        "slowlib.slow_computation at a chosen per-call cost, InternalError skipped.",
    )
    demo.add_argument("--size", type=positive_int, default=1000, help="side of the 2-D inputs (default 1000)")
    demo.add_argument("--cost-ns", type=non_negative_int, default=1000,
                      help="busy-wait per call in nanoseconds (default 1000)")
    demo.add_argument("--scheduler", default="processes",
                      help="sync, threads, processes (default), or a dask scheduler address")
    demo.add_argument("--chunks", type=chunks_option, default="auto", help="elements per chunk, or auto")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    from . import demo

    try:
        result = demo.run_demo(args.size, args.cost_ns, args.scheduler, args.chunks, args.seed)
    except ChunkmapError as exc:
        print(f"chunkmap: error: {exc}", file=sys.stderr)
        return 2
    print(demo.report(result, args.cost_ns, args.scheduler))
    return 0
