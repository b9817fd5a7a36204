"""The shape of the code: the numpy-only core imports without dask, distributed or any extra."""

from __future__ import annotations

import subprocess
import sys

#: the modules that may import only numpy, the standard library and each other
CORE = ["chunkmap.plan", "chunkmap.source", "chunkmap.arrays", "chunkmap.blocks", "chunkmap.labelled", "chunkmap.stored",
        "chunkmap.checkpoint.fingerprint", "chunkmap.bitmask", "chunkmap.kernel", "chunkmap.fields", "chunkmap.loop",
        "chunkmap.outputs", "chunkmap.result", "chunkmap.failures", "chunkmap.codec", "chunkmap.sizing",
        "chunkmap.errors", "chunkmap.options", "chunkmap.system", "chunkmap.checkpoint.records",
        "chunkmap.checkpoint.identity", "chunkmap.local.child", "chunkmap.local.transport", "chunkmap.backends",
        "chunkmap.result_file", "chunkmap.stored_result", "chunkmap.output_lease", "chunkmap.cfunc", "chunkmap.csignature"]
BLOCKED = ("dask", "distributed", "cloudpickle", "redis", "hiredis", "tqdm", "zarr", "xarray", "pandas")

IMPORT_BLOCKED = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
for name in sys.argv[2:]:
    __import__(name)
print(",".join(sorted({name.partition(".")[0] for name in sys.modules} & blocked)))
"""


def test_the_core_imports_with_dask_and_the_extras_blocked():
    done = subprocess.run([sys.executable, "-c", IMPORT_BLOCKED, ",".join(BLOCKED), *CORE],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_blocking_is_real():
    done = subprocess.run([sys.executable, "-c", IMPORT_BLOCKED, "dask", "chunkmap.engine"], capture_output=True,
                          text=True)
    assert done.returncode != 0 and "dask is blocked in this test" in done.stderr
