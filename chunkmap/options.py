"""Check the options of :func:`chunkmap.run` and put them in the form the engine takes.

Standard library only. Each function returns the normalised option or raises
:class:`~chunkmap.errors.OptionError` (:class:`~chunkmap.errors.NotCallableError` for ``func``)
saying what was received and what is expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any, Callable

from .errors import NotCallableError, OptionError

__all__ = ["function", "skip_classes", "call_kwargs", "call_timeout", "chunk_option", "cancel_event", "output_names"]


def function(func: Any) -> Callable[..., Any]:
    """``func`` itself, if it can be called."""
    if not callable(func):
        raise NotCallableError(
            f"func must be callable; got {type(func).__name__} {func!r:.80}. The function comes "
            f"first: run(func, *arrays)"
        )
    return func


def skip_classes(skip: Any) -> tuple[type[BaseException], ...]:
    """``skip`` as a tuple of exception classes.

    Examples
    --------
    >>> skip_classes(ValueError), skip_classes(None)
    ((<class 'ValueError'>,), ())
    """
    if skip is None:
        return ()
    classes = skip if isinstance(skip, tuple) else (skip,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise OptionError(
                f"skip must be an exception class or a tuple of them (e.g. skip=ValueError); "
                f"got {skip!r} with {cls!r} of type {type(cls).__name__}"
            )
    return classes


def call_kwargs(kwargs: Any) -> dict[str, Any] | None:
    """``kwargs`` as a dict of argument names to values, or None."""
    if kwargs is None:
        return None
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise OptionError(
            f"kwargs must be a mapping of argument names to values, passed to every call of "
            f"func; got {type(kwargs).__name__} {kwargs!r:.80}"
        )
    return dict(kwargs)


def call_timeout(timeout: Any) -> float | None:
    """``timeout`` in seconds per call, or None."""
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    raise OptionError(f"timeout must be a positive number of seconds per call, or None; got {timeout!r}")


def chunk_option(chunks: Any) -> int | str:
    """``"auto"``, or a positive int of unmasked elements per chunk.

    Examples
    --------
    >>> chunk_option("auto"), chunk_option(7)
    ('auto', 7)
    """
    if isinstance(chunks, str) and chunks == "auto":
        return chunks
    if isinstance(chunks, Integral) and not isinstance(chunks, bool) and chunks > 0:
        return int(chunks)
    raise OptionError(
        f"chunks must be 'auto' or a positive int (unmasked elements per chunk); got {chunks!r}"
    )


def cancel_event(cancel: Any) -> Any:
    """``cancel``: None, or an event (anything with ``is_set()``, such as ``threading.Event``)."""
    if cancel is None or callable(getattr(cancel, "is_set", None)):
        return cancel
    raise OptionError(
        f"cancel must be a threading.Event (set it from another thread to stop the run), or None; "
        f"got {type(cancel).__name__} {cancel!r:.80}"
    )


def output_names(outputs: Any) -> tuple[str, ...] | None:
    """``outputs`` as the tuple of output names, or None for a single output.

    An int ``n`` names its outputs ``"out0"`` to ``"out{n-1}"``; names must be distinct identifiers.

    Examples
    --------
    >>> output_names(None), output_names(2), output_names(["price", "vega"])
    (None, ('out0', 'out1'), ('price', 'vega'))
    """
    if outputs is None:
        return None
    if isinstance(outputs, Integral) and not isinstance(outputs, bool) and outputs > 0:
        return tuple(f"out{number}" for number in range(int(outputs)))
    names = tuple(outputs) if isinstance(outputs, (tuple, list)) else ()
    if names and all(isinstance(name, str) and name.isidentifier() for name in names) and len(set(names)) == len(names):
        return names
    raise OptionError(
        f"outputs must be a positive int or a tuple of distinct identifier names, one per value func "
        f"returns (e.g. outputs=('price', 'vega') for a func returning a pair); got {outputs!r:.80}"
    )
