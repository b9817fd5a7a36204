"""Workers that behave like the user's own process: count, setup, per_worker, recycling, fresh code, errors."""

from __future__ import annotations

import importlib
import sys
import textwrap

import dask
import numpy as np
import pytest

import chunkmap
from chunkmap.errors import NotPicklableError, OptionError, SetupError, UnpicklableResultError
from chunkmap.stub import slowlib
from chunkmap.testing import serial_reference

LOCAL = ["sync", "threads", "processes"]
COST = 7  # ns per call: cheap, and never the stub's default


@pytest.fixture(autouse=True)
def cost_back_to_zero():
    yield
    slowlib.set_cost_ns(0)  # sync and threads run the setup in this process


def with_cost(cost: int = COST, **options) -> chunkmap.Workers:
    return chunkmap.Workers(setup=(slowlib.set_cost_ns, (cost,)), **options)


@pytest.mark.parametrize("scheduler", LOCAL)
def test_setup_reaches_every_process_that_calls_func(ew, scheduler):
    result = chunkmap.run(ew.stub_cost, np.zeros(40), chunks=3, scheduler=scheduler, workers=with_cost(),
                          progress=False)
    assert result.values.tolist() == [COST] * 40


def test_setup_reaches_the_workers_of_a_real_cluster(ew, cluster_address):
    result = chunkmap.run(ew.stub_cost, np.zeros(40), chunks=3, scheduler=cluster_address, workers=with_cost())
    assert result.values.tolist() == [COST] * 40
    chunkmap.run(ew.stub_cost, np.zeros(4), scheduler=cluster_address, workers=with_cost(0))  # leave them as found


def test_setup_runs_again_in_a_replacement_after_a_crash(ew):
    x = np.ones(40)
    x[[5, 17, 30]] = -1.0  # these segfault
    result = chunkmap.run(ew.cost_or_crash, x, chunks=10, workers=with_cost(), progress=False)
    assert [f.kind for f in result.failures] == ["crash"] * int((x < 0).sum())
    assert result.values.tolist() == [COST] * int((x >= 0).sum())


def test_max_calls_recycles_workers_and_each_replacement_is_set_up(ew):
    result = chunkmap.run(ew.pid_and_cost, np.zeros(60), chunks=12, workers=with_cost(max_calls=5), progress=False)
    pids, costs = np.divmod(result.values, 1000)
    assert len(result.values) == 60 and set(costs.tolist()) == {COST}  # nothing lost, every worker set up
    _, calls = np.unique(pids, return_counts=True)
    assert calls.max() <= 5 and len(calls) >= 12


@pytest.mark.parametrize("scheduler", LOCAL)
def test_a_failing_setup_stops_the_run_naming_the_process_and_the_cause(ew, scheduler):
    where = "the calling process" if scheduler != "processes" else r"worker process \d+ on "
    with pytest.raises(SetupError, match=rf"(?s)setup \S*raises_setup_error raised RuntimeError: licence server "
                                         rf"unreachable in {where}.*Traceback.*in raises_setup_error"):
        chunkmap.run(abs, np.zeros(4), scheduler=scheduler, workers=chunkmap.Workers(setup=ew.raises_setup_error),
                     progress=False)


def test_setup_takes_args_and_kwargs_or_gives_a_clear_error():
    assert chunkmap.Workers(setup=(print, ("x",), {"end": ""})).setup.kwargs == {"end": ""}
    with pytest.raises(OptionError, match=r"setup must be a callable, \(callable, args\) or \(callable, args, "
                                          r"kwargs\).*got \(<built-in function print>, 'x'\)"):
        chunkmap.Workers(setup=(print, "x"))
    with pytest.raises(OptionError, match=r"workers must be a positive int .* got str 'two'"):
        chunkmap.run(abs, np.zeros(2), workers="two")
    with pytest.raises(OptionError, match=r"Workers\(count=...\) must be a positive int or None; got 0"):
        chunkmap.run(abs, np.zeros(2), workers=0)


@pytest.mark.parametrize("scheduler", LOCAL)
def test_per_worker_builds_an_unpicklable_swig_method_in_each_process(scheduler):
    a, b = np.linspace(0.1, 2, 30).reshape(5, 6), np.linspace(1, 3, 30).reshape(5, 6)
    predict = chunkmap.per_worker(lambda scale: slowlib.Model(scale).predict, 2.0)
    result = chunkmap.run(predict, a, b, skip=slowlib.InternalError, scheduler=scheduler, chunks=4, progress=False)
    reference = serial_reference(slowlib.Model(2.0).predict, a, b, skip=slowlib.InternalError)
    assert [c.tolist() for c in result.coords] == [c.tolist() for c in reference.coords]
    assert result.values.tolist() == reference.values.tolist()


def test_per_worker_on_a_real_cluster(ew, cluster_address):
    a, b = np.linspace(0.1, 2, 30), np.linspace(1, 3, 30)
    result = chunkmap.run(chunkmap.per_worker(ew.model_predict, 3.0), a, b, scheduler=cluster_address, chunks=4)
    assert result.values.tolist() == [slowlib.Model(3.0).predict(x, y) for x, y in zip(a.tolist(), b.tolist())]


def test_a_failing_factory_is_a_setup_error(ew):
    with pytest.raises(SetupError, match=r"the per_worker factory \S*raises_setup_error raised RuntimeError.*"
                                         r"worker process \d+"):
        chunkmap.run(chunkmap.per_worker(ew.raises_setup_error), np.zeros(3), progress=False)


def test_per_worker_resumes_from_a_checkpoint_by_its_factory_and_arguments(ew, tmp_path):
    a, b = np.linspace(0.1, 2, 20), np.linspace(1, 3, 20)
    options = dict(skip=slowlib.InternalError, checkpoint=tmp_path, progress=False)
    first = chunkmap.run(chunkmap.per_worker(ew.model_predict, 2.0), a, b, **options)
    again = chunkmap.run(chunkmap.per_worker(ew.model_predict, 2.0), a, b, **options)
    assert again.stats.resumed == 20 and again.values.tolist() == first.values.tolist()
    with pytest.warns(chunkmap.errors.CheckpointWarning, match="differs"):
        other = chunkmap.run(chunkmap.per_worker(ew.model_predict, 3.0), a, b, **options)
    assert other.stats.resumed == 0


def test_an_unpicklable_func_is_refused_before_any_work_with_the_way_out():
    model = slowlib.Model(2.0)
    with pytest.raises(NotPicklableError, match=r"func <built-in method predict of .*Model.* cannot be pickled "
                                                r"\(TypeError: cannot pickle .*\), and scheduler='processes' sends "
                                                r"it to worker processes.*chunkmap.per_worker"):
        chunkmap.run(model.predict, np.zeros(3), np.zeros(3), progress=False)
    assert isinstance(NotPicklableError("x"), TypeError)
    assert chunkmap.run(model.predict, np.ones(2), np.ones(2), scheduler="threads", progress=False).stats.computed == 2


def test_an_unpicklable_return_value_names_its_element_instead_of_crashing(ew):
    with pytest.raises(UnpicklableResultError, match=r"func returned a \S*Model at element \(2,\) called with "
                                                     r"inputs \(2.0,\), which cannot be sent back"):
        chunkmap.run(ew.returns_a_swig_object, np.arange(5.0), chunks=5, progress=False)
    on_threads = chunkmap.run(ew.returns_a_swig_object, np.arange(5.0), scheduler="threads", progress=False)
    assert isinstance(on_threads.values[2], slowlib.Model)


@pytest.mark.parametrize("scheduler", LOCAL)
def test_keyboard_interrupt_and_system_exit_from_func_behave_as_on_sync(ew, scheduler):
    with pytest.raises(KeyboardInterrupt):
        chunkmap.run(ew.interrupts, np.arange(6), scheduler=scheduler, chunks=6, progress=False)
    with pytest.raises(SystemExit) as exit_info:
        chunkmap.run(ew.exits, np.arange(6), scheduler=scheduler, chunks=6, progress=False)
    assert exit_info.value.code == 4


def worker_pids(ew, **options) -> set[int]:
    """The processes that called func, each call lasting 10 ms (so that every worker takes part)."""
    values = chunkmap.run(ew.pid_after_a_while, np.zeros(48), chunks=1, progress=False, **options).values
    return set(values.tolist())


def test_workers_and_dask_num_workers_set_the_pool_size(ew):
    assert len(worker_pids(ew, workers=1)) == 1
    with dask.config.set(num_workers=1):
        assert len(worker_pids(ew)) == 1
    assert len(worker_pids(ew, workers=3)) == 3  # more than the cores: the count is the user's


def test_an_unpicklable_func_on_a_cluster_is_refused_before_any_work(cluster_address):
    with pytest.raises(NotPicklableError, match=r"cannot be pickled .* scheduler='distributed' sends it to worker "
                                                r"processes.*chunkmap.per_worker"):
        chunkmap.run(slowlib.Model(2.0).predict, np.zeros(3), np.zeros(3), scheduler=cluster_address)


def test_workers_count_on_a_cluster_is_refused(cluster_address):
    with pytest.raises(OptionError, match=r"workers=2 sets how many local processes.*--nthreads"):
        chunkmap.run(abs, np.zeros(3), scheduler=cluster_address, workers=2)


@pytest.mark.parametrize("scheduler", [*LOCAL, "cluster"])
def test_a_reloaded_module_gives_new_values(tmp_path, monkeypatch, scheduler, request):
    if scheduler == "cluster":
        scheduler = request.getfixturevalue("cluster_address")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "pricing_v.py"
    source.write_text("def price(x):\n    return x + 1\n")
    module = importlib.import_module("pricing_v")
    try:
        assert chunkmap.run(module.price, np.arange(4), scheduler=scheduler, progress=False).values.tolist() == [1, 2, 3, 4]
        source.write_text(textwrap.dedent("""\
            def price(x):
                return x * 100  # edited in the notebook's editor
        """))
        importlib.reload(module)
        assert chunkmap.run(module.price, np.arange(4), scheduler=scheduler, progress=False).values.tolist() == [0, 100, 200, 300]
    finally:
        sys.modules.pop("pricing_v", None)


def test_shutdown_is_public_and_the_next_run_starts_fresh_workers(ew):
    before = worker_pids(ew, workers=2)
    chunkmap.shutdown()
    assert worker_pids(ew, workers=2).isdisjoint(before)


@pytest.mark.parametrize("chunks", [2, 20])
def test_max_memory_recycles_leaking_workers_between_and_during_requests(ew, chunks):
    result = chunkmap.run(ew.leak_and_pid, np.arange(20), chunks=chunks, progress=False,
                          workers=chunkmap.Workers(max_memory="250 MB"))
    assert len(result.values) == 20 and len(result.failures) == 0  # nothing lost, nothing failed
    _, calls = np.unique(result.values, return_counts=True)
    # a worker holds its ~60 MB start plus 30 MB per call: over 250 MB after 7 calls, noticed after its
    # request or within the next second (5 calls of 0.2 s)
    assert calls.max() <= 12
    assert len(calls) >= (4 if chunks == 2 else 2)  # killed mid-request, a worker returns nothing


def test_an_element_alone_over_max_memory_is_a_memory_limit_failure(ew):
    result = chunkmap.run(ew.hog_at_five, np.arange(8), chunks=8, progress=False,
                          workers=chunkmap.Workers(max_memory="300 MB"))
    assert result.values.tolist() == [0, 1, 2, 3, 4, 6, 7]
    (failure,) = result.failures
    assert (failure.coords, failure.kind, failure.type) == ((5,), "crash", "MemoryLimit")
    assert "over max_memory=300,000,000" in failure.message


def test_max_memory_takes_sizes_in_words():
    assert chunkmap.Workers(max_memory="2 GiB").max_memory == 2 << 30
    with pytest.raises(OptionError, match=r"max_memory must be a positive number of bytes.*got '2 jiggabytes'"):
        chunkmap.Workers(max_memory="2 jiggabytes")
