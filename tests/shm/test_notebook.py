"""The shared-memory notebook executes headless and shows the pipeline and its shutdowns."""

from __future__ import annotations


def test_notebook_executes(run_notebook):
    _, out = run_notebook("03_shared_memory.ipynb")
    # the four in-place additions run one after the other: concurrent ones raced (lost updates)
    assert "sum after each task: [1000000.0, 2000000.0, 3000000.0, 4000000.0]" in out
    assert "every element was incremented 4 times, in place: True" in out
    assert "every item exactly once: True" in out
    for fail in ("loader", "processor", "close"):
        assert f"{fail:>9} fails: ended in" in out
    assert "[[0, 0, 0], [1, 1, 1], [2, 4, 8], [3, 9, 27], [4, 16, 64]]" in out
    assert "after close: the slot pool is closed: closed" in out
    assert out.count("left in /dev/shm: []") == 2
