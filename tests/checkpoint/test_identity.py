"""A run's identity is what it computes: code, bound state, C library build, options, inputs, mask."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from chunkmap.checkpoint import function_digest, run_identity
from chunkmap.errors import IdentityError
from chunkmap.plan import make_plan
from chunkmap.stub import slowlib


def define(source: str, name: str = "f", namespace: dict | None = None, filename: str = "script.py"):
    """The function ``name`` defined by running ``source`` as a user's script (module ``__main__``)."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def same(first, second) -> bool:
    return function_digest(first) == function_digest(second)


def test_line_numbers_comments_docstrings_and_file_names_are_not_part_of_it():
    plain = define("def f(x):\n    return x * 2\n")
    moved = define("import os\n\n\n# a comment\ndef f(x):\n    '''Double.'''\n    # why\n    return x * 2  # twice\n",
                   filename="elsewhere.py")
    assert same(plain, moved)


@pytest.mark.parametrize("edited", [
    "def f(x):\n    return x * 3\n",             # a constant
    "def f(x):\n    return x + 2\n",             # an operation
    "def f(x, k=2):\n    return x * k\n",        # a default instead of a constant
    "def f(y):\n    return y * 2\n",             # a renamed argument (keyword calls differ)
    "def f(x):\n    return (lambda: x * 2)()\n", # nested code
])
def test_what_the_code_computes_is(edited):
    assert not same(define("def f(x):\n    return x * 2\n"), define(edited))


def test_defaults_closures_and_globals_are_followed():
    assert not same(define("def f(x, k=2):\n    return x * k\n"), define("def f(x, k=3):\n    return x * k\n"))

    def closure(k):
        return lambda x: x * k

    assert same(closure(2), closure(2)) and not same(closure(2), closure(3))
    helper = "def helper(x):\n    return x {op} 1\n\ndef f(x):\n    return helper(x) * 2\n"
    assert not same(define(helper.format(op="+")), define(helper.format(op="-")))  # an edited helper
    constant = "SCALE = {}\n\ndef f(x):\n    return x * SCALE\n"
    assert same(define(constant.format(2)), define(constant.format(2)))
    assert not same(define(constant.format(2)), define(constant.format(3)))
    table = "TABLE = np.arange({})\n\ndef f(x):\n    return TABLE[x]\n"
    assert not same(define(table.format(5), namespace={"__name__": "__main__", "np": np}),
                    define(table.format(6), namespace={"__name__": "__main__", "np": np}))


def test_recursion_and_mutual_recursion_terminate():
    source = ("def f(n):\n    return 1 if n < 2 else n * f(n - 1)\n\n"
              "def even(n):\n    return n == 0 or odd(n - 1)\n\ndef odd(n):\n    return n != 0 and even(n - 1)\n")
    assert same(define(source), define(source)) and same(define(source, "even"), define(source, "even"))


class Model:
    def __init__(self, scale):
        self.scale = scale

    def predict(self, x):
        return self.scale * x


def test_a_bound_method_includes_its_instance_and_a_partial_its_arguments():
    assert same(Model(2).predict, Model(2).predict)
    assert not same(Model(2).predict, Model(3).predict)

    def power(x, k):
        return x**k

    assert same(functools.partial(power, k=2), functools.partial(power, k=2))
    assert not same(functools.partial(power, k=2), functools.partial(power, k=3))


def test_a_method_of_the_class_edited_is_another_identity():
    source = "class M:\n    def helper(self, x):\n        return x {op} 1\n    def predict(self, x):\n        return self.helper(x)\n"
    first, second = (define(source.format(op=op), "M")().predict for op in "+-")
    assert not same(first, second)


def test_c_functions_are_named_with_their_extension_build(tmp_path):
    assert same(slowlib.slow_computation, slowlib.slow_computation)
    assert not same(slowlib.slow_computation, slowlib.slow_computation_nogil)
    original = slowlib.slow_computation.__self__.__file__ if hasattr(slowlib.slow_computation, "__self__") \
        else sys.modules[slowlib.slow_computation.__module__].__file__
    copy = tmp_path / os.path.basename(original)
    shutil.copy(original, copy)
    spec = importlib.util.spec_from_file_location("_slowlib", copy)
    rebuilt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rebuilt)
    before = function_digest(rebuilt.slow_computation)
    assert before == function_digest(rebuilt.slow_computation)
    with open(copy, "ab") as file:  # a rebuilt library: other bytes in the extension file
        file.write(b"\0rebuilt")
    assert function_digest(rebuilt.slow_computation) != before


def test_what_cannot_be_fingerprinted_is_a_clear_error():
    with pytest.raises(IdentityError, match=r"func.__self__ is a chunkmap.stub.slowlib.Model whose state cannot be "
                                            r"pickled .*chunkmap.Checkpoint\(location, name="):
        function_digest(slowlib.Model(2.0).predict)
    lock = threading.Lock()
    with pytest.raises(IdentityError, match=r"closure variable 'lock' is a _thread.lock"):
        function_digest(lambda x: lock and x)
    assert isinstance(IdentityError("x"), TypeError)


def test_library_functions_are_named_with_their_version():
    assert same(np.sin, np.sin) and not same(np.sin, np.cos)
    assert same(os.path.join, os.path.join)


def test_sets_hash_the_same_in_every_process():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from chunkmap.checkpoint import function_digest; "
            "names = {'alpha', 'beta', 'gamma', 'delta'}; print(function_digest(lambda x: x in names))")
    digests = {subprocess.run([sys.executable, "-c", code, os.getcwd()], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1


def identity(func, *arrays, mask=None, skip=(), kwargs=None, timeout=None, chunks="auto", name=None):
    plan = make_plan(arrays, mask=mask)
    return run_identity(func, plan.source, skip, kwargs, timeout, chunks, name=name)


def test_the_parts_of_a_run_identity():
    a = np.arange(12.0).reshape(3, 4)
    base = identity(abs, a)
    changes = {
        "function": identity(round, a),
        "arguments": identity(abs, a, kwargs={"k": 1}),
        "options": identity(abs, a, timeout=5.0),
        "inputs": identity(abs, a + 1),
        "mask": identity(abs, a, mask=a > 5),
    }
    for part, other in changes.items():
        assert base.differences(other.parts) == [part], part
        assert other.run_id != base.run_id
    assert identity(abs, a, skip=(ValueError,)).differences(base.parts) == ["options"]
    assert identity(abs, a, chunks=10).differences(base.parts) == ["options"]
    assert identity(abs, a.astype(np.float32)).differences(base.parts) == ["inputs"]
    assert identity(abs, a).run_id == base.run_id


def test_a_name_replaces_the_function_and_kwargs_but_not_the_inputs():
    a = np.arange(6)
    named = identity(slowlib.Model(2.0).predict, a, a, name="model-v1", kwargs={"handle": threading.Lock()})
    assert named.parts == identity(abs, a, a, name="model-v1").parts
    assert identity(abs, a, a, name="model-v2").differences(named.parts) == ["function"]
    assert identity(abs, a, a + 1, name="model-v1").differences(named.parts) == ["inputs"]
