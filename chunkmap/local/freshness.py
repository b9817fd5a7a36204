"""Whether the user's code has changed since the worker processes started: then they are stale.

Worker processes import the user's modules once (to unpickle ``func``) and keep them. When a
module is reloaded in this process (``importlib.reload`` gives it a new ``__spec__``) or its file
changes on disk, workers started before would go on computing with the old code, so the pool
must start afresh. Only the user's modules count: those whose file lies outside the standard
library and the installed packages (which do not change under a running session).
"""

from __future__ import annotations

import functools
import os
import sys
import types
from typing import Any

from ..system import is_installed_file

__all__ = ["CodeState"]


class CodeState:
    """The state of the user's modules at one moment: each one's spec object and file size and mtime.

    Examples
    --------
    >>> state = CodeState.now()
    >>> state.changed()
    False
    """

    def __init__(self, modules: dict[str, tuple[Any, tuple[int, int] | None]]) -> None:
        self.modules = modules

    @classmethod
    def now(cls) -> CodeState:
        return cls({name: _state(module) for name, module in list(sys.modules.items()) if _is_users(module)})

    def changed(self) -> bool:
        """Whether a module recorded here was reloaded or its file changed; modules new since are recorded."""
        for name, module in list(sys.modules.items()):
            if not _is_users(module):
                continue
            state = _state(module)
            recorded = self.modules.setdefault(name, state)
            if recorded[0] is not state[0] or recorded[1] != state[1]:
                return True
        return False


def _state(module: types.ModuleType) -> tuple[Any, tuple[int, int] | None]:
    try:
        stat = os.stat(module.__file__)
    except (OSError, TypeError):
        return getattr(module, "__spec__", None), None
    return getattr(module, "__spec__", None), (stat.st_size, stat.st_mtime_ns)


def _is_users(module: Any) -> bool:
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and _is_users_file(path)


@functools.lru_cache(maxsize=None)
def _is_users_file(path: str) -> bool:
    return path.endswith(".py") and not is_installed_file(path)
