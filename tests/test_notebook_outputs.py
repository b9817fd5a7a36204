"""The committed notebooks read well where no kernel runs (GitHub, nbviewer, an HTML export).

Their saved outputs are what those viewers show: every code cell has run, nothing failed, no
warning or traceback was printed, every figure is there, and no progress bar is frozen at 0% (a
widget's text fallback is its first state; chunkmap replaces its bar by the final line).
"""

from __future__ import annotations

import glob
import os
import re

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
#: a cell tag for output that shows a child process's traceback on purpose (a failure demo)
CHILD_TRACEBACKS = "child-tracebacks-expected"
WIDGET = "application/vnd.jupyter.widget-view+json"


def texts(cell) -> list[str]:
    """Everything a viewer shows of a cell's outputs as text."""
    shown = []
    for output in cell.outputs:
        if output.output_type == "stream":
            shown.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            shown.append(str(output.data.get("text/plain", "")))
    return shown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_saved_outputs_read_well_without_a_kernel(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), "run every cell before committing"
    for number, cell in enumerate(code, start=1):
        where = f"{os.path.basename(path)}, code cell {number}"
        assert not [o for o in cell.outputs if o.output_type == "error"], f"{where} failed"
        shown = "\n".join(texts(cell))
        assert not re.search(r"\bWarning\b", shown), f"{where} printed a warning"
        if CHILD_TRACEBACKS not in cell.metadata.get("tags", []):
            assert "Traceback" not in shown, f"{where} printed a traceback"
        assert not re.search(r"\b0%\|", shown), f"{where} shows a progress bar frozen at 0%"
        assert not [o for o in cell.outputs if WIDGET in o.get("data", {})], f"{where} keeps a widget"
        if "plt.show()" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"{where} lost its figure"


def test_every_notebook_is_checked():
    assert [os.path.basename(path)[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]
