"""Progress of a run, counted in elements: done/total, rate, ETA and failures.

Fed by the engine from any thread: element by element from isolated workers' heartbeats, chunk
by chunk otherwise. Counts only ever grow: an element re-run after a crash is counted once.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

from .errors import OptionError

__all__ = ["Progress", "make_progress"]

#: ``progress=`` callables receive (done, total, failed) after every change
Callback = Callable[[int, int, int], None]


class Progress:
    """A thread-safe element counter reporting to a tqdm bar and/or a callback."""

    def __init__(self, total: int, bar: Any = None, callback: Callback | None = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._bar = bar
        self._callback = callback
        self._lock = threading.Lock()

    def advance(self, elements: int, failed: int = 0) -> None:
        """Count ``elements`` more elements finished, ``failed`` of them failures."""
        if elements <= 0 and failed <= 0:
            return
        with self._lock:
            elements = min(elements, self.total - self.done)
            self.done += elements
            self.failed += failed
            if self._bar is not None:
                if failed:
                    self._bar.set_postfix(failed=f"{self.failed:,}", refresh=False)
                self._bar.update(elements)
            if self._callback is not None:
                self._callback(self.done, self.total, self.failed)

    def fail(self, count: int) -> None:
        """Count ``count`` failures among elements already counted as finished."""
        self.advance(0, count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def interactive() -> bool:
    """True in Jupyter/IPython and when standard error is a terminal."""
    if "ipykernel" in sys.modules or hasattr(sys, "ps1"):
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _tqdm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None


def make_progress(progress: bool | Callback | None, total: int) -> Progress | None:
    """The reporter for ``run(progress=...)``: None for off.

    ``None`` means on when interactive (Jupyter, IPython, a terminal); ``True`` a tqdm bar
    (``tqdm.auto``: a widget in Jupyter, text in a terminal); ``False`` off; a callable is
    called with ``(done, total, failed)`` after every change.

    Examples
    --------
    >>> seen = []
    >>> reporter = make_progress(lambda *counts: seen.append(counts), total=5)
    >>> reporter.advance(3); reporter.advance(2, failed=1)
    >>> seen
    [(3, 5, 0), (5, 5, 1)]
    """
    if callable(progress):
        return Progress(total, callback=progress)
    if progress is None:
        progress = interactive() and _tqdm_installed()
    if progress is False:
        return None
    if progress is not True:
        raise OptionError(
            f"progress must be None (on when interactive), True, False or a callable "
            f"receiving (done, total, failed); got {progress!r}"
        )
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise OptionError(
            "progress=True draws a bar with tqdm, which is not installed; install the extra: "
            "pip install 'chunkmap[progress]' (or pass progress=False)"
        ) from None
    bar = tqdm(total=total, unit="el", unit_scale=True, desc="chunkmap", smoothing=0.05, dynamic_ncols=True)
    return Progress(total, bar=bar)
