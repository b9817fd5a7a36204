"""Progress of a run, counted in elements: done/total, rate, ETA and failures.

Fed by the engine from any thread: element by element from isolated workers' heartbeats, chunk
by chunk otherwise. Counts only ever grow: an element re-run after a crash is counted once.

The rate and ETA are this run's: elements read back from a checkpoint are the bar's ``initial``
(its position starts there, and tqdm rates only later updates), and the bar's clock starts
with ``run``, so its final rate is ``result.stats.rate``. The default ``smoothing=0`` shows the
average since the start: with chunk-sized updates tqdm's moving average swings by orders of
magnitude (a 98k calls/s run ended at "17.2 el/s").
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable

from .errors import OptionError

__all__ = ["Progress", "make_progress", "bar_name"]

#: ``progress=`` callables receive (done, total, failed) after every change
Callback = Callable[[int, int, int], None]

#: what chunkmap passes to tqdm; a ``progress=`` dict is merged over it
BAR_DEFAULTS: dict[str, Any] = {"unit": "el", "unit_scale": True, "smoothing": 0, "dynamic_ncols": True}

#: tqdm options only chunkmap sets: the run decides them
RUN_OWNED = ("total", "initial")


class Progress:
    """A thread-safe element counter reporting to a tqdm bar and/or a callback.

    ``started``: the run's start (a ``time.perf_counter()`` reading), where the bar's clock
    starts. ``owns_bar``: close the bar at the end (False for a bar the caller passed in,
    which is refreshed and left open).
    """

    def __init__(self, total: int, bar: Any = None, callback: Callback | None = None,
                 started: float | None = None, owns_bar: bool = True) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._bar = bar
        self._callback = callback
        self._owns_bar = owns_bar
        self._lock = threading.Lock()
        if bar is not None and not bar.disable and started is not None:
            bar.start_t = bar.last_print_t = time.time() - (time.perf_counter() - started)

    def advance(self, elements: int, failed: int = 0) -> None:
        """Count ``elements`` more elements computed by this run, ``failed`` of them failures."""
        self._count(elements, failed, resumed=False)

    def resume(self, elements: int, failed: int = 0) -> None:
        """Count ``elements`` read back from a checkpoint: done, but not part of the rate."""
        self._count(elements, failed, resumed=True)

    def masked(self, elements: int) -> None:
        """Count ``elements`` found masked as a lazy input's box was read: done, but not part of the rate."""
        self._count(elements, 0, resumed=True)

    def fail(self, count: int) -> None:
        """Count ``count`` failures among elements already counted as finished."""
        self.advance(0, count)

    def _count(self, elements: int, failed: int, resumed: bool) -> None:
        if elements <= 0 and failed <= 0:
            return
        with self._lock:
            elements = min(elements, self.total - self.done)
            self.done += elements
            self.failed += failed
            if self._bar is not None:
                self._show(elements, failed, resumed)
            if self._callback is not None:
                self._callback(self.done, self.total, self.failed)

    def _show(self, elements: int, failed: int, resumed: bool) -> None:
        bar = self._bar
        if bar.disable:  # a disabled bar has no state to show (nor an ``initial``)
            bar.n = self.done
            return
        if failed:
            bar.set_postfix(failed=f"{self.failed:,}", refresh=False)
        if resumed:
            bar.initial += elements
            bar.n += elements
            bar.last_print_n = bar.n
            bar.refresh()
        else:
            bar.update(elements)

    def close(self) -> None:
        """Show the final state; close the bar if chunkmap made it."""
        if self._bar is None:
            return
        if self._owns_bar:
            self._bar.close()
        else:
            self._bar.refresh()


def _is_notebook_bar_class(cls: type) -> bool:
    notebook = sys.modules.get("tqdm.notebook")
    return notebook is not None and isinstance(cls, type) and issubclass(cls, notebook.tqdm_notebook)


class _NotebookBar:
    """A notebook's tqdm widget, replaced by its final text line when it closes.

    A saved notebook keeps each output as it was last displayed: a widget's text fallback is
    frozen at 0% (GitHub, nbviewer and HTML exports show no widgets). So the widget is displayed
    under a display id, and closing the bar replaces that output with the bar's final line, the
    same in the live notebook and in every saved copy.
    """

    def __init__(self, bar: Any) -> None:
        from IPython.display import display

        self._bar = bar
        self._handle = display(bar.container, display_id=True) if not bar.disable else None
        bar.displayed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._bar, name, value)

    def close(self) -> None:
        final = self._bar.format_meter(**self._bar.format_dict)
        self._bar.close()
        if self._handle is not None:
            self._handle.update({"text/plain": final}, raw=True)


def interactive() -> bool:
    """True in Jupyter/IPython and when standard error is a terminal."""
    if "ipykernel" in sys.modules or hasattr(sys, "ps1"):
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _tqdm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None


def _is_tqdm(progress: Any) -> bool:
    """Whether ``progress`` is a tqdm bar (without importing tqdm: a bar means it is imported)."""
    std = sys.modules.get("tqdm.std")
    return std is not None and isinstance(progress, std.tqdm)


def bar_name(func: Callable[..., Any]) -> str:
    """A short name for ``func``'s bar: its qualified name (a ``per_worker``'s factory's)."""
    from .workers import underlying

    func = underlying(func)
    return getattr(func, "__qualname__", None) or type(func).__name__


def make_progress(progress: Any, total: int, *, desc: str = "chunkmap",
                  started: float | None = None) -> Progress | None:
    """The reporter for ``run(progress=...)``: None for off.

    ``None`` means on when interactive (Jupyter, IPython, a terminal); ``True`` a tqdm bar
    (``tqdm.auto``: a widget in Jupyter, text in a terminal) named ``desc``; a dict the same
    bar with these tqdm options over chunkmap's (``desc``, ``unit="el"``, ``unit_scale``,
    ``smoothing=0``, ...; ``total`` and ``initial`` are the run's); a tqdm bar is reset to
    ``total``, updated and left open; ``False`` off; a callable is called with
    ``(done, total, failed)`` after every change (``done`` includes resumed elements).
    ``started`` (a ``time.perf_counter()`` reading) is where the bar's clock starts.

    Examples
    --------
    >>> seen = []
    >>> reporter = make_progress(lambda *counts: seen.append(counts), total=5)
    >>> reporter.resume(2); reporter.advance(3, failed=1)
    >>> seen
    [(2, 5, 0), (5, 5, 1)]
    """
    if _is_tqdm(progress):
        progress.reset(total=total)
        return Progress(total, bar=progress, started=started, owns_bar=False)
    if callable(progress):
        return Progress(total, callback=progress)
    if progress is None:
        progress = interactive() and _tqdm_installed()
    if progress is False:
        return None
    if progress is not True and not isinstance(progress, Mapping):
        raise OptionError(
            f"progress must be None (on when interactive), True, False, a dict of tqdm options, "
            f"a tqdm bar or a callable receiving (done, total, failed); got {progress!r:.80}"
        )
    options = {"desc": desc, **BAR_DEFAULTS, **_bar_options(progress)}
    return Progress(total, bar=_new_bar(total, options), started=started)


def _bar_options(progress: bool | Mapping[str, Any]) -> dict[str, Any]:
    """The tqdm options of a ``progress=`` dict, checked (True: none)."""
    if progress is True:
        return {}
    bad = [key for key in progress if not isinstance(key, str) or key in RUN_OWNED]
    if bad:
        raise OptionError(
            f"a progress= dict holds tqdm options by name, except {' and '.join(RUN_OWNED)}, which "
            f"the run sets; got the key(s) {', '.join(map(repr, bad))}: remove them"
        )
    return dict(progress)


def _new_bar(total: int, options: dict[str, Any]) -> Any:
    """A ``tqdm.auto`` bar of ``total`` elements with ``options``."""
    try:
        from tqdm.auto import tqdm
        from tqdm.std import TqdmKeyError
    except ImportError:
        raise OptionError(
            "progress=True draws a bar with tqdm, which is not installed; install the extra: "
            "pip install 'chunkmap[progress]' (or pass progress=False)"
        ) from None
    try:
        if _is_notebook_bar_class(tqdm):
            return _NotebookBar(tqdm(total=total, display=False, **options))
        return tqdm(total=total, **options)
    except TqdmKeyError as error:
        raise OptionError(
            f"progress= got options tqdm does not know ({error}); pass tqdm.tqdm's keyword arguments "
            f"such as desc, leave, position, file, bar_format"
        ) from None
