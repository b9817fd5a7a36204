"""A :class:`~chunkmap.Result` as labelled data: an xarray DataArray or Dataset, a pandas table.

numpy only at import time; xarray and pandas are optional extras, imported by the functions
that need them (a missing one raises :class:`~chunkmap.errors.MissingDependencyError` naming
the extra). :class:`Labels` are the dims, coordinates, name and attrs of an xarray input,
carried by a result (``result.labels``) so that :func:`to_xarray` gives them back.

The dense arrays follow :meth:`Result.to_dense`: NaN where nothing was computed (masked or
failed elements), int and bool values promoted to float64, object values kept as objects (with
NaN, not None: xarray turns None into NaN in arrays of strings anyway, and ``isnull()`` finds
both). Which of these an element is, is its *status* (:data:`STATUS`), an int8 code per
element in CF's ``flag_values``/``flag_meanings`` style (:func:`status_codes`).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Iterable

import numpy as np

from .display import input_names
from .errors import MissingDependencyError, OptionError, ShapeError

if TYPE_CHECKING:
    import pandas
    import xarray

    from .result import Failures, Result

__all__ = ["Labels", "STATUS", "FAILURE_KINDS", "status_codes", "to_xarray", "to_pandas", "failures_to_pandas",
           "optional_module"]

#: the status of an element, by its int8 code: computed, masked (never passed to ``func``),
#: then the failure kinds of :attr:`Failures.kinds`; a kind not listed here gets the next code
STATUS = ("computed", "masked", "exception", "crash", "timeout")
#: the failure kinds in the order of their categories in :func:`failures_to_pandas`
FAILURE_KINDS = STATUS[2:]


@dataclass(frozen=True, eq=False)
class Labels:
    """The labels of an xarray input that a result carries: dims, coordinates, name and attrs.

    Plain data: it pickles, and compares by identity (its arrays would make ``==`` ambiguous).

    Attributes
    ----------
    dims : tuple
        One dimension name per axis of the result's shape.
    coords : dict
        ``name -> (dims, ndarray)``, as xarray's ``coords`` takes them; each coordinate's dims
        are a subset of ``dims``.
    name : hashable or None
        The name of the input (the result's DataArray is named after it).
    attrs : dict
        The input's attributes.

    Examples
    --------
    >>> import xarray as xr
    >>> temperature = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"), coords={"x": [10, 20, 30]},
    ...                            name="t", attrs={"units": "K"})
    >>> labels = Labels.of(temperature)
    >>> labels.dims, labels.coords["x"], labels.name, labels.attrs
    (('y', 'x'), (('x',), array([10, 20, 30])), 't', {'units': 'K'})
    """

    dims: tuple[Hashable, ...]
    coords: dict[Hashable, tuple[tuple[Hashable, ...], np.ndarray]] = field(default_factory=dict)
    name: Hashable | None = None
    attrs: dict[Hashable, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, array: xarray.DataArray) -> Labels:
        """The labels of an ``xarray.DataArray``: its dims, name, attrs, and the coordinates
        whose dims are among its dims (their values read into numpy)."""
        dims = tuple(array.dims)
        coords = {name: (tuple(coord.dims), np.asarray(coord.values)) for name, coord in array.coords.items()
                  if set(coord.dims) <= set(dims)}
        return cls(dims, coords, array.name, dict(array.attrs))


def status_codes(result: Result) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each element's status code (int8, the result's shape) and the status names by code.

    Elements neither computed nor failed were masked.

    Examples
    --------
    >>> from chunkmap.result import Failures, Result
    >>> result = Result((2, 2), (np.array([0]), np.array([0])), np.array([1.5]),
    ...                 Failures((2, 2), [1, 3], ["ValueError", "Crash"], ["bad", "died"], ["exception", "crash"]))
    >>> codes, names = status_codes(result)
    >>> codes.tolist(), [names[code] for code in codes.ravel()]
    ([[0, 2], [1, 3]], ['computed', 'exception', 'masked', 'crash'])
    """
    failures = result.failures
    names = STATUS + tuple(sorted(set(failures.counts_by_kind()) - set(STATUS)))
    code_of = {name: code for code, name in enumerate(names)}
    codes = np.full(result.shape, code_of["masked"], dtype=np.int8)
    flat = codes.reshape(-1)
    flat[result.flat_index] = code_of["computed"]
    flat[failures.flat_index] = np.fromiter((code_of[kind] for kind in failures.kinds.tolist()), np.int8,
                                            len(failures))
    return codes, names


def to_xarray(result: Result, *, status: bool = False) -> xarray.DataArray | xarray.Dataset:
    """The result as an ``xarray.DataArray``, or a ``Dataset`` with one variable per output.

    Parameters
    ----------
    result : Result
        What :func:`chunkmap.run` returned.
    status : bool, optional
        Add a ``"status"`` coordinate (int8 codes of :data:`STATUS`, with CF ``flag_values``
        and ``flag_meanings``): which elements were computed, masked or failed and how.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Dense arrays of the input shape, NaN where nothing was computed (int and bool values
        promoted to float64, as :meth:`Result.to_dense` does). Dims,
        coords and attrs are those of the xarray input (``result.labels``), else xarray's
        ``dim_0, dim_1, ...``; a single output is named after the input, else ``"values"``.
        The run's :class:`~chunkmap.Stats` are attrs prefixed ``chunkmap_``.

    Raises
    ------
    MissingDependencyError
        xarray is not installed.

    Examples
    --------
    >>> from chunkmap.result import Failures, Result
    >>> result = Result((2, 2), (np.array([0, 1]), np.array([0, 1])), np.array([1, 4]),
    ...                 Failures((2, 2), [1], ["ValueError"], ["bad"]))
    >>> to_xarray(result, status=True)  # doctest: +NORMALIZE_WHITESPACE
    <xarray.DataArray 'values' (dim_0: 2, dim_1: 2)> Size: 32B
    array([[ 1., nan],
           [nan,  4.]])
    Coordinates:
        status   (dim_0, dim_1) int8 4B 0 2 1 0
    Dimensions without coordinates: dim_0, dim_1
    """
    xr = optional_module("xarray", "to_xarray()", "chunkmap[xarray]")
    labels = getattr(result, "labels", None)
    dims = _dims(result, labels)
    coords = dict(labels.coords) if labels is not None else {}
    if status:
        codes, names = status_codes(result)
        coords["status"] = (dims, codes, {"long_name": "chunkmap status of the element",
                                          "flag_values": np.arange(len(names), dtype=np.int8),
                                          "flag_meanings": " ".join(names)})
    attrs = {**(labels.attrs if labels is not None else {}), **_stats_attrs(result)}
    dense = result.to_dense()
    if result.outputs is None:
        name = labels.name if labels is not None and labels.name is not None else "values"
        return xr.DataArray(dense, dims=dims, coords=coords, name=name, attrs=attrs)
    _check_names(result.outputs, (*dims, *coords))
    return xr.Dataset({name: (dims, array) for name, array in zip(result.outputs, dense)}, coords=coords,
                      attrs=attrs)


def to_pandas(result: Result) -> pandas.DataFrame:
    """The computed elements as a ``pandas.DataFrame``, one row each in C order.

    One int64 column per axis (its position; named after the dims of ``result.labels``, else
    ``dim_0, dim_1, ...``), then one column per output (``"values"`` for a single one).

    Examples
    --------
    >>> from chunkmap.result import Failures, Result
    >>> result = Result((2, 2), (np.array([0, 1]), np.array([0, 1])), np.array([1.5, 4.0]),
    ...                 Failures((2, 2), [], [], []))
    >>> to_pandas(result)
       dim_0  dim_1  values
    0      0      0     1.5
    1      1      1     4.0
    """
    pd = optional_module("pandas", "to_pandas()", "chunkmap[pandas]")
    dims = _dims(result, getattr(result, "labels", None))
    outputs = {"values": result.values} if result.outputs is None else result.values
    _check_names(outputs, dims)
    columns = {**_position_columns(dims, result.coords), **outputs}
    return pd.DataFrame(columns)


def failures_to_pandas(failures: Failures, dims: tuple[Hashable, ...] | None = None) -> pandas.DataFrame:
    """The failed elements as a ``pandas.DataFrame``, one row each in C order.

    One int64 column per axis (named after ``dims``, else ``dim_0, dim_1, ...``), then
    ``kind`` (a categorical of :data:`FAILURE_KINDS` and any other kind), one column per input
    that ``func`` was called with (``in0, in1, ...``, each of its input's dtype; none when the
    failures were made without their inputs), ``type`` (a categorical of the exception class
    names) and ``message`` (str).

    Examples
    --------
    >>> from chunkmap.result import Failures
    >>> failures = Failures((3, 4), [1, 6], ["KeyError", "ValueError"], ["'k'", "a"], ["exception", "crash"],
    ...                     inputs=[np.array([0.5, 1.5]), np.array([True, False])])
    >>> failures_to_pandas(failures)
       dim_0  dim_1       kind  in0    in1        type message
    0      0      1  exception  0.5   True    KeyError     'k'
    1      1      2      crash  1.5  False  ValueError       a
    """
    pd = optional_module("pandas", "failures.to_pandas()", "chunkmap[pandas]")
    dims = tuple(dims) if dims is not None else _default_dims(len(failures.shape))
    kinds = failures.kinds
    categories = FAILURE_KINDS + tuple(sorted(set(kinds.tolist()) - set(FAILURE_KINDS)))
    names = [name if name not in dims else f"input_{name}" for name in input_names(len(failures.inputs))]
    inputs = dict(zip(names, failures.inputs))  # a dimension named in0 keeps its name
    return pd.DataFrame({
        **_position_columns(dims, failures.coords),
        "kind": pd.Categorical(kinds, categories=categories),
        **inputs,
        "type": pd.Categorical.from_codes(failures.records.type_codes, categories=failures.records.type_names)
        if len(failures) else pd.Categorical([]),
        "message": failures.messages,
    })


def optional_module(module: str, needed_for: str, extra: str) -> Any:
    """The optional library ``module``, or the error naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{needed_for} needs {module}, which cannot be imported ({exc}); install it with "
            f"`pip install {extra}`", name=module) from exc


def _default_dims(ndim: int) -> tuple[str, ...]:
    """xarray's names of unnamed dimensions."""
    return tuple(f"dim_{axis}" for axis in range(ndim))


def _dims(result: Result, labels: Labels | None) -> tuple[Hashable, ...]:
    """The result's dimension names: its labels', checked against its shape, or the defaults."""
    if labels is None:
        return _default_dims(len(result.shape))
    if len(labels.dims) != len(result.shape):
        raise ShapeError(f"the result's labels have dims {labels.dims} but its shape is {result.shape}; "
                         f"expected one dim per axis")
    return tuple(labels.dims)


def _check_names(outputs: Iterable[Hashable], taken: tuple[Hashable, ...]) -> None:
    """Refuse outputs named like a dimension or a coordinate (one would hide the other)."""
    clashes = [name for name in outputs if name in taken]
    if clashes:
        raise OptionError(f"outputs named {clashes} are also the names of dimensions or coordinates "
                          f"{list(taken)}; expected distinct names: rename the outputs (outputs=)")


def _position_columns(dims: tuple[Hashable, ...], coords: tuple[np.ndarray, ...]) -> dict[Hashable, np.ndarray]:
    """One int64 column of positions per axis."""
    return {dim: np.asarray(axis, np.int64) for dim, axis in zip(dims, coords)}


def _stats_attrs(result: Result) -> dict[str, Any]:
    """The run's statistics as attrs (``chunkmap_elements``, ...), none without stats."""
    if result.stats is None:
        return {}
    return {f"chunkmap_{key}": value for key, value in dataclasses.asdict(result.stats).items()}
