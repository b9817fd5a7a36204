"""What a lazy input's contents are, without reading them: the digest a resumed run is checked against.

numpy only at import time. A lazy input (:mod:`chunkmap.arrays`) is fingerprinted by its
*structure* and its *leaves*:

- a dask array by its name (dask's token of the graph: the operations, their arguments and the
  slicing) and by every leaf its graph reads;
- an xarray variable by its dask array, or, when it is lazily indexed from a backend, by the
  chain of lazy indexing (``repr`` of each key) down to the leaf;
- leaves: a numpy array by its bytes (hashed at memory speed); a zarr array on a local store by
  its metadata and the name, size and modification time of every file under it (a chunk
  rewritten in place changes its size or mtime; nothing is read).

Anything else (a zarr array in memory or on object storage, a netCDF backend array, a dask graph
whose data comes from a function reading files) cannot be told apart from a changed copy of
itself, so it raises :class:`~chunkmap.errors.IdentityError` naming the input: never a resumed
run over data that may have changed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from ..arrays import is_dask, is_xarray, is_zarr
from ..errors import IdentityError

__all__ = ["fingerprint"]

#: how deep the fingerprint follows xarray's lazy array wrappers (``.array``) to their leaf
WRAPPER_DEPTH = 16


def fingerprint(data: Any, add: Callable[[str, bytes | memoryview], None], hash_array: Callable[[np.ndarray], None],
                what: str) -> None:
    """Feed ``add`` (a digest's ``add(label, bytes)``) with what identifies ``data``'s contents.

    Raises
    ------
    IdentityError
        ``data`` or one of its leaves cannot be fingerprinted without reading it whole.
    """
    if isinstance(data, np.ndarray):
        add("numpy", f"{data.dtype.str}{data.shape}".encode())
        hash_array(data)
    elif is_xarray(data):
        _variable(data, add, hash_array, what)
    elif is_dask(data):
        _dask(data, add, hash_array, what)
    elif is_zarr(data):
        _zarr(data, add, what)
    else:
        raise IdentityError(f"{what} is a {type(data).__module__}.{type(data).__qualname__}, which chunkmap cannot "
                            f"fingerprint without reading it; {ADVICE}")


ADVICE = ("to resume over it, pass numpy arrays, .npy files, zarr arrays on a local store, or dask/xarray arrays "
          "made from those (e.g. xarray.open_zarr(path) or dask.array.from_zarr(path))")


def _variable(data: Any, add: Callable[[str, bytes | memoryview], None], hash_array: Callable[[np.ndarray], None],
              what: str) -> None:
    variable = getattr(data, "variable", data)
    add("dims", repr(variable.dims).encode())
    if variable.chunks is not None:
        _dask(variable.data, add, hash_array, what)
        return
    inner: Any = variable._data  # xarray keeps a lazily indexed backend array here
    for _ in range(WRAPPER_DEPTH):
        if isinstance(inner, np.ndarray) or is_zarr(inner):
            return fingerprint(inner, add, hash_array, what)
        add("wrapper", f"{type(inner).__qualname__}:{getattr(inner, 'key', '')!r}".encode())
        if hasattr(inner, "get_array"):  # xarray's ZarrArrayWrapper
            inner = inner.get_array()
        elif hasattr(inner, "array"):
            inner = inner.array
        else:
            break
    fingerprint(inner, add, hash_array, what)


def _dask(array: Any, add: Callable[[str, bytes | memoryview], None], hash_array: Callable[[np.ndarray], None],
          what: str) -> None:
    add("dask", array.name.encode())
    leaves = 0
    for value in _graph_values(array):
        if isinstance(value, np.ndarray) or is_zarr(value) or is_xarray(value) or _is_wrapper(value):
            leaves += 1
            fingerprint(value if not _is_wrapper(value) else _unwrap(value), add, hash_array, what)
    if leaves == 0 and not _made_of_constants(array):
        raise IdentityError(f"{what} is a dask array whose data chunkmap cannot find in its graph (no numpy or zarr "
                            f"array in it); {ADVICE}")


def _graph_values(array: Any) -> list[Any]:
    """What a dask array's graph holds besides its tasks, without materialising its blockwise layers.

    A blockwise layer (one function over every block) holds data only in its literal
    arguments; other layers (``from_array``'s, ``from_zarr``'s) are read value by value.
    """
    graph = array.__dask_graph__()
    values: list[Any] = []
    for layer in getattr(graph, "layers", {"": graph}).values():
        if hasattr(layer, "indices") and hasattr(layer, "output_indices"):  # dask.blockwise.Blockwise
            values.extend(argument for argument, index in layer.indices if index is None)
        else:
            values.extend(dict(layer).values())
    return values


def _is_wrapper(value: Any) -> bool:
    """xarray's lazy indexing adapters, which hold a backend array (``.array``)."""
    return type(value).__module__.startswith("xarray.") and hasattr(value, "array")


def _unwrap(value: Any) -> Any:
    for _ in range(WRAPPER_DEPTH):
        if isinstance(value, np.ndarray) or is_zarr(value):
            return value
        value = value.get_array() if hasattr(value, "get_array") else getattr(value, "array", value)
    return value


def _made_of_constants(array: Any) -> bool:
    """Whether every task of the graph is one of dask's array creation functions (zeros, ones, full, arange...):
    their name, a token of their arguments, is then their contents."""
    graph = array.__dask_graph__()
    names = set(graph.layers) if hasattr(graph, "layers") else {key[0] if isinstance(key, tuple) else key
                                                                 for key in dict(graph)}
    creators = ("zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "empty_like", "arange", "linspace", "eye", "tri", "broadcast_to", "getitem",
                "reshape", "rechunk", "transpose", "astype", "mul", "add", "sub", "truediv", "mod", "lt", "le",
                "gt", "ge", "eq", "ne", "invert", "and_", "or_", "neg", "pow", "where", "isnan", "abs")
    return all(str(name).split("-")[0].rstrip("_") in creators for name in names)


def _zarr(array: Any, add: Callable[[str, bytes | memoryview], None], what: str) -> None:
    root = _local_root(array)
    if root is None:
        raise IdentityError(f"{what} is a zarr array on a {type(array.store).__qualname__}, whose contents chunkmap "
                            f"can know only by reading them; {ADVICE}")
    folder = os.path.join(root, array.path) if array.path else root
    add("zarr", f"{os.path.abspath(folder)}:{array.shape}:{array.dtype}".encode())
    add("metadata", json.dumps(array.metadata.to_dict(), sort_keys=True, default=str).encode())
    for directory, subdirectories, files in os.walk(folder):
        subdirectories.sort()
        for name in sorted(files):
            status = os.stat(os.path.join(directory, name))
            relative = os.path.relpath(os.path.join(directory, name), folder)
            add("file", f"{relative}:{status.st_size}:{status.st_mtime_ns}".encode())


def _local_root(array: Any) -> str | None:
    """The folder of a zarr array's local store, or None for any other store."""
    root = getattr(array.store, "root", None)
    return os.fspath(root) if root is not None and type(array.store).__name__ == "LocalStore" else None
