"""Build chunkmap's C extensions and the SWIG stub ``chunkmap.stub._slowlib``; metadata is in
pyproject.toml.

chunkmap's own C extensions follow one convention (see ``chunkmap/_extensions.py``):
``chunkmap/<package>/_<name>.c`` is built by :func:`twinned_extension` with the same flags into
``chunkmap.<package>._<name>``, and its pure-Python twin ``_<name>_py.py`` stands in when it is
not built. Their build is therefore optional: if the compiler fails on one of them, the install
still succeeds, with a warning saying how to get the compiled one. The SWIG stub has no twin (it
*is* the example C library) and must build.

setuptools runs ``build_py`` before ``build_ext``, but SWIG writes the proxy module
``chunkmap/stub/slowlib.py`` during ``build_ext``; ``build_py`` therefore runs
``build_ext`` first so that the proxy is found and copied into wheels.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py
from setuptools.errors import BaseError, CCompilerError

#: The compiler flags of every extension with a twin.
TWINNED_FLAGS = ["-O3"]


def twinned_extension(name: str) -> Extension:
    """The C extension ``name`` (``chunkmap.<package>._<name>``) from ``chunkmap/<package>/_<name>.c``.

    Plain C API (no numpy headers); optional: its twin ``<name>_py`` stands in.
    """
    return Extension(name, [name.replace(".", "/") + ".c"], extra_compile_args=TWINNED_FLAGS,
                     optional=True)


class build_ext(_build_ext):
    """``build_ext`` where an optional extension that fails to build is a warning, not an error."""

    def build_extension(self, ext):
        if not ext.optional:
            return super().build_extension(ext)
        try:
            return super().build_extension(ext)
        except (CCompilerError, BaseError) as exc:
            twin = ext.sources[0].removesuffix(".c") + "_py.py"
            message = (
                f"WARNING: the C extension {ext.name} did not build ({exc}).\n"
                f"chunkmap installs without it and uses its slower pure-Python twin {twin}.\n"
                "To get the compiled one: install a C compiler and the Python headers (Debian: "
                "apt-get install gcc python3-dev), then reinstall chunkmap (pip install "
                "--force-reinstall --no-deps chunkmap, or python setup.py build_ext --inplace "
                "in a checkout)."
            )
            rule = "*" * 78
            print(f"\n{rule}\n{message}\n{rule}\n", file=sys.stderr)


class build_py(_build_py):
    """``build_py`` that first runs ``build_ext`` (which generates the SWIG proxy)."""

    def run(self):
        self.run_command("build_ext")
        super().run()


slowlib = Extension(
    "chunkmap.stub._slowlib",
    sources=["chunkmap/stub/slowlib.i", "chunkmap/stub/slowlib.c"],
    include_dirs=["chunkmap/stub"],
    depends=["chunkmap/stub/slowlib.h"],
    # -builtin: the functions are C builtins, no Python wrapper per call.
    swig_opts=["-builtin"],
    extra_compile_args=["-O2"],
)

setup(
    ext_modules=[
        slowlib,
        twinned_extension("chunkmap._hotloop"),  # the per-element loop of chunkmap.loop
        twinned_extension("chunkmap._cloop"),  # a C function over a chunk, GIL released (chunkmap.cfunc)
        twinned_extension("chunkmap.npy._pread"),  # open + pread + close in one call
    ],
    cmdclass={"build_ext": build_ext, "build_py": build_py},
    # The SWIG-generated C source is not package data (the *.c glob would match it).
    exclude_package_data={"chunkmap.stub": ["slowlib_wrap.c"]},
)
