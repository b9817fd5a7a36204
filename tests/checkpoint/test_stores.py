"""The directory and memory stores pass the store conformance suite; the directory store's own failures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chunkmap.checkpoint import DirectoryStore, MemoryStore, open_store
from chunkmap.errors import CheckpointError, OptionError
from chunkmap.testing import ChunkStoreTests


class TestDirectoryStore(ChunkStoreTests):
    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path):
        self.folder = tmp_path / "store"

    def make_store(self):
        return DirectoryStore(self.folder)


class TestMemoryStore(ChunkStoreTests):
    shared_between_processes = False

    def make_store(self):
        return MemoryStore()


FULL = """
import resource, signal, sys
from chunkmap.checkpoint import DirectoryStore
from chunkmap.errors import CheckpointError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel refuses the write with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
store = DirectoryStore(sys.argv[1])
store.put("run/chunk-000000000", b"x" * 100)
try:
    store.put("run/chunk-000000001", b"x" * 100_000)
except CheckpointError as exc:
    print(exc)
"""


def test_a_write_the_file_system_refuses_is_a_checkpoint_error_and_leaves_no_partial_file(tmp_path):
    printed = subprocess.run([sys.executable, "-c", FULL, str(tmp_path)], capture_output=True, text=True, check=True)
    assert "cannot write 'run/chunk-000000001' in the checkpoint directory" in printed.stdout
    assert "ulimit -f" in printed.stdout and "Finished chunks already stored there are kept" in printed.stdout
    assert sorted(os.listdir(tmp_path / "run")) == ["chunk-000000000"]  # no temporary file left


def test_a_directory_where_a_record_should_be(tmp_path):
    store = DirectoryStore(tmp_path)
    (tmp_path / "run" / "chunk-000000003").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="a directory is where a record should be; remove it"):
        store.get("run/chunk-000000003")
    (tmp_path / "run" / "chunk-000000003" / "x").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write 'run/chunk-000000003'"):
        store.put("run/chunk-000000003", b"data")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["chunk-000000003"]


def test_open_store_names_what_a_store_lacks():
    class Half:
        def get(self, key): ...
        def put(self, key, data): ...
        def keys(self, prefix): ...

    with pytest.raises(OptionError, match=r"got Half .* \(it has no create, delete, lease, holder\)"):
        open_store(Half())
    assert isinstance(open_store(MemoryStore()), MemoryStore)
