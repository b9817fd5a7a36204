"""NpyLibrary when files come and go: names as the folder is now, one error for a missing array."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from chunkmap.errors import MissingArrayError, MissingFileError
from chunkmap.npy import NpyLibrary, NpyReader


@pytest.fixture
def folder(tmp_path):
    for k in range(3):
        np.save(tmp_path / f"a{k}.npy", np.full((500, 2), k, dtype="<i4"))
    return tmp_path


@pytest.mark.parametrize("options", [{}, {"max_open_files": 2}, {"cache_bytes": 1 << 20}, {"pattern": "a*"}])
def test_a_file_added_after_a_listing_is_a_name(folder, options):
    lib = NpyLibrary(folder, **options)
    assert "a3" not in lib and len(lib) == 3 and list(lib) == ["a0", "a1", "a2"]
    assert lib.get("a3") is None  # the Mapping protocol: a KeyError
    np.save(folder / "a3.npy", np.full((4, 2), 3, dtype="<i4"))
    assert lib.row("a3", 0).tolist() == [3, 3]
    assert "a3" in lib and len(lib) == 4 and list(lib)[-1] == "a3"
    assert len(list(lib.iter_rows())) == 3 * 500 + 4


@pytest.mark.parametrize("options", [{}, {"max_open_files": 2}, {"cache_bytes": 1 << 20}, {"pattern": "a*"}])
def test_a_removed_file_is_no_longer_a_name(folder, options):
    lib = NpyLibrary(folder, **options)
    assert "a1" in lib and lib.row("a1", 0).tolist() == [1, 1]
    (folder / "a1.npy").unlink()
    assert "a1" not in lib and len(lib) == 2 and list(lib) == ["a0", "a2"]
    with pytest.raises(MissingArrayError, match="no array named 'a1'"):
        lib["a1"]
    with pytest.raises(MissingArrayError, match="no array named 'a1'"):
        lib.row("a1", 0)  # also with a held descriptor or a cached array: lib[name] forgot them
    assert lib.cache_info()["headers"] == 0 and lib.open_files == 0
    np.save(folder / "a1.npy", np.full((7, 3), 9, dtype="<i2"))  # back, with another shape
    assert lib.row("a1", 6).tolist() == [9, 9, 9] and lib["a1"].shape == (7, 3)


def test_a_removed_file_read_by_row_is_forgotten(folder):
    lib = NpyLibrary(folder)
    assert lib.row("a2", 0).tolist() == [2, 2]
    (folder / "a2.npy").unlink()
    with pytest.raises(MissingArrayError, match="a2.npy' does not exist"):
        lib.row("a2", 0)  # the read went to the path, without a stat first
    assert lib.cache_info()["headers"] == 0
    np.save(folder / "a2.npy", np.full((3,), 5, dtype="<f8"))
    assert lib.row("a2", 2) == 5.0 and lib["a2"].shape == (3,)


@pytest.mark.parametrize("options", [{}, {"max_open_files": 2}, {"cache_bytes": 1 << 20}])
def test_a_replaced_file_is_read_again_by_lookup(folder, options):
    lib = NpyLibrary(folder, **options)
    assert lib.row("a0", 499).tolist() == [0, 0] and lib["a0"].shape == (500, 2)
    tmp = folder / "new.tmp"
    np.save(tmp, np.full((10, 3), 8.5))
    os.replace(folder / "new.tmp.npy", folder / "a0.npy")  # another inode, shape and dtype
    reader = lib["a0"]
    assert reader.shape == (10, 3) and lib.header("a0").dtype == np.float64
    assert lib.row("a0", -1).tolist() == [8.5] * 3 and lib.rows("a0", 0, 10).shape == (10, 3)
    assert lib.load("a0").sum() == 8.5 * 30
    assert lib["a0"] is reader  # unchanged since: the kept header


def test_pickled_library_keeps_headers_and_their_identity(folder):
    lib = NpyLibrary(folder)
    lib.header("a1")
    lib2 = pickle.loads(pickle.dumps(lib))
    kept = lib2._readers["a1"]
    assert lib2["a1"] is kept  # same file: its header is not read again
    os.utime(folder / "a1.npy", ns=(1, 1))
    assert lib2["a1"] is not kept and lib2["a1"].shape == (500, 2)


def test_one_error_for_a_missing_array(folder):
    lib = NpyLibrary(folder)
    (folder / "a0.npy").unlink()
    errors = []
    for attempt in (lambda: lib["a0"], lambda: lib.row("a0", 0), lambda: NpyReader(folder / "a0.npy"),
                    lambda: NpyLibrary([folder / "a0.npy"]).row(os.fspath(folder / "a0.npy"), 0)):
        with pytest.raises(MissingArrayError) as e:
            attempt()
        errors.append(e.value)
    reader = NpyReader(folder / "a1.npy")
    (folder / "a1.npy").unlink()
    with pytest.raises(MissingArrayError, match="moved or deleted") as e:
        reader.read_row(0)
    for err in errors + [e.value]:
        assert isinstance(err, (MissingFileError, FileNotFoundError, KeyError))
        assert "a0" in str(err) or "a1" in str(err)
        assert not str(err).startswith(("'", '"'))  # not KeyError's repr of the message


def test_negative_row_out_of_range_names_the_index_asked_for(folder):
    lib = NpyLibrary(folder)
    with pytest.raises(IndexError, match=r"row -501 is out of range for 500 rows"):
        lib.row("a0", -501)
    with pytest.raises(IndexError, match=r"row 500 is out of range for 500 rows"):
        lib.row("a0", 500)
    assert lib.row("a1", -500).tolist() == [1, 1]
    with pytest.raises(IndexError, match=r"row -3 is out of range for 2 rows"):
        NpyReader(np.save(folder / "f.npy", np.ones((2, 2), order="F")) or folder / "f.npy").read_row(-3)
