"""How a :class:`~chunkmap.Result` and its :class:`~chunkmap.Failures` look: text and HTML.

Standard library only; the objects are read through their public attributes. The text is the
``repr`` a terminal shows, the HTML is what Jupyter shows (``_repr_html_``), in the spirit of
xarray's and dask's summaries: plain tables with a few inline styles and no CSS classes or
scripts, so they read the same in Jupyter, on GitHub and nbviewer and in an HTML export.
Every string a user's function produced (exception types and messages) and every input shown
goes through :func:`html.escape`; messages and inputs are shown on one line, cut to a fixed width.
"""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["result_text", "result_html", "failures_summary", "failures_text", "failures_html", "input_names"]

#: failure rows shown by the text and the HTML summaries before "... N more"
TEXT_ROWS, HTML_ROWS = 5, 10
#: characters of a message shown in the text and the HTML summaries
TEXT_MESSAGE, HTML_MESSAGE = 80, 200
#: characters of a failure's inputs (the call's arguments) shown in the text, of each input in the HTML
TEXT_INPUTS, HTML_INPUT = 60, 40

_CELL = "padding:1px 8px;text-align:{}"


def input_names(count: int) -> list[str]:
    """The names of a failure table's input columns: ``in0``, ``in1``, ... (``failures.inputs[0]`` is ``in0``)."""
    return [f"in{number}" for number in range(count)]


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _share(count: int, total: int) -> str:
    return f"{count / total:.1%}" if total else ""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counts.items())


def _rows(result: Any) -> list[tuple[str, str, str, str]]:
    """``(label, count, share, detail)`` for each line of a result's summary."""
    stats = result.stats
    elements = stats.elements if stats else math.prod(result.shape)
    computed, failed = len(result), len(result.failures)
    rows = [("elements", f"{elements:,}", "", ""),
            ("computed", f"{computed:,}", _share(computed, elements), ""),
            ("failed", f"{failed:,}", _share(failed, elements), _counts(result.failures.counts_by_kind()))]
    if stats:
        rows.append(("masked", f"{stats.masked:,}", _share(stats.masked, elements), ""))
        if stats.resumed:
            rows.append(("resumed", f"{stats.resumed:,}", _share(stats.resumed, elements), "from a checkpoint"))
        where = f" on {stats.scheduler}" if stats.scheduler else ""
        if stats.workers and stats.scheduler not in ("", "sync"):  # sync runs in the caller, on no worker
            where += f" ({stats.workers} workers)"
        rows.append(("time", f"{stats.wall_time:.3f} s", "", f"{stats.rate:,.0f} calls/s{where}"))
    return rows


def _title(result: Any) -> str:
    """Shape and dtype, or with several outputs each one's name and dtype: ``outputs=(price: float64, ...)``."""
    if result.outputs is None:
        return f"chunkmap.Result shape={result.shape} dtype={result.values.dtype}"
    outputs = ", ".join(f"{name}: {values.dtype}" for name, values in result.values.items())
    return f"chunkmap.Result shape={result.shape} outputs=({outputs})"


def result_text(result: Any) -> str:
    """The ``repr`` of a Result: shape and dtype(s), then counts (by kind), time, rate and scheduler."""
    rows = _rows(result)
    width = max(len(count) for _, count, _, _ in rows)
    lines = [f"  {label:<9}{count:>{width}}  {share:>6}  {detail}".rstrip() for label, count, share, detail in rows]
    return "\n".join([f"<{_title(result)}", *lines]) + ">"


def result_html(result: Any) -> str:
    """A Result as a small HTML table, followed by the first rows of its failures."""
    left, right = _CELL.format("left"), _CELL.format("right")
    cells = "".join(
        f"<tr><th style='{left}'>{label}</th><td style='{right}'>{count}</td><td style='{right}'>{share}</td>"
        f"<td style='{left}'>{html.escape(detail)}</td></tr>"
        for label, count, share, detail in _rows(result)
    )
    failures = failures_html(result.failures) if len(result.failures) else ""
    return (f"<div><strong>{html.escape(_title(result))}</strong><table>{cells}</table>"
            f"{failures}</div>")


def failures_summary(failures: Any) -> str:
    """One line: how many failed, by kind and by exception type."""
    if not len(failures):
        return "none"
    return (f"{len(failures):,} failed element{'s' if len(failures) > 1 else ''} "
            f"({_counts(failures.counts_by_kind())}; {_counts(failures.counts_by_type())})")


def _failures_title(failures: Any) -> str:
    return f"chunkmap.Failures: {failures_summary(failures)}"


def failures_text(failures: Any) -> str:
    """The ``repr`` of Failures: the count by kind and type, then the first rows (coordinates, kind,
    ``(inputs) -> type: message``)."""
    title = _failures_title(failures)
    if not len(failures):
        return f"<{title}>"
    shown = list(failures[:TEXT_ROWS])
    where = max(len(str(failure.coords)) for failure in shown)
    kind = max(len(failure.kind) for failure in shown)
    calls = [_one_line(repr(failure.inputs), TEXT_INPUTS) if failure.inputs else "" for failure in shown]
    call = max(len(text) for text in calls)
    lines = [f"  {str(failure.coords):<{where}}  {failure.kind:<{kind}}  "
             + (f"{text:<{call}} -> " if text else "")
             + f"{failure.type}: {_one_line(failure.message, TEXT_MESSAGE)}" for failure, text in zip(shown, calls)]
    if len(failures) > TEXT_ROWS:
        lines.append(f"  ... {len(failures) - TEXT_ROWS:,} more")
    return "\n".join([f"<{title}", *lines]) + ">"


def failures_html(failures: Any) -> str:
    """Failures as an HTML table: coordinates, kind, inputs (``in0``, ...), type and message of the first rows."""
    title = f"<strong>{html.escape(_failures_title(failures))}</strong>"
    if not len(failures):
        return f"<div>{title}</div>"
    left, right = _CELL.format("left"), _CELL.format("right")
    header = "".join(f"<th style='{right}'>x{axis}</th>" for axis in range(len(failures.shape)))
    header += f"<th style='{left}'>kind</th>"
    header += "".join(f"<th style='{right}'>{name}</th>" for name in input_names(len(failures.inputs)))
    header += "".join(f"<th style='{left}'>{name}</th>" for name in ("type", "message"))
    body = "".join(
        "<tr>" + "".join(f"<td style='{right}'>{coord}</td>" for coord in failure.coords)
        + f"<td style='{left}'>{html.escape(failure.kind)}</td>"
        + "".join(f"<td style='{right}'>{html.escape(_one_line(repr(value), HTML_INPUT))}</td>"
                  for value in failure.inputs)
        + "".join(f"<td style='{left}'>{html.escape(text)}</td>"
                  for text in (failure.type, _one_line(failure.message, HTML_MESSAGE)))
        + "</tr>"
        for failure in failures[:HTML_ROWS]
    )
    more = f"<p>... {len(failures) - HTML_ROWS:,} more</p>" if len(failures) > HTML_ROWS else ""
    return f"<div>{title}<table><tr>{header}</tr>{body}</table>{more}</div>"
