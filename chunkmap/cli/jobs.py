"""A job from files: what ``chunkmap run MODULE:FUNC IN.npy ... -o OUT.npz`` does, as a function.

:func:`run_job` resolves ``MODULE:FUNC`` and the ``--skip`` classes (:mod:`chunkmap.cli.names`),
compiles the mask (:mod:`chunkmap.cli.maskexpr`), checks the inputs and the output before anything
runs, hands the input paths to :func:`chunkmap.run` (:mod:`chunkmap.cli.inputs`) and writes the
result file (:mod:`chunkmap.result_file`). An output named ``*.zarr`` (or a folder holding a zarr
group) is ``run``'s ``output=`` store instead (:mod:`chunkmap.stored`): the tasks write into it,
and the same job run again resumes from its finished boxes.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, Sequence

from .. import core
from ..errors import OptionError
from ..result import Result
from ..result_file import save_result
from .inputs import job_inputs
from .maskexpr import compile_mask
from .names import resolve_exception, resolve_function

__all__ = ["OPTIONAL_RUN_OPTIONS", "check_output", "is_store", "run_job"]

#: keyword options of :func:`chunkmap.run` that a job passes only when they are given.
OPTIONAL_RUN_OPTIONS = ("checkpoint", "timeout", "progress")


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether the output ``path`` names a zarr store: ``*.zarr``, or a folder holding a zarr group.

    >>> is_store("out.zarr"), is_store("runs/out.zarr/"), is_store("result.npz")
    (True, True, False)
    """
    path = os.fspath(path)
    return path.rstrip("/").endswith(".zarr") or any(
        os.path.isfile(os.path.join(path, name)) for name in ("zarr.json", ".zgroup"))


def check_output(path: str | os.PathLike[str]) -> str:
    """Fail early, before a long run, when ``path`` cannot be written.

    Raises
    ------
    chunkmap.errors.OptionError
        The folder does not exist or is not writable, or ``path`` is a folder (a file, for a store).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path.rstrip("/")))
    if is_store(path):
        if os.path.exists(path) and not os.path.isdir(path):
            raise OptionError(f"the output {path!r} is a file; expected a zarr store's folder such as out.zarr")
    elif os.path.isdir(path):
        raise OptionError(f"the output {path!r} is a directory; expected a file name such as result.npz, "
                          f"or a zarr store such as out.zarr")
    if not os.path.isdir(folder):
        raise OptionError(f"the output folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OptionError(f"the output folder {folder!r} is not writable")
    return path


def run_job(
    function: str,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    mask: str | None = None,
    skip: Sequence[str] = (),
    output: str | os.PathLike[str] | None = None,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Result:
    """Run ``MODULE:FUNC`` over ``.npy`` inputs and optionally write the result to ``output``.

    Parameters
    ----------
    function : str
        ``MODULE:FUNC``, called as ``func(in1, in2, ...)`` per element.
    inputs : sequence of path
        The ``.npy`` files, ``in1..inN`` in this order; handed to :func:`chunkmap.run` as paths
        (see :mod:`chunkmap.cli.inputs`).
    mask : str, optional
        A mask expression (:mod:`chunkmap.cli.maskexpr`); True = do not compute.
    skip : sequence of str
        ``MODULE:EXC`` exception classes to record in ``result.failures`` instead of stopping.
    output : path, optional
        Write the result there with :func:`chunkmap.result_file.save_result` (checked before the
        run starts); a zarr store (:func:`is_store`) is :func:`chunkmap.run`'s ``output=``
        instead, which resumes from the boxes it holds (and is the checkpoint: no ``checkpoint``
        with it).
    kwargs : dict, optional
        ``func``'s constant keyword arguments (``--const``, ``--kwargs``), :func:`chunkmap.run`'s
        ``kwargs=``; stored in the result file's ``job`` entry (as JSON, ``repr`` for other values).
    **options
        Passed on to :func:`chunkmap.run` (``chunks``, ``scheduler``, ``client``, and
        ``checkpoint``, ``timeout``, ``progress`` when this version of ``run`` has them).

    Returns
    -------
    Result

    Raises
    ------
    chunkmap.errors.ChunkmapError
        Bad function, exception, mask, inputs or options, and whatever :func:`chunkmap.run` raises.
    """
    func = resolve_function(function)
    exceptions = tuple(resolve_exception(spec) for spec in skip)
    compiled = compile_mask(mask, len(inputs)) if mask is not None else None
    _check_run_options(options)
    store = output is not None and is_store(output)
    if output is not None:
        output = check_output(output)
    if store and options.get("checkpoint") is not None:
        raise OptionError(f"--checkpoint {options['checkpoint']} and the zarr store -o {output}: the store is the job's "
                          f"checkpoint (the same command resumes from its finished boxes); leave out --checkpoint")
    if kwargs:
        options["kwargs"] = kwargs
    if store:
        options["output"] = output
    result = core.run(func, *job_inputs(inputs), mask=compiled, skip=exceptions, **options)
    if output is not None and not store:
        job = {
            "function": function,
            "inputs": [os.fspath(path) for path in inputs],
            "mask": None if compiled is None else compiled.text,
            "skip": list(skip),
            "kwargs": json.loads(json.dumps(kwargs or {}, default=repr)),
        }
        save_result(result, output, job=job)
    return result


def _check_run_options(options: dict[str, Any]) -> None:
    accepted = inspect.signature(core.run).parameters
    for name in options:
        if name not in accepted:
            raise OptionError(
                f"the {name}= option needs a chunkmap.run() that accepts {name}=, and this version of chunkmap "
                f"does not support it yet; leave out --{name}"
            )
