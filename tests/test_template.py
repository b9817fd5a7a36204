"""Workers forked from their pool's template process: who their parent is, how they end, what they see."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import numpy as np
import pytest

import chunkmap
from chunkmap.kernel import Execution
from chunkmap.local.isolation import evaluate_isolated
from chunkmap.local.pool import WorkerPool, shared_pool
from chunkmap.stub import slowlib
from chunkmap.testing import assert_matches_reference

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this module


def parent_of(pid: int) -> int:
    """The parent pid of ``pid``, read from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[1])


def children_of(pid: int) -> set[int]:
    """The children of ``pid``, from /proc/<pid>/task/<tid>/children."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.update(int(child) for child in fh.read().split())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def command_line(pid: int) -> list[str]:
    """The command line of ``pid`` (none once it has ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def templates_here() -> set[int]:
    """This process's children that are worker templates."""
    return {pid for pid in children_of(os.getpid()) if "chunkmap.local.template" in command_line(pid)}


def evaluate(pool: WorkerPool, func, *columns) -> list:
    """The values of ``func`` over ``columns`` on ``pool``'s workers."""
    return evaluate_isolated([np.asarray(c, np.float64) for c in columns], Execution(func), pool).values.tolist()


def worker_parents(pool: WorkerPool) -> set[int]:
    return {parent_of(worker.process.pid) for worker in pool._all.values()}


def test_workers_are_forked_from_their_pools_template():
    with WorkerPool(2) as pool:
        template = pool.starter.template.pid
        assert evaluate(pool, lambda x: os.getppid(), [0.0]) == [template]  # seen from inside
        assert worker_parents(pool) == {template}
        assert parent_of(template) == os.getpid()
        # read once it has served (until its exec ends, /proc shows this process's command line, or none)
        assert command_line(template)[1:3] == ["-m", "chunkmap.local.template"]


def test_a_replacement_after_a_segfault_is_forked_from_the_template():
    with WorkerPool(1) as pool:
        template = pool.starter.template.pid
        before = pool._all[0].process.pid
        evaluation = evaluate_isolated([np.array([0.5, slowlib.CRASH_VALUE, 0.5]), np.full(3, 0.25)],
                                       Execution(slowlib.slow_computation), pool)
        assert [f[:2] for f in evaluation.failures] == [(1, "SIGSEGV")]
        assert pool.restarts >= 1
        after = pool._all[0].process.pid
        assert after != before and parent_of(after) == template


def crash(x):
    slowlib.slow_computation(slowlib.CRASH_VALUE, x)


def abort(x):
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    os.abort()


def exit_3(x):
    os._exit(3)


@pytest.mark.parametrize("func, name, how", [
    (crash, "SIGSEGV", "killed by signal SIGSEGV (Segmentation fault)"),
    (abort, "SIGABRT", "killed by signal SIGABRT (Aborted)"),
    (exit_3, "exit 3", "exited with code 3"),
])
def test_the_exit_status_of_a_crashed_worker_is_reported_exactly(func, name, how):
    with WorkerPool(1) as pool:
        evaluation = evaluate_isolated([np.array([0.5])], Execution(func), pool)
        assert pool.restarts == 1 and worker_parents(pool) == {pool.starter.template.pid}
    assert list(evaluation.failures) == [(0, name, f"the worker process {how} while evaluating this element")]


def test_killing_the_template_mid_run_loses_nothing(monkeypatch):
    """SIGKILL the template (so its workers die too) during a run: the result is the serial loop's."""
    rng = np.random.default_rng(13)
    a, b = rng.random((40, 50)), rng.random((40, 50))
    monkeypatch.setenv("SLOWLIB_COST_NS", "1000000")  # 1 ms per call in the workers: 2,000 calls ~1 s on 2
    killed = []

    def kill_templates():
        for pid in templates_here():
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, time.monotonic()))

    try:
        killer = threading.Timer(0.6, kill_templates)
        killer.start()
        result = chunkmap.run(slowlib.slow_computation, a, b, skip=slowlib.InternalError, chunks=50,
                              scheduler="processes")
        finished = time.monotonic()
        killer.join()
        assert killed and all(at < finished for _, at in killed), "the template must die during the run"
        survivors = templates_here()
        assert survivors and not survivors & {pid for pid, _ in killed}  # a new template took over
    finally:
        chunkmap.shutdown()
    assert_matches_reference(result, slowlib.slow_computation, a, b, skip=slowlib.InternalError)


def test_no_process_is_left_behind_after_shutdown():
    with WorkerPool(2) as pool:
        evaluate_isolated([np.array([0.5, slowlib.CRASH_VALUE, 0.5])], Execution(crash), pool)
        pids = {pool.starter.template.pid, *(w.process.pid for w in pool._all.values())}
    assert not {pid for pid in pids if os.path.exists(f"/proc/{pid}")}  # not even as zombies

    chunkmap.run(abs, np.arange(10.0), scheduler="processes")
    templates = templates_here()
    workers = set().union(*(children_of(pid) for pid in templates))
    assert templates and workers
    chunkmap.shutdown()
    assert not {pid for pid in templates | workers if os.path.exists(f"/proc/{pid}")}


def draw(x):
    return np.random.random()


def test_each_forked_worker_draws_its_own_random_numbers():
    """numpy's global random state, imported in the template, is reseeded in every fork."""
    with WorkerPool(1, preload=("numpy.random",)) as pool:
        first = evaluate(pool, draw, [0.0])
        worker = pool.acquire()
        pool.release(pool.replace(worker))
        second = evaluate(pool, draw, [0.0])
        assert parent_of(pool._all[0].process.pid) == pool.starter.template.pid
    assert first != second


def test_preloaded_modules_run_once_in_the_template(tmp_path, monkeypatch):
    (tmp_path / "preloaded_13.py").write_text(
        "import os\n"
        f"with open({str(tmp_path / 'imports.txt')!r}, 'a') as fh:\n"
        "    fh.write(f'{os.getpid()}\\n')\n"
        "def value(x):\n"
        "    return x + 1\n"
    )
    (tmp_path / "broken_13.py").write_text("raise RuntimeError('this module cannot be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import preloaded_13

    os.remove(tmp_path / "imports.txt")  # this process's own import
    with WorkerPool(2, preload=("no_such_module_13", "broken_13", "preloaded_13")) as pool:
        template = pool.starter.template.pid
        assert evaluate(pool, preloaded_13.value, [1.0, 2.0]) == [2.0, 3.0]
        evaluate_isolated([np.array([0.5])], Execution(crash), pool)  # a restart
        assert evaluate(pool, preloaded_13.value, [3.0]) == [4.0]
        assert worker_parents(pool) == {template}
    assert (tmp_path / "imports.txt").read_text().split() == [str(template)]


def variable_13(x):
    return float(os.environ["CHUNKMAP_TEST_13"])


def test_workers_see_the_environment_of_the_pools_start(monkeypatch):
    """Also a replacement forked from a new template, after the first was killed."""
    monkeypatch.setenv("CHUNKMAP_TEST_13", "1")
    with WorkerPool(1) as pool:
        assert evaluate(pool, variable_13, [0.0]) == [1.0]
        monkeypatch.setenv("CHUNKMAP_TEST_13", "2")
        first, worker = pool.starter.template.pid, pool._all[0].process.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while running(worker) and time.monotonic() < deadline:  # it dies with its template
            time.sleep(0.01)
        assert evaluate(pool, variable_13, [0.0]) == [1.0]
        assert pool.starter.template.pid != first and worker_parents(pool) == {pool.starter.template.pid}


def test_another_preload_gets_another_shared_pool():
    try:
        plain = shared_pool(1)
        preloaded = shared_pool(1, preload=("json",))
        assert preloaded is not plain and preloaded.starter.preload == ("json",)
        assert shared_pool(1, preload=("json",)) is preloaded
    finally:
        chunkmap.shutdown()
