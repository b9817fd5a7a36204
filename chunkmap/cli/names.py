"""``MODULE:NAME`` to the object it names, by importing the module: the user's explicit choice of
code to run (``chunkmap run MODULE:FUNC``, ``--skip MODULE:EXC``).
"""

from __future__ import annotations

import builtins
import importlib
from types import ModuleType
from typing import Any, Callable

from ..errors import NotCallableError, OptionError

__all__ = ["resolve", "resolve_function", "resolve_exception"]


def resolve(spec: str, what: str = "object", example: str = "chunkmap.stub.slowlib:slow_computation") -> Any:
    """Import ``"package.module:name"`` (``name`` may be dotted, ``Class.attribute``).

    Parameters
    ----------
    spec : str
        ``MODULE:NAME``.
    what : str
        What the object is for, named in error messages.
    example : str
        A valid spec, shown when ``spec`` is malformed.

    Raises
    ------
    chunkmap.errors.OptionError
        Not of the form ``MODULE:NAME``, ``MODULE`` is not an absolute dotted name (a path, a
        relative import), the module cannot be found, raises as it is imported, or has no such
        name.

    Examples
    --------
    >>> resolve("os.path:join", "function").__name__
    'join'
    >>> resolve("os.path:joyn", "function")
    Traceback (most recent call last):
    ...
    chunkmap.errors.OptionError: module 'os.path' has no attribute 'joyn' (from the function 'os.path:joyn')
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise OptionError(
            f"the {what} must be given as MODULE:NAME, e.g. {example}; got {spec!r}"
        )
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise OptionError(
            f"the {what} {spec!r} names the module {module_name!r}, which is not an absolute module name; "
            f"expected dotted Python names such as package.module (not a path or a relative import): run "
            f"from the folder holding the module, or add that folder to PYTHONPATH"
        )
    module = _import(module_name, spec, what)
    found: Any = module
    for number, part in enumerate(name.split(".")):
        try:
            found = getattr(found, part)
        except AttributeError:
            owner = module_name if number == 0 else f"{module_name}:{'.'.join(name.split('.')[:number])}"
            raise OptionError(f"module {owner!r} has no attribute {part!r} (from the {what} {spec!r})") from None
    return found


def _import(module_name: str, spec: str, what: str) -> ModuleType:
    """The module, or an OptionError saying why it cannot be imported (missing, or raising as it runs)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = f"module {exc.name!r}" if exc.name else "a module"
        raise OptionError(
            f"cannot import the {what} {spec!r}: {missing} is not found; check the spelling and that "
            f"the module is importable here (installed, in the current directory, or on PYTHONPATH)"
        ) from None
    except (Exception, SystemExit) as exc:  # the module's own code failed as it ran
        raise OptionError(
            f"cannot import the {what} {spec!r}: importing the module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}; fix the module (python -c 'import {module_name}' shows the traceback)"
        ) from None


def resolve_function(spec: str) -> Callable[..., Any]:
    """The callable named by ``MODULE:FUNC``.

    Raises
    ------
    chunkmap.errors.OptionError
        See :func:`resolve`.
    chunkmap.errors.NotCallableError
        The object is not callable.
    """
    func = resolve(spec, "function")
    if not callable(func):
        raise NotCallableError(
            f"{spec!r} is a {type(func).__name__} ({func!r:.60}), not a function; expected MODULE:FUNC naming "
            f"a callable, e.g. chunkmap.stub.slowlib:slow_computation"
        )
    return func


def resolve_exception(spec: str) -> type[BaseException]:
    """The exception class named by ``MODULE:EXC``; a bare builtin name such as ``ValueError`` also works.

    Examples
    --------
    >>> resolve_exception("ZeroDivisionError"), resolve_exception("chunkmap.errors:OptionError")
    (<class 'ZeroDivisionError'>, <class 'chunkmap.errors.OptionError'>)
    """
    if ":" not in spec and isinstance(getattr(builtins, spec, None), type):
        spec = f"builtins:{spec}"
    found = resolve(spec, "exception", "chunkmap.stub.slowlib:InternalError")
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise OptionError(
            f"{spec!r} is {found!r:.60}, not an exception class; expected MODULE:EXC naming an exception "
            f"class, e.g. chunkmap.stub.slowlib:InternalError or builtins:ValueError"
        )
    return found
