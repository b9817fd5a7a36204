"""The run notebooks execute from top to bottom and reach their checks."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "name, expected",
    [
        ("01_quickstart.ipynb", "identical to the serial loop, element for element"),
        ("02_long_runs.ipynb", "identical to the uninterrupted run"),
    ],
)
def test_notebook_executes(run_notebook, name, expected):
    _, out = run_notebook(name)
    assert expected in out
