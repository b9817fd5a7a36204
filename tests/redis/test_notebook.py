"""The replay-buffer notebook executes headless against the test's redis-server."""

from __future__ import annotations


def test_notebook_executes(run_notebook, redis_url):
    _, out = run_notebook("05_redis_replay_buffer.ipynb", CHUNKMAP_REDIS_URL=redis_url)
    assert "600 steps read while 3 simulators wrote them" in out
    assert "deleted: True - steps left: 0" in out
