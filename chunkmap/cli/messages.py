"""A failed element told in command-line words: ``--skip MODULE:EXC``, not ``skip=``.

:class:`~chunkmap.errors.ElementError`'s own message advises ``run``'s keyword arguments;
:func:`element_error_message` builds the command line's from the error's attributes. A
``TypeError`` about the function's arguments (too many inputs, a missing or unexpected keyword)
is a mistake in the command, not an element to skip, and gets advice about the inputs,
``--const`` and ``--kwargs`` instead.
"""

from __future__ import annotations

import builtins
import re
from typing import Collection

from ..errors import ElementError, UnpicklableResultError

__all__ = ["element_error_message", "is_about_arguments"]

#: how Python, C extensions and SWIG wrappers word a call with the wrong arguments
ARGUMENTS_MISTAKE = re.compile(
    r"positional argument|keyword argument|required argument|takes (?:no|exactly|at (?:least|most)|\d+) \w* ?arguments?"
    r"|expected (?:at (?:least|most) |exactly )?\d+ arguments?, got|arguments? \(\d+ given\)"
)


def is_about_arguments(exception_type: str, message: str) -> bool:
    """Whether a ``TypeError`` says ``func`` was called with the wrong arguments.

    Examples
    --------
    >>> is_about_arguments("TypeError", "f() takes 2 positional arguments but 3 were given")
    True
    >>> is_about_arguments("TypeError", "slow_computation expected 2 arguments, got 3")
    True
    >>> is_about_arguments("TypeError", "unsupported operand type(s) for +: 'float' and 'str'")
    False
    """
    return exception_type == "TypeError" and ARGUMENTS_MISTAKE.search(message) is not None


def skip_spec(error: ElementError) -> str:
    """What to pass to ``--skip`` for the error's exception: a builtin's name, else ``MODULE:EXC``."""
    name = error.exception_type
    if isinstance(getattr(builtins, name, None), type):
        return name
    cause = error.__cause__
    if cause is not None and type(cause).__name__ == name:
        return f"{type(cause).__module__}:{type(cause).__qualname__}"
    return f"MODULE:{name}"


def element_error_message(error: ElementError, inputs: int, keywords: Collection[str] = ()) -> str:
    """The one line ``chunkmap run`` prints when ``func`` raised at an element.

    Parameters
    ----------
    error : ElementError
    inputs : int
        How many ``INPUT.npy`` files the job has (``func``'s positional arguments).
    keywords : collection of str
        The names given with ``--const`` and ``--kwargs``.

    Examples
    --------
    >>> error = ElementError((3, 4), (0.5, 2.0), "RuntimeError", "boom")
    >>> element_error_message(error, 2)
    'func raised RuntimeError: boom at element (3, 4) called with inputs (0.5, 2.0); pass --skip RuntimeError to record such elements and go on'
    """
    if isinstance(error, UnpicklableResultError):
        return (
            f"func returned a {error.exception_type} at element {error.coords} called with inputs {error.inputs}, "
            f"which cannot be sent back from the worker process ({error.exception_message}); return plain values "
            f"(numbers, strings), or run with --scheduler threads, which keeps the values in this process"
        )
    told = f"func raised {error.exception_type}: {error.exception_message} at element {error.coords} called with inputs {error.inputs}"
    if not is_about_arguments(error.exception_type, error.exception_message):
        return f"{told}; pass --skip {skip_spec(error)} to record such elements and go on"
    named = "keyword argument" if len(keywords) == 1 else "keyword arguments"
    given = f" and the {named} {', '.join(sorted(keywords))}" if keywords else ""
    return (
        f"{told}: the function does not accept these arguments (it got {inputs} positional "
        f"{'input' if inputs == 1 else 'inputs'}, one per INPUT.npy{given}); give one INPUT.npy per "
        f"argument that varies by element, and the constant ones as --const NAME=VALUE or --kwargs JSON"
    )
