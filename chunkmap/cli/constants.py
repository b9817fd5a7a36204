"""The function's constant arguments on the command line: ``--const NAME=VALUE`` and ``--kwargs JSON``.

Both become :func:`chunkmap.run`'s ``kwargs=``: ``func(in1, in2, ..., **kwargs)`` per element.
A ``--const`` value is read as a Python literal (:func:`ast.literal_eval`: numbers, strings,
``True``, ``None``, tuples, lists, dicts), else kept as the string it is, so ``--const
mode=fast`` and ``--const scale=2.5`` both do what they look like. ``--kwargs`` takes a JSON
object. A name given twice is refused: which value is meant cannot be guessed.
"""

from __future__ import annotations

import argparse
import ast
import json
from typing import Any, Sequence

from ..errors import OptionError

__all__ = ["const_option", "kwargs_option", "function_kwargs"]


def const_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` to ``(name, value)``; an ``argparse`` type.

    Examples
    --------
    >>> const_option("scale=2.5"), const_option("mode=fast"), const_option("label='a=b'")
    (('scale', 2.5), ('mode', 'fast'), ('label', 'a=b'))
    """
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME a keyword argument of the function, e.g. scale=2.5; got {text!r}"
        )
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return name, value


def kwargs_option(text: str) -> dict[str, Any]:
    """A JSON object of keyword arguments; an ``argparse`` type.

    Examples
    --------
    >>> kwargs_option('{"scale": 2.5, "mode": "fast"}')
    {'scale': 2.5, 'mode': 'fast'}
    """
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"scale\": 2.5}}'; got {text!r} ({exc})")
    if not isinstance(found, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of NAME: VALUE such as '{{\"scale\": 2.5}}'; got a {type(found).__name__}: {text!r}"
        )
    return found


def function_kwargs(consts: Sequence[tuple[str, Any]], kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The ``kwargs=`` of the run: ``--kwargs``' object and every ``--const``.

    Raises
    ------
    chunkmap.errors.OptionError
        A name is given twice (by two ``--const`` or by both options).

    Examples
    --------
    >>> function_kwargs([("scale", 2)], {"mode": "fast"})
    {'mode': 'fast', 'scale': 2}
    """
    merged = dict(kwargs or {})
    for name, value in consts:
        if name in merged:
            where = "--kwargs and --const" if kwargs and name in kwargs else "--const twice"
            raise OptionError(f"the keyword argument {name!r} is given by {where}; give each argument once")
        merged[name] = value
    return merged
