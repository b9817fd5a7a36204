"""The run notebooks execute from top to bottom and reach their checks."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "name, expected",
    [
        ("01_quickstart.ipynb", "identical to the serial loop, element for element"),
        ("02_long_runs.ipynb", "identical to the uninterrupted run"),
        ("06_arrays_and_stores.ipynb", "identical to the serial loop"),
    ],
)
def test_notebook_executes(run_notebook, name, expected):
    notebook, out = run_notebook(name)
    assert expected in out
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    bars = [str(o.data["text/plain"]) for o in outputs if o.output_type == "display_data" and "el/s" in
            str(o.data.get("text/plain", ""))]
    # every progress widget was replaced by its final line (100%, or where a failing run stopped)
    assert bars and any("100%|" in bar for bar in bars) and not any(" 0%|" in bar for bar in bars)
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
