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
    # every progress widget was replaced by its final line: 100%, or, in a cell whose run raised,
    # wherever that run stopped (timing decides how far the other chunks got)
    finished, unfinished = [], []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        texts = [str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs]
        bars = [text for text in texts if "el/s" in text]
        finished += [bar for bar in bars if "100%|" in bar]
        if not any("func raised" in text for text in texts):
            unfinished += [bar for bar in bars if "100%|" not in bar]
    assert finished and not unfinished, unfinished
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
