"""chunkmap.cfunc: C function pointers called from C over each chunk, checked against the serial loop."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
import pickle
import shutil

import cloudpickle
import numpy as np
import pytest
from distributed import Client

import chunkmap
from chunkmap import _cloop_py, stub
from chunkmap._extensions import Extension
from chunkmap.cfunc import EXTENSION, CFunction, parse_signature
from chunkmap.checkpoint.identity import function_digest
from chunkmap.errors import CError, CPointerError, ElementError, IdentityError, NotPicklableError, SignatureError
from chunkmap.stub import set_cost, slowlib
from chunkmap.testing.reference import assert_matches_reference, serial_reference

LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
SCHEDULERS = ["sync", "threads", "processes"]


def inputs(shape=(40, 50), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape), rng.random(shape)


def address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


@pytest.fixture
def cost():
    """Set the stub's cost (here and in workers started later); back to 0 after the test."""
    yield set_cost
    set_cost(0)


def assert_same_as_swig(result, a, b):
    """The C loop's result equals the serial loop over the SWIG wrapper of the same C function."""
    assert_matches_reference(result, stub.compute(), a, b, skip=CError)
    expected = serial_reference(slowlib.slow_computation, a, b, skip=slowlib.InternalError)
    np.testing.assert_array_equal(result.values, expected.values)
    assert [f.coords for f in result.failures] == [coords for coords, _, _ in expected.failures]


# -- results ------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_the_stub_matches_the_serial_loop(scheduler):
    a, b = inputs()
    result = chunkmap.run(stub.compute(), a, b, skip=CError, scheduler=scheduler, chunks=300, progress=False)
    assert_same_as_swig(result, a, b)
    assert result.failures[0].type == "CError"
    assert result.failures[0].message == "slowlib_compute returned error code 1 (input outside the library's domain)"


def test_a_real_dask_cluster_matches_the_serial_loop(cluster_address):
    a, b = inputs(seed=1)
    with Client(cluster_address, timeout="5s") as client:
        result = chunkmap.run(stub.compute(), a, b, skip=CError, client=client, chunks=400, progress=False)
    assert_same_as_swig(result, a, b)


def test_a_mask_and_broadcasting_apply(ew):
    a, b = inputs()
    mask = a < 0.3
    result = chunkmap.run(stub.compute(), a, b[0], mask=mask, skip=CError, scheduler="sync", progress=False)
    assert_matches_reference(result, stub.compute(), a, b[0], mask=mask, skip=CError)


def test_an_error_code_not_skipped_stops_the_run_at_its_element():
    a, b = np.array([0.5, 0.5, 0.5]), np.array([0.25, 0.24, 0.24])
    for scheduler in SCHEDULERS:
        with pytest.raises(ElementError, match=r"func raised CError: slowlib_compute returned error code 1 .* at "
                                               r"element \(1,\) called with inputs \(0\.5, 0\.24\)"):
            chunkmap.run(stub.compute(), a, b, scheduler=scheduler, progress=False)


@pytest.mark.parametrize("signature, function, arrays, expected", [
    ("double(double, double)", LIBM.fmax, (np.array([1.0, -2.0]), np.array([0.5, 3.0])), [1.0, 3.0]),
    ("int64(int64)", LIBM.llabs, (np.array([-3, 4, -(2**62)]),), [3, 4, 2**62]),
    ("int(double)", LIBM.ilogb, (np.array([1.0, 8.0, 0.3]),), [0, 3, -2]),
    ("double(double, int64)", LIBM.ldexp, (np.array([1.5, 3.0]), np.array([2, -1], np.int32)), [6.0, 1.5]),
])
def test_each_result_kind_and_parameter_type(signature, function, arrays, expected):
    f = chunkmap.cfunc(function, signature)
    for scheduler in ["sync", "processes"]:
        result = chunkmap.run(f, *arrays, scheduler=scheduler, progress=False)
        assert result.values.tolist() == expected
        assert_matches_reference(result, f, *arrays)


def test_a_column_that_does_not_convert_safely_goes_through_the_python_call():
    f = chunkmap.cfunc(LIBM.llabs, "int64(int64)")
    values = np.array([-1.0, 2.5])  # float to int64 would lose the fraction
    with pytest.raises(ElementError, match=r"TypeError: llabs's parameter 0 is int64; got float"):
        chunkmap.run(f, values, scheduler="sync", progress=False)
    result = chunkmap.run(f, values, skip=TypeError, scheduler="sync", progress=False)
    assert_matches_reference(result, f, values, skip=TypeError)
    assert chunkmap.run(f, np.array([-1, 2], np.int32), scheduler="sync", progress=False).values.tolist() == [1, 2]


def test_kwargs_and_outputs_fail_as_for_any_function():
    f = chunkmap.cfunc(LIBM.fmax, "double(double, double)")
    with pytest.raises(ElementError, match="TypeError"):
        chunkmap.run(f, np.ones(2), np.ones(2), kwargs={"x": 1}, scheduler="sync", progress=False)
    with pytest.raises(chunkmap.errors.OutputCountError):
        chunkmap.run(f, np.ones(2), np.ones(2), outputs=2, scheduler="sync", progress=False)


# -- the compiled loop and its twin -------------------------------------------------


def coded_double(a, out):
    """int f(double a, double *out): out = 1 / a, error code 7 for a == 0."""
    if a == 0:
        return 7
    out[0] = 1 / a
    return 0


CODED = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, ctypes.POINTER(ctypes.c_double))(coded_double)


@pytest.mark.parametrize("stop", [False, True])
def test_the_compiled_loop_and_its_twin_agree(stop):
    cases = [(address(stub.library().slowlib_compute), 4, inputs((1000,))),
             (address(CODED), 3, (np.array([2.0, 0.0, 4.0, 0.0]),)),
             (address(LIBM.fmax), 0, inputs((50,)))]
    for function, kind, columns in cases:
        outcomes = []
        for implementation in (EXTENSION.compiled, _cloop_py):
            n = len(columns[0])
            values = np.zeros(n, np.float64 if kind in (0, 3) else np.int64)
            status, codes, heartbeat = np.full(n, 9, np.uint8), np.zeros(n, np.int32), np.zeros(1, np.int64)
            positions = np.full(n, -1, np.int64)
            counts = implementation.call(function, kind, tuple(columns), values, status, codes, positions, heartbeat,
                                         stop)
            outcomes.append((counts, values.tolist(), status.tolist(), codes.tolist(), heartbeat.tolist(),
                             positions.tolist()))
        assert outcomes[0] == outcomes[1]
        failed = outcomes[0][0][2]
        assert outcomes[0][5][:failed] == np.flatnonzero(np.array(outcomes[0][2]) == 1).tolist()
        if stop and outcomes[0][0][2]:
            assert outcomes[0][0][2] == 1 and outcomes[0][2][outcomes[0][0][0]:] == [9] * (n - outcomes[0][0][0])
        assert outcomes[0][4] == [outcomes[0][0][0] - 1]  # the heartbeat names the last element called


@pytest.mark.parametrize("arguments, error, message", [
    ((0, 0, (np.ones(2),)), ValueError, "address must be a non-zero int"),
    ((1, 5, (np.ones(2),)), ValueError, "result must be 0 to 4, got 5"),
    ((1, 0, ()), TypeError, "columns must be a tuple of 1 to 4 arrays"),
    ((1, 0, (np.ones(2, np.float32),)), TypeError, "column 0 must be float64 or int64"),
    ((1, 0, (np.ones(2), np.ones(3))), ValueError, "the columns must have one length, got 2 and 3"),
    ((1, 1, (np.ones(2),)), TypeError, "values must be int64 for result 1"),
])
def test_the_compiled_loop_and_its_twin_reject_the_same_arguments(arguments, error, message):
    for implementation in (EXTENSION.compiled, _cloop_py):
        with pytest.raises(error, match=message):
            implementation.call(*arguments, np.zeros(2), np.zeros(2, np.uint8), np.zeros(2, np.int32),
                                np.zeros(2, np.int64))


def test_the_twin_gives_the_same_run(monkeypatch):
    a, b = inputs((20, 30))
    compiled = chunkmap.run(stub.compute(), a, b, skip=CError, scheduler="sync", progress=False)
    module = importlib.import_module("chunkmap.cfunc")  # the module (chunkmap.cfunc is the function)
    monkeypatch.setattr(module, "EXTENSION", Extension(EXTENSION.name, EXTENSION.compiled, _cloop_py, _cloop_py))
    twin = chunkmap.run(stub.compute(), a, b, skip=CError, scheduler="sync", progress=False)
    assert twin.values.tolist() == compiled.values.tolist() and list(twin.failures) == list(compiled.failures)


# -- processes: crashes, hangs; threads: in parallel ---------------------------------


def test_a_crash_costs_its_element_on_processes():
    a, b = inputs((10, 20))
    a[2, 3] = slowlib.CRASH_VALUE
    result = chunkmap.run(stub.compute(), a, b, skip=CError, chunks=50, progress=False)
    crashes = [(f.coords, f.type) for f in result.failures if f.kind == "crash"]
    assert crashes == [((2, 3), "SIGSEGV")]
    a[2, 3] = 0.5  # the other elements: exactly the serial loop's
    expected = serial_reference(stub.compute(), a, b, skip=CError)
    computed = [c for c in zip(*expected.coords) if c != (2, 3)]
    assert list(zip(*result.coords)) == computed
    assert [f.coords for f in result.failures if f.kind == "exception"] == [c for c, _, _ in expected.failures]


def test_a_hang_times_out_on_processes():
    a, b = inputs((4, 25))
    a[1, 7] = slowlib.HANG_VALUE
    result = chunkmap.run(stub.compute(), a, b, skip=CError, timeout=1.0, chunks=50, progress=False)
    assert [(f.coords, f.type) for f in result.failures if f.kind == "timeout"] == [((1, 7), "Timeout")]
    assert result.stats.computed + result.stats.failed == a.size


def test_threads_run_the_c_function_in_parallel(cost):
    cost(20_000_000)  # 20 ms per call, busy-waiting outside the GIL
    slowlib.reset_max_concurrent_calls()
    a, b = inputs((4, 10))
    result = chunkmap.run(stub.compute(), a, b, skip=CError, scheduler="threads", chunks=5, progress=False)
    assert slowlib.max_concurrent_calls() == 2  # two threads inside the C function at once: a state, not a time
    assert result.stats.computed + result.stats.failed == a.size


def test_the_stub_cost_set_through_swig_applies_to_the_ctypes_library(cost):
    cost(1234)
    assert stub.library().slowlib_get_cost_ns() == 1234


# -- pointers, signatures, pickling, identity ---------------------------------------


@pytest.mark.parametrize("text, canonical", [
    ("double(double, double)", "double(double, double)"),
    ("float64 ( float64,int64_t )", "double(double, int64)"),
    ("int(double, double, long long *)", "int(double, double, int64*)"),
    ("int32(double,double*)", "int(double, double*)"),
    ("long(long, long, long, long)", "int64(int64, int64, int64, int64)"),
])
def test_signatures_parse(text, canonical):
    assert parse_signature(text).text == canonical


@pytest.mark.parametrize("text", ["double", "double()", "void(double)", "double(double*)", "double(double, double*)",
                                  "int(double*, double)", "double(int)", "double(double, double, double, double, "
                                  "double)", "int(double, int*)", 3])
def test_bad_signatures_say_what_is_expected(text):
    with pytest.raises(SignatureError, match="signature"):
        chunkmap.cfunc(LIBM.fmax, text)


def test_a_signature_is_checked_against_the_pointers_own_or_taken_from_it():
    with pytest.raises(SignatureError, match=r"contradicts the one .* declares, 'int\(double, double, int64\*\)'"):
        chunkmap.cfunc(stub.library().slowlib_compute, "int(double, double, double*)")
    assert chunkmap.cfunc(stub.library().slowlib_compute).signature.text == "int(double, double, int64*)"
    assert chunkmap.cfunc(CODED).signature.text == "int(double, double*)"
    with pytest.raises(SignatureError, match="needs the signature of"):
        chunkmap.cfunc(LIBM.fmax)  # a plain CDLL attribute declares nothing
    with pytest.raises(SignatureError, match="needs the signature of"):
        chunkmap.cfunc(address(LIBM.fmax))


@pytest.mark.parametrize("function, message", [
    (abs, "takes a C function pointer"), (slowlib.slow_computation, "pass it to chunkmap.run directly"),
    (0, "NULL"), (np.zeros(4).ctypes.data, "not executable code"),
])
def test_bad_pointers(function, message):
    with pytest.raises(CPointerError, match=message):
        chunkmap.cfunc(function, "double(double)")


def test_ctypes_cffi_and_address_forms_find_the_same_function():
    import cffi

    ffi = cffi.FFI()
    ffi.cdef("int slowlib_compute(double a, double b, long long *out);")
    lib = ffi.dlopen(stub.library_path())
    signature = "int(double, double, int64*)"
    forms = [stub.library().slowlib_compute, lib.slowlib_compute, address(stub.library().slowlib_compute)]
    wrapped = [chunkmap.cfunc(form, signature) for form in forms]
    assert chunkmap.cfunc(lib.slowlib_compute).signature.text == signature  # cffi declares it
    with pytest.raises(SignatureError, match="contradicts"):
        chunkmap.cfunc(lib.slowlib_compute, "int64(double, double)")
    assert {(f.address, f.library, f.name) for f in wrapped} == {
        (address(stub.library().slowlib_compute), stub.library_path(), "slowlib_compute")}
    a, b = inputs((10, 10))
    results = [chunkmap.run(f, a, b, skip=CError, scheduler="processes", progress=False) for f in wrapped]
    assert all(r.values.tolist() == results[0].values.tolist() for r in results)


def test_named_after_its_symbol_in_dask_and_progress():
    from chunkmap.engine import task_name

    assert task_name(stub.compute()) == "chunkmap-slowlib-compute"
    assert repr(stub.compute()) == "cfunc(slowlib_compute, 'int(double, double, int64*)')"


def test_pickles_as_library_and_symbol():
    f = stub.compute()
    data = pickle.dumps(f)
    assert str(f.address).encode() not in data and b"slowlib_compute" in data
    back = pickle.loads(data)
    assert (back.name, back.library, back.signature, back.errors) == (f.name, f.library, f.signature, f.errors)
    assert back(0.5, 0.25) == 750


def test_a_changed_library_is_refused_in_the_worker(tmp_path):
    copy = tmp_path / "libcopy.so"
    shutil.copy(stub.library_path(), copy)
    data = pickle.dumps(chunkmap.cfunc(ctypes.CDLL(str(copy)).slowlib_compute, "int(double, double, int64*)"))
    os.utime(copy, ns=(0, 0))
    with pytest.raises(CPointerError, match="changed"):
        pickle.loads(data)


def test_a_callback_runs_in_process_and_refuses_to_pickle():
    f = chunkmap.cfunc(CODED, "int(double, double*)", errors={7: "division by zero"})
    assert f.library is None
    result = chunkmap.run(f, np.array([2.0, 0.0]), skip=CError, scheduler="threads", progress=False)
    assert result.values.tolist() == [0.5]
    assert result.failures[0].message == f"cfunction_{f.address:x} returned error code 7 (division by zero)"
    with pytest.raises(NotPicklableError, match="not in a shared library"):
        pickle.dumps(f)
    with pytest.raises(NotPicklableError, match="not in a shared library .* run it on scheduler='threads'"):
        chunkmap.run(f, np.array([2.0]), skip=CError, scheduler="processes", progress=False)
    with pytest.raises(IdentityError, match="name the run yourself"):
        function_digest(f)


def test_the_identity_is_library_symbol_and_signature_never_the_address():
    same = [stub.compute(), chunkmap.cfunc(address(stub.library().slowlib_compute), "int(double, double, int64*)",
                                           errors=stub.compute().errors)]
    assert function_digest(same[0]) == function_digest(same[1])
    assert function_digest(pickle.loads(pickle.dumps(same[0]))) == function_digest(same[0])
    other = chunkmap.cfunc(LIBM.fmax, "double(double, double)")
    assert function_digest(other) != function_digest(same[0])


def test_a_numba_cfunc_runs_everywhere_and_compiles_again_in_workers():
    numba = pytest.importorskip("numba")

    @numba.cfunc("float64(float64, float64)")
    def weighted(a, b):
        return 2.0 * a + b

    f = chunkmap.cfunc(weighted, "double(double, double)")
    assert isinstance(f, CFunction) and f.name == "weighted"
    assert chunkmap.cfunc(weighted).signature == f.signature
    with pytest.raises(SignatureError, match="contradicts"):
        chunkmap.cfunc(weighted, "int64(double, double)")  # would read a double's register as an int
    a, b = inputs((10, 10))
    for scheduler in ["threads", "processes"]:
        result = chunkmap.run(f, a, b, scheduler=scheduler, chunks=10, progress=False)
        np.testing.assert_array_equal(result.values, (2.0 * a + b).ravel())
    data = cloudpickle.dumps(f)  # as chunkmap sends it (the Python function by value)
    assert pickle.loads(data) is pickle.loads(data)  # compiled once per process, not once per chunk
    assert pickle.loads(data)(1.0, 2.0) == 4.0


def test_a_checkpoint_resumes_a_cfunc_run_and_keeps_runs_of_other_functions_apart(tmp_path):
    a, b = inputs((10, 30))
    options = dict(skip=CError, scheduler="sync", chunks=100, progress=False, checkpoint=tmp_path)
    first = chunkmap.run(stub.compute(), a, b, **options)
    again = chunkmap.run(pickle.loads(pickle.dumps(stub.compute())), a, b, **options)
    assert again.stats.resumed == a.size and again.values.tolist() == first.values.tolist()
    with pytest.warns(chunkmap.errors.CheckpointWarning, match="differs in: the function"):
        other = chunkmap.run(chunkmap.cfunc(LIBM.fmax, "double(double, double)"), a, b, **options)
    assert other.stats.resumed == 0


def test_errors_must_map_codes():
    with pytest.raises(chunkmap.errors.OptionError, match="errors must map int error codes"):
        chunkmap.cfunc(LIBM.fmax, "double(double, double)", errors=str)


def test_cancel_stops_a_threads_run_between_two_blocks(cost):
    import threading

    cost(1_000_000)  # 1 ms per call: 20,000 calls would take 10 s on 2 threads
    a, b = inputs((100, 200))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(chunkmap.errors.RunCancelledError):
        chunkmap.run(stub.compute(), a, b, skip=CError, scheduler="threads", cancel=cancel, progress=False)


def test_worker_processes_that_load_the_library_with_ctypes_alone_get_the_cost(cost):
    cost(1234)  # SLOWLIB_COST_NS, read by the library's constructor when a worker's ctypes loads it
    # slowlib_get_cost_ns(void) called with one ignored argument (harmless in the x86-64 and arm64 C ABIs)
    get_cost = chunkmap.cfunc(address(stub.library().slowlib_get_cost_ns), "int64(double)")
    result = chunkmap.run(get_cost, np.zeros(4), scheduler="processes", progress=False)
    assert result.values.tolist() == [1234] * 4
