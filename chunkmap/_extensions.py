"""chunkmap's C extensions and their pure-Python twins: one convention, one switch.

The convention
--------------
A C extension of chunkmap is one file ``chunkmap/<package>/_<name>.c``, built by ``setup.py``
(one helper, the same flags for all) into the module ``chunkmap.<package>._<name>``. Its twin is
the plain Python module ``chunkmap/<package>/_<name>_py.py``: the same public names, the same
contract, the same errors; the tests run both and compare them. The module that uses them takes
its functions from ``load("chunkmap.<package>._<name>").active`` and documents the contract.
Today: ``chunkmap._hotloop`` (the per-element loop, used by :mod:`chunkmap.loop`) and
``chunkmap.npy._pread`` (positional reads, used by :mod:`chunkmap.npy._io`).

The twin is used when the environment variable ``CHUNKMAP_PURE_PYTHON`` is set (to anything but
``0``) when chunkmap is imported, for every extension at once, or when the extension is not
built: the build is optional, so ``pip install`` succeeds without it (with a warning in the build
output), and importing chunkmap then warns once per extension with :class:`~chunkmap.errors.ChunkmapWarning`
saying how to get the compiled one (set the variable to choose the twins without a warning).

Examples
--------
>>> hotloop = load("chunkmap._hotloop")
>>> hotloop.twin.__name__, hotloop.implementation in ("c", "python")
('chunkmap._hotloop_py', True)
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from types import ModuleType

from .errors import ChunkmapWarning

__all__ = ["ENVIRONMENT_SWITCH", "Extension", "load", "loaded", "pure_python_requested"]

#: The environment variable that selects the pure-Python twins of every C extension.
ENVIRONMENT_SWITCH = "CHUNKMAP_PURE_PYTHON"

_HOW_TO_BUILD = (
    "to get the compiled one, install a C compiler and the Python headers (Debian: apt-get install "
    "gcc python3-dev) and reinstall chunkmap (pip install --force-reinstall --no-deps chunkmap, or "
    "python setup.py build_ext --inplace in a checkout); set {switch}=1 to choose the twins "
    "without this warning"
)


@dataclass(frozen=True)
class Extension:
    """A C extension and its twin, and which of them chunkmap uses.

    Attributes
    ----------
    name : str
        The compiled module's name, ``chunkmap.<package>._<name>``.
    compiled : module or None
        The compiled module; None when it is not built or does not import.
    twin : module
        The pure-Python twin, ``<name>_py``.
    active : module
        The one in use: ``twin`` if requested by the environment switch or if ``compiled`` is
        None, else ``compiled``.
    """

    name: str
    compiled: ModuleType | None
    twin: ModuleType
    active: ModuleType

    @property
    def implementation(self) -> str:
        """``"c"`` or ``"python"``: which of the two is :attr:`active`."""
        return "python" if self.active is self.twin else "c"


_LOADED: dict[str, Extension] = {}


def pure_python_requested() -> bool:
    """Whether ``CHUNKMAP_PURE_PYTHON`` asks for the twins (set, and neither empty nor ``0``)."""
    return os.environ.get(ENVIRONMENT_SWITCH, "") not in ("", "0")


def load(name: str) -> Extension:
    """The extension ``name`` (``chunkmap.<package>._<name>``) and its twin, chosen once.

    Warns with :class:`~chunkmap.errors.ChunkmapWarning` when the compiled module does not import
    and the twins were not requested.
    """
    extension = _LOADED.get(name)
    if extension is not None:
        return extension
    twin = importlib.import_module(f"{name}_py")
    try:
        compiled: ModuleType | None = importlib.import_module(name)
    except ImportError as exc:
        compiled = None
        if not pure_python_requested():
            warnings.warn(
                f"{name} does not import ({exc}): using its slower pure-Python twin "
                f"{twin.__name__}; " + _HOW_TO_BUILD.format(switch=ENVIRONMENT_SWITCH),
                ChunkmapWarning,
                stacklevel=2,
            )
    active = twin if compiled is None or pure_python_requested() else compiled
    extension = _LOADED[name] = Extension(name, compiled, twin, active)
    return extension


def loaded() -> dict[str, str]:
    """The extensions loaded so far, name -> ``"c"`` or ``"python"``."""
    return {name: extension.implementation for name, extension in _LOADED.items()}
