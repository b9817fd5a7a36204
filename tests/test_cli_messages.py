"""What the command line tells a user: messages in its own words, exit codes, --version, --const and
--kwargs, the result file's permissions; run as real subprocesses, as a user would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import chunkmap
from chunkmap import result_file
from chunkmap.cli.constants import const_option, function_kwargs
from chunkmap.cli.messages import element_error_message, is_about_arguments
from chunkmap.errors import ElementError, OptionError

STUB = "chunkmap.stub.slowlib"

HELPERS = textwrap.dedent("""
    class Boom(Exception):
        pass

    def ident(x):
        return x

    def scaled(x, scale=1.0, offset=0, label=""):
        return x * scale + offset + len(label)

    def boom_at_five(x):
        if x == 5:
            raise Boom("five")
        return x

    def runtime_at_five(x):
        if x == 5:
            raise RuntimeError("five")
        return x
""")


def chunkmap_cli(*args, cwd, umask: int | None = None) -> subprocess.CompletedProcess:
    """``python -m chunkmap ARGS`` in ``cwd``, optionally under another umask."""
    return subprocess.run([sys.executable, "-m", "chunkmap", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120, umask=-1 if umask is None else umask)


@pytest.fixture
def job(tmp_path):
    """A folder with helpers.py, a module that raises on import, and a.npy = arange(12) as 3x4."""
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "broken.py").write_text("raise RuntimeError('no config file')\n")
    np.save(tmp_path / "a.npy", np.arange(12.0).reshape(3, 4))
    return tmp_path


def assert_one_line_error(completed: subprocess.CompletedProcess, status: int, message: str) -> None:
    assert completed.returncode == status, completed.stderr
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr


# --- exit 2: bad requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "function, message",
    [
        ("broken:ident", "cannot import the function 'broken:ident': importing the module 'broken' raised "
                         "RuntimeError: no config file"),
        ("../../etc:passwd", "the function '../../etc:passwd' names the module '../../etc', which is not an "
                             "absolute module name"),
        (".helpers:ident", "the function '.helpers:ident' names the module '.helpers', which is not an absolute"),
        ("helpers..x:ident", "names the module 'helpers..x', which is not an absolute module name"),
    ],
)
def test_bad_function_specs_exit_2_in_one_line(job, function, message):
    completed = chunkmap_cli("run", function, "a.npy", "-o", "out.npz", cwd=job)
    assert_one_line_error(completed, 2, message)
    assert not (job / "out.npz").exists()


def test_a_skip_module_that_raises_on_import_exits_2(job):
    completed = chunkmap_cli("run", "helpers:ident", "a.npy", "--skip", "broken:Boom", "-o", "out.npz", cwd=job)
    assert_one_line_error(completed, 2, "cannot import the exception 'broken:Boom': importing the module 'broken' "
                                        "raised RuntimeError: no config file")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--const", "scale=2", "--const", "scale=3"], "the keyword argument 'scale' is given by --const twice"),
        (["--const", "scale=2", "--kwargs", '{"scale": 1}'], "'scale' is given by --kwargs and --const"),
        (["--const", "2scale=2"], "argument --const: expected NAME=VALUE"),
        (["--const", "scale"], "argument --const: expected NAME=VALUE"),
        (["--kwargs", "[1, 2]"], "argument --kwargs: expected a JSON object of NAME: VALUE"),
        (["--kwargs", "{scale: 1}"], "argument --kwargs: expected a JSON object such as"),
        (["--chunks", "0"], "expected 'auto' or a positive integer; got 0"),
    ],
)
def test_bad_constants_and_usage_errors_exit_2_in_one_line(job, options, message):
    completed = chunkmap_cli("run", "helpers:scaled", "a.npy", *options, "-o", "out.npz", cwd=job)
    assert_one_line_error(completed, 2, message)


# --- exit 1: the job failed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "function, skip",
    [("helpers:runtime_at_five", "--skip RuntimeError"), ("helpers:boom_at_five", "--skip helpers:Boom")],
)
@pytest.mark.parametrize("scheduler", ["sync", "processes"])
def test_an_element_error_advises_the_skip_option(job, function, skip, scheduler):
    completed = chunkmap_cli("run", function, "a.npy", "--scheduler", scheduler, "-o", "out.npz", cwd=job)
    kind = skip.split(":")[-1].split()[-1]
    assert_one_line_error(completed, 1, f"func raised {kind}: five at element (1, 1) called with inputs (5.0,); "
                                        f"pass {skip} to record such elements and go on")
    assert "skip=" not in completed.stderr
    again = chunkmap_cli("run", function, "a.npy", *skip.split(), "--scheduler", scheduler, "-o", "out.npz", cwd=job)
    assert again.returncode == 0, again.stderr  # the advice works
    assert result_file.load_result(job / "out.npz").failures.coords == ((1,), (1,))


@pytest.mark.parametrize(
    "args, told",
    [
        (["helpers:ident", "a.npy", "a.npy"], "ident() takes 1 positional argument but 2 were given"),
        (["helpers:scaled", "a.npy", "--const", "nope=1"], "got an unexpected keyword argument 'nope'"),
        ([f"{STUB}:slow_computation", "a.npy"], "slow_computation expected 2 arguments, got 1"),  # SWIG's words
    ],
)
def test_a_type_error_about_arguments_advises_inputs_and_constants(job, args, told):
    completed = chunkmap_cli("run", *args, "--scheduler", "sync", "-o", "out.npz", cwd=job)
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
    assert told in completed.stderr
    assert "the function does not accept these arguments" in completed.stderr
    assert "give one INPUT.npy per argument that varies by element, and the constant ones as --const NAME=VALUE " \
           "or --kwargs JSON" in completed.stderr
    assert "--skip" not in completed.stderr and "skip=" not in completed.stderr


def test_element_error_messages():
    error = ElementError((3, 4), (0.5, 2.0), "TypeError", "f() missing 1 required positional argument: 'c'")
    assert element_error_message(error, 2, ["scale"]) == (
        "func raised TypeError: f() missing 1 required positional argument: 'c' at element (3, 4) called with "
        "inputs (0.5, 2.0): the function does not accept these arguments (it got 2 positional inputs, one per "
        "INPUT.npy and the keyword argument scale); give one INPUT.npy per argument that varies by element, and "
        "the constant ones as --const NAME=VALUE or --kwargs JSON"
    )
    unknown = ElementError((0,), (1,), "InternalError", "bad")  # no chained cause: the module is unknown
    assert element_error_message(unknown, 1).endswith("pass --skip MODULE:InternalError to record such elements "
                                                      "and go on")
    assert is_about_arguments("TypeError", "slow_computation() takes no keyword arguments")
    assert is_about_arguments("TypeError", "f() takes exactly one argument (2 given)")
    assert not is_about_arguments("TypeError", "must be real number, not str")
    assert not is_about_arguments("ValueError", "takes 2 positional arguments but 3 were given")


# --- exit 0: --version, help, constants, permissions --------------------------------------------


def test_version(tmp_path):
    completed = chunkmap_cli("--version", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"chunkmap {chunkmap.__version__}\n"


def test_help_texts_read_as_written(tmp_path):
    demo = chunkmap_cli("demo", "--help", cwd=tmp_path)
    assert demo.returncode == 0 and "~10% masked" in demo.stdout and "%%" not in demo.stdout
    run = chunkmap_cli("run", "--help", cwd=tmp_path)
    assert run.returncode == 0 and "%%" not in run.stdout
    epilog = run.stdout[run.stdout.index("exit status:"):]
    assert [line.split()[0] for line in epilog.splitlines()[1:] if line[:3].strip()] == ["0", "1", "2", "130"]


def test_constants_and_kwargs_reach_the_function(job):
    completed = chunkmap_cli("run", "helpers:scaled", "a.npy", "--const", "scale=2", "--const", "label=abc",
                             "--kwargs", '{"offset": 0.5}', "--scheduler", "processes", "-o", "out.npz", cwd=job)
    assert completed.returncode == 0, completed.stderr
    result = result_file.load_result(job / "out.npz")
    np.testing.assert_array_equal(result.values, np.arange(12.0) * 2 + 0.5 + 3)
    with np.load(job / "out.npz") as data:
        assert json.loads(str(data["job"]))["kwargs"] == {"offset": 0.5, "scale": 2, "label": "abc"}


def test_const_values_are_literals_else_strings():
    assert const_option("n=3") == ("n", 3)
    assert const_option("pair=(1, 2)") == ("pair", (1, 2))
    assert const_option("flag=True") == ("flag", True)
    assert const_option("mode=fast") == ("mode", "fast")
    assert const_option("path=/tmp/x.txt") == ("path", "/tmp/x.txt")
    assert const_option("empty=") == ("empty", "")
    assert function_kwargs([], None) == {}
    with pytest.raises(OptionError, match="given by --const twice"):
        function_kwargs([("a", 1), ("a", 2)], None)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_result_file_respects_the_umask(job, umask, mode):
    completed = chunkmap_cli("run", "helpers:ident", "a.npy", "--scheduler", "sync", "--checkpoint", "ckpt",
                             "-o", "out.npz", cwd=job, umask=umask)
    assert completed.returncode == 0, completed.stderr
    assert stat.S_IMODE(os.stat(job / "out.npz").st_mode) == mode
    files = [path for path in (job / "ckpt").rglob("*") if path.is_file()]
    assert any(path.name == "lease" for path in files)
    assert {stat.S_IMODE(os.stat(path).st_mode) for path in files} == {mode}  # like the checkpoint's, lease too
