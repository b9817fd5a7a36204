"""SlotPool: a party killed while the others wait with timeout=None closes the pool, naming it."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time

import pytest
import shm_workers as w

from chunkmap.errors import PeerDiedError
from chunkmap.shm import PoolClosedError, SlotPool

pytestmark = pytest.mark.usefixtures("no_leak")


def _joined(pool: SlotPool) -> int:
    """How many parties the pool watches."""
    return int((pool._state._parties[:, 0] != 0).sum())


def _wait_until_joined(pool: SlotPool, parties: int, procs) -> None:
    deadline = time.monotonic() + 30
    while _joined(pool) < parties and time.monotonic() < deadline and all(p.is_alive() for p in procs):
        time.sleep(0.01)
    assert _joined(pool) == parties
    time.sleep(0.3)  # and blocked in their waits


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("killed", ["producer", "consumer"])
def test_sigkill_of_a_party_ends_the_others_wait(method, killed):
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    with SlotPool(1, 8) as pool:
        procs = {role: ctx.Process(target=w.wait_as, args=(role, pool, out)) for role in ("producer", "consumer")}
        for p in procs.values():
            p.start()
        try:
            _wait_until_joined(pool, 2, list(procs.values()))
            victim = procs[killed]
            t = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)  # not joined: a zombie until the end of the test
            kind, pid, role, _ = out.get(timeout=10)
            assert time.monotonic() - t < 10
            assert (kind, pid, role) == ("PeerDiedError", victim.pid, killed)
            assert pool.closed and f"{killed} (pid {victim.pid}) died" in pool.reason
            with pytest.raises(PeerDiedError, match=f"pid {victim.pid}") as info:  # every party learns it
                pool.get_filled(timeout=1)
            assert isinstance(info.value, PoolClosedError)
        finally:
            for p in procs.values():
                p.join(10)
                p.kill()
                p.join(10)
    survivor = procs["consumer" if killed == "producer" else "producer"]
    assert survivor.exitcode == 0  # producing() and consuming() let the error through, caught by wait_as


def test_parties_that_left_may_end():
    """A producer that finished and a consumer that saw the end of the data exit: nobody is dead."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    with SlotPool(3, 4) as pool:
        producer = ctx.Process(target=w.produce_items, args=(pool, range(3), 30.0))
        producer.start()
        producer.join(30)
        consumer = ctx.Process(target=w.wait_as, args=("consumer", pool, out))
        consumer.start()
        assert out.get(timeout=10)[0] == "returned"
        consumer.join(30)
        assert [s.array[0] for s in iter(lambda: pool.get_filled(timeout=1), None)] == [1, 2]
        time.sleep(0.5)  # more than a check interval with both gone
        assert pool.get_filled(timeout=0.5) is None and not pool.closed


def test_peer_died_error_pickles_with_its_party():
    error = PeerDiedError("a consumer (pid 12) died without leaving the pool", 12, "consumer")
    back = pickle.loads(pickle.dumps(error))
    assert (back.pid, back.role, back.reason, str(back)) == (12, "consumer", error.reason, str(error))
    assert isinstance(back, PoolClosedError) and isinstance(back, ValueError)
