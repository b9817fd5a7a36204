"""chunkmap's convention for C extensions: each has a twin, one switch selects the twins, the
build is optional."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from chunkmap import _extensions

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: every C extension of chunkmap with a twin: chunkmap/<package>/_<name>.c (the SWIG stub has none)
SOURCES = sorted(p for p in (ROOT / "chunkmap").rglob("_*.c") if "stub" not in p.parts)
NAMES = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in SOURCES]

CHOICES = """
import json, sys
import numpy as np
import chunkmap, chunkmap.loop, chunkmap.npy._io as io, chunkmap._extensions as ext
from chunkmap import _hotloop_py
from chunkmap.npy import NpyReader, _pread_py
np.save(sys.argv[1], np.arange(12.0).reshape(4, 3))
values, status, failures, error = chunkmap.loop.run_to_end(lambda a: a * 2, (np.arange(5),))
print(json.dumps({
    "loaded": ext.loaded(),
    "loop is twin": chunkmap.loop.loop is _hotloop_py.loop,
    "pread is twin": io.pread_path is _pread_py.pread_path and io.pool_read is _pread_py.pool_read,
    "values": values.tolist(),
    "row": NpyReader(sys.argv[1]).read_row(2).tolist(),
}))
"""


def choices(tmp_path, switch: str | None, prelude: str = "") -> dict:
    """What a fresh interpreter imports with CHUNKMAP_PURE_PYTHON set to ``switch`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != _extensions.ENVIRONMENT_SWITCH}
    if switch is not None:
        env[_extensions.ENVIRONMENT_SWITCH] = switch
    done = subprocess.run([sys.executable, "-W", "error", "-c", prelude + CHOICES, str(tmp_path / "a.npy")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_extension_follows_the_convention():
    assert NAMES == ["chunkmap._cloop", "chunkmap._hotloop", "chunkmap.npy._pread"]
    setup_py = (ROOT / "setup.py").read_text()
    for source, name in zip(SOURCES, NAMES):
        assert source.with_name(source.stem + "_py.py").is_file(), f"{name} has no twin"
        assert f'twinned_extension("{name}")' in setup_py, f"{name} is not built by the one helper"
        assert f'"{name}"' in source.read_text(), f"{source.name} does not name its module {name}"
        extension = _extensions.load(name)
        assert extension.compiled is not None, f"{name} is not built: python setup.py build_ext --inplace"
        compiled = {n for n in dir(extension.compiled) if not n.startswith("_")}
        assert compiled == set(extension.twin.__all__), name  # the same public names ...
        for attribute in compiled:  # ... the constants equal, the functions documented
            value, twin_value = getattr(extension.compiled, attribute), getattr(extension.twin, attribute)
            if callable(value):
                assert value.__doc__ and twin_value.__doc__, (name, attribute)
            else:
                assert value == twin_value, (name, attribute)


@pytest.mark.parametrize("switch", [None, "0", ""])
def test_the_compiled_extensions_are_used_by_default(tmp_path, switch):
    got = choices(tmp_path, switch)
    assert got["loaded"] == {name: "c" for name in NAMES}
    assert not got["loop is twin"] and not got["pread is twin"]
    assert got["values"] == [0, 2, 4, 6, 8] and got["row"] == [6.0, 7.0, 8.0]


def test_the_environment_switch_selects_every_twin(tmp_path):
    got = choices(tmp_path, "1")
    assert got["loaded"] == {name: "python" for name in NAMES}
    assert got["loop is twin"] and got["pread is twin"]
    assert got["values"] == [0, 2, 4, 6, 8] and got["row"] == [6.0, 7.0, 8.0]


UNBUILT = f"""
import importlib.abc, sys, warnings
class Unbuilt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in {NAMES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Unbuilt())
caught = warnings.catch_warnings(record=True)
seen = caught.__enter__()
warnings.simplefilter("always")
"""
REPORT = "print(json.dumps([str(w.message) for w in seen if w.category.__name__ == 'ChunkmapWarning']), file=sys.stderr)\n"


def test_an_unbuilt_extension_falls_back_to_its_twin_with_a_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != _extensions.ENVIRONMENT_SWITCH}
    for switch, expect_warnings in [(None, True), ("1", False)]:
        if switch is not None:
            env[_extensions.ENVIRONMENT_SWITCH] = switch
        done = subprocess.run([sys.executable, "-c", UNBUILT + CHOICES + REPORT, str(tmp_path / "a.npy")],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        assert got["loaded"] == {name: "python" for name in NAMES}
        assert got["values"] == [0, 2, 4, 6, 8] and got["row"] == [6.0, 7.0, 8.0]
        messages = json.loads(done.stderr.strip().splitlines()[-1])
        if expect_warnings:
            assert len(messages) == len(NAMES), messages
            for name, message in zip(NAMES, messages):
                assert message.startswith(f"{name} does not import"), message
                assert "pure-Python twin" in message and "build_ext --inplace" in message
                assert "CHUNKMAP_PURE_PYTHON=1" in message
        else:
            assert messages == []


def test_load_is_once_per_extension():
    assert _extensions.load("chunkmap._hotloop") is importlib.import_module("chunkmap.loop").EXTENSION
    assert _extensions.load("chunkmap.npy._pread") is importlib.import_module("chunkmap.npy._io").EXTENSION


FAILING_CC = """#!/bin/sh
# the C compiler, failing on chunkmap's own extensions as a broken toolchain would
case "$*" in {patterns}) echo "cc: simulated failure" >&2; exit 1;; esac
exec {cc} "$@"
"""


@pytest.mark.slow
def test_the_build_succeeds_with_a_warning_when_the_compiler_fails(tmp_path):
    """setup.py's build_ext (what pip runs) with a compiler that fails on the twinned extensions."""
    if shutil.which("swig") is None or not sysconfig.get_config_var("CC"):
        pytest.skip("needs swig and a C compiler")
    tree = tmp_path / "tree"
    for relative in ["setup.py", "pyproject.toml", "README.md", "chunkmap/stub/slowlib.i",
                     "chunkmap/stub/slowlib.c", "chunkmap/stub/slowlib.h",
                     *(str(p.relative_to(ROOT)) for p in SOURCES)]:
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tree / relative)
    cc = tmp_path / "cc"
    patterns = "|".join(f"*{p.name}*" for p in SOURCES)
    cc.write_text(FAILING_CC.format(patterns=patterns, cc=sysconfig.get_config_var("CC")))
    cc.chmod(0o755)
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "tmp"],
                          cwd=tree, capture_output=True, text=True, env={**os.environ, "CC": str(cc)},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    built = {p.name.partition(".")[0] for p in (tree / "lib").rglob("*.so")}
    assert built == {"_slowlib"}  # the stub built, the twinned extensions did not
    for source, name in zip(SOURCES, NAMES):
        twin = source.relative_to(ROOT).with_name(source.stem + "_py.py")
        warning = re.search(rf"WARNING: the C extension {re.escape(name)} did not build.*?\n\*+", done.stderr,
                            re.DOTALL)
        assert warning, done.stderr
        assert f"pure-Python twin {twin}" in warning.group()
        assert "build_ext --inplace" in warning.group() and "C compiler" in warning.group()
