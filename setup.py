"""Build the SWIG extension ``chunkmap.stub._slowlib``; metadata is in pyproject.toml.

setuptools runs ``build_py`` before ``build_ext``, but SWIG writes the proxy module
``chunkmap/stub/slowlib.py`` during ``build_ext``; ``build_py`` therefore runs
``build_ext`` first so that the proxy is found and copied into wheels.
"""

from setuptools import Extension, setup
from setuptools.command.build_py import build_py as _build_py


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

# The compiled per-element loop of chunkmap.loop (plain C API, no numpy headers).
hotloop = Extension("chunkmap._hotloop", ["chunkmap/_hotloop.c"], extra_compile_args=["-O3"])

# open + pread + close in one call for chunkmap.npy (plain C API; _io.py is the fallback).
npy_pread = Extension("chunkmap.npy._pread", ["chunkmap/npy/_pread.c"], extra_compile_args=["-O2"])

setup(
    ext_modules=[slowlib, hotloop, npy_pread],
    cmdclass={"build_py": build_py},
    # The SWIG-generated C source is not package data (the *.c glob would match it).
    exclude_package_data={"chunkmap.stub": ["slowlib_wrap.c"]},
)
