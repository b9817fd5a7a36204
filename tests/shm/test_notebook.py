"""The shared-memory notebook executes headless and shows the pipeline and its shutdowns."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_shared_memory.ipynb"


@pytest.mark.slow
def test_notebook_executes(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = str(NOTEBOOK.parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": root}})
    t = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t
    assert elapsed < 30 or os.getloadavg()[0] > 2 * os.cpu_count(), elapsed  # ~10 s when quiet
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "every element was incremented 4 times, in place: True" in out
    assert "every item exactly once: True" in out
    for fail in ("loader", "processor", "close"):
        assert f"{fail:>9} fails: ended in" in out
    assert "[[0, 0, 0], [1, 1, 1], [2, 4, 8], [3, 9, 27], [4, 16, 64]]" in out
    assert "after close: the slot pool is closed: closed" in out
    assert out.count("left in /dev/shm: []") == 2
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
