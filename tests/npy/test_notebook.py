"""The rows-from-disk notebook executes headless and prints its comparison."""

from __future__ import annotations


def test_notebook_executes(run_notebook):
    notebook, out = run_notebook("04_rows_from_disk.ipynb")
    assert "chunkmap NpyLibrary" in out and "x np.load" in out
    assert "prefetch threads left: []" in out
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
