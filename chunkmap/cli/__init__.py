"""The ``chunkmap`` command line (also ``python -m chunkmap``).

``chunkmap demo`` runs the seed's job on the bundled SWIG library; ``chunkmap run`` runs a job from
files (see :mod:`chunkmap.cli.jobs`; the result file is :mod:`chunkmap.result_file`); ``status``,
``failures`` and ``remove`` inspect and clean a checkpoint location (a directory or a ``redis://``
URL; see :mod:`chunkmap.checkpoint`)::

    chunkmap run MODULE:FUNC IN1.npy [IN2.npy ...] -o result.npz | -o store.zarr
                 [--mask EXPR] [--skip MODULE:EXC ...] [--scheduler S] [--chunks N]
                 [--checkpoint DIR] [--timeout SECONDS] [--progress | --no-progress]
                 [--const NAME=VALUE ...] [--kwargs JSON]
    chunkmap status CKPT                      every run there: progress, failures, running or not
    chunkmap failures CKPT [--run ID] [--csv] one run's failed elements (columns x0, x1, ... per
                                              axis, kind, type, message)
    chunkmap remove CKPT RUN [RUN ...]        delete stored runs (never a running one)

A run is named by its id or any unique prefix of it; ``--run`` may be left out when the location
holds one run. ``--csv`` writes every failure, untruncated, as CSV (RFC 4180, ``csv`` module).

Exit status: 0 on success (also for a location without runs), 1 when a job's function raised an
exception not listed in ``--skip``, 2 for a usage or input error and any chunkmap error (the message
is printed on stderr after ``chunkmap: error:``: a function spec that is not an importable module's
name, a module that raises as it is imported, a missing location, an unknown or ambiguous run, a
running run to remove, a result that cannot be written), 130 when interrupted with Ctrl-C. Messages
speak in options (``--skip RuntimeError``), not in ``run()``'s keywords
(:mod:`chunkmap.cli.messages`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from .. import __version__
from ..errors import ChunkmapError, ElementError, ResultWriteError
from . import checkpoints
from .constants import const_option, function_kwargs, kwargs_option
from .messages import element_error_message

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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text}")
    return value


RUN_DESCRIPTION = """\
Call FUNC(in1, in2, ...) on every element of the .npy inputs (broadcast together; chunkmap.run reads
the files in place, chunk by chunk) and write the coordinates, values and failures of the computed
elements to an .npz (read it back with chunkmap.result_file.load_result, or np.load). MODULE is
imported: MODULE:FUNC may name any importable function, e.g. a SWIG-wrapped C function.

--mask takes a condition over the inputs in1..inN (True = do not compute): numbers (3, -1e10,
nan, inf), comparisons < <= > >= == != (chains like 0 <= in1 < 1 too), ~ (not), & (and), | (or),
parentheses, and isnan(), isinf(), isfinite(), abs(). Precedence, tightest first: ~ and unary -,
comparisons, &, |; so "in1 <= -1e10 | isnan(in2)" means "(in1 <= -1e10) | isnan(in2)". Nothing
else is accepted: the mask is parsed, never evaluated as Python.

--const NAME=VALUE (repeatable; VALUE a Python literal, else a string) and --kwargs JSON (an object)
are the function's constant keyword arguments: FUNC(in1, in2, ..., NAME=VALUE, ...).

-o STORE.zarr (a name ending in .zarr, or a folder holding a zarr group) writes into a zarr store
instead of an .npz: chunkmap.run's output=, for results larger than memory. The tasks write each
finished box into it; the store is the job's checkpoint (no --checkpoint with it): the same command
run again after a crash or Ctrl-C resumes from the finished boxes, and another job into the same
store is refused while one runs. Read it with zarr or xarray.open_zarr: one float64 array per output
(NaN where nothing was computed), a status array (0 computed, 1 masked, 2 exception, 3 crash,
4 timeout) and the failures.

--checkpoint, --timeout and --progress are passed to chunkmap.run only when given.
"""

RUN_EPILOG = """exit status:
  0    the job is done and the result written
  1    the job failed: FUNC raised an exception not listed in --skip (the element, its inputs
       and what to do are printed)
  2    a bad request: arguments, function or exception spec, a module that fails to import,
       inputs, mask, output, checkpoint, or a result that cannot be written
  130  interrupted (Ctrl-C); with --checkpoint or -o STORE.zarr, finished chunks are kept
       and the same command resumes
"""


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="run MODULE:FUNC over .npy inputs and write the result to an .npz or a zarr store",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("function", metavar="MODULE:FUNC", help="the scalar function, e.g. chunkmap.stub.slowlib:slow_computation")
    run.add_argument("inputs", metavar="INPUT.npy", nargs="+", help="input arrays in1, in2, ... (numpy.save files)")
    run.add_argument("-o", "--output", metavar="RESULT.npz|STORE.zarr", required=True,
                     help="where to write the result: an .npz file, or a zarr store (*.zarr) the tasks write into "
                          "and the same command resumes from")
    run.add_argument("--mask", metavar="EXPR", help="condition over in1..inN; True = do not compute")
    run.add_argument("--skip", metavar="MODULE:EXC", action="append", default=[],
                     help="record elements raising this exception as failures and go on (repeatable; "
                          "builtins may be named alone, e.g. ValueError)")
    run.add_argument("--scheduler", default=None,
                     help="sync, threads, processes or a dask scheduler address (default: dask's "
                          "scheduler setting, else processes)")
    run.add_argument("--chunks", type=chunks_option, default="auto", help="unmasked elements per chunk, or auto")
    run.add_argument("--checkpoint", metavar="DIR", default=None,
                     help="persist finished chunks there; running again resumes")
    run.add_argument("--timeout", metavar="SECONDS", type=positive_float, default=None,
                     help="record a call running longer as a timeout failure")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show a progress bar (default: chunkmap.run's default)")
    run.add_argument("--const", metavar="NAME=VALUE", type=const_option, action="append", default=[],
                     help="a constant keyword argument of FUNC (repeatable); VALUE is a Python literal "
                          "(2.5, 'text', True, (1, 2)), else taken as a string")
    run.add_argument("--kwargs", metavar="JSON", type=kwargs_option, default=None,
                     help='constant keyword arguments of FUNC as a JSON object, e.g. \'{"scale": 2.5}\'')


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2), like chunkmap's own."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="chunkmap",
        description="Run a slow scalar function over every element of large numpy arrays, in parallel.",
    )
    parser.add_argument("--version", action="version", version=f"chunkmap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the seed's job on the bundled SWIG library and print a summary",
        description="Two (size x size) float64 arrays with ~10% masked sentinels, "
        "slowlib.slow_computation at a chosen per-call cost, InternalError skipped.",
    )
    demo.add_argument("--size", type=positive_int, default=1000, help="side of the 2-D inputs (default 1000)")
    demo.add_argument("--cost-ns", type=non_negative_int, default=1000,
                      help="busy-wait per call in nanoseconds (default 1000)")
    demo.add_argument("--scheduler", default=None,
                      help="sync, threads, processes or a dask scheduler address (default: dask's "
                          "scheduler setting, else processes)")
    demo.add_argument("--chunks", type=chunks_option, default="auto", help="elements per chunk, or auto")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    add_run_parser(commands)
    checkpoints.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    command = checkpoints.COMMANDS.get(args.command, demo_command)
    try:
        return command(args)
    except ChunkmapError as exc:
        return error(str(exc))
    except BrokenPipeError:  # `chunkmap failures CKPT | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 0


def error(message: str, status: int = 2) -> int:
    """Print ``chunkmap: error: message`` on stderr; returns ``status``."""
    print(f"chunkmap: error: {message}", file=sys.stderr)
    return status


def demo_command(args: argparse.Namespace) -> int:
    """``chunkmap demo``: the seed's job and its summary."""
    from . import demo

    result = demo.run_demo(args.size, args.cost_ns, args.scheduler, args.chunks, args.seed)
    print(demo.report(result, args.cost_ns))
    return 0


def run_command(args: argparse.Namespace) -> int:
    """``chunkmap run``: the job, its summary on stdout, the result in ``args.output``."""
    from . import demo, jobs

    options = {name: getattr(args, name) for name in jobs.OPTIONAL_RUN_OPTIONS if getattr(args, name) is not None}
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # MODULE:FUNC is found in the current directory, as with python -m
    try:
        kwargs = function_kwargs(args.const, args.kwargs)
        result = jobs.run_job(
            args.function,
            args.inputs,
            mask=args.mask,
            skip=args.skip,
            output=args.output,
            kwargs=kwargs,
            chunks=args.chunks,
            scheduler=args.scheduler,
            **options,
        )
    except ElementError as exc:  # the job ran and failed: not a usage error
        return error(element_error_message(exc, len(args.inputs), kwargs), 1)
    except ResultWriteError as exc:
        return error(f"{exc}; {not_written_advice(args.checkpoint)}")
    except ChunkmapError as exc:
        return error(str(exc))
    except KeyboardInterrupt:
        kept = f"; finished chunks are kept in the checkpoint {args.checkpoint}" if args.checkpoint else ""
        if jobs.is_store(args.output):
            kept = f"; finished boxes are kept in the store {args.output}: the same command resumes"
        print(f"chunkmap: interrupted{kept}", file=sys.stderr)
        return 130
    shape = "x".join(map(str, result.shape)) or "0-d"
    inputs = "input" if len(args.inputs) == 1 else "inputs"
    title = f"chunkmap run: {args.function} over {len(args.inputs)} {inputs} of shape {shape}, scheduler={result.stats.scheduler}"
    print(demo.report(result, title=title))
    resumed = getattr(result.stats, "resumed", 0)
    if resumed:
        source = f"the store {args.output}" if jobs.is_store(args.output) else f"the checkpoint {args.checkpoint}"
        print(f"resumed   {resumed:>14,}  from {source}")
    print(f"result    {args.output}")
    return 0


def not_written_advice(checkpoint: str | None) -> str:
    """What to do when the run finished but its result file could not be written."""
    if checkpoint is None:
        return ("the computed result is lost; fix the cause and run again (with --checkpoint DIR finished "
                "chunks are kept when something fails)")
    return (f"every finished chunk is kept in the checkpoint {checkpoint}: fix the cause and run the same command "
            f"again with --checkpoint {checkpoint}, which writes the result from the checkpoint without computing "
            f"anything again")
