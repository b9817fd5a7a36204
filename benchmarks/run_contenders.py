"""The contenders of ``benchmarks.bench_run``: chunkmap.run and the peers a user would otherwise pick.

Every contender computes the seed's job on two float64 (n, n) arrays ``a1``, ``a2``::

    slowlib.slow_computation(a2[x, y], a1[x, y])  for every element with not a1[x, y] <= -1e10,
    skipping elements whose call raises slowlib.InternalError

and returns ``xs, ys, values`` (int64) of the computed elements in C order.

A contender is a class with ``open()`` (start a pool; part of the first, "cold", timed call),
``__call__(a1, a2)`` and ``close()``. ``persistent = True`` marks contenders that keep a pool
between calls the way a user naturally would (a ``multiprocessing.Pool`` or mpire ``WorkerPool``
held in a variable, joblib's reused loky executor, a ``distributed`` client); the harness times a
second, "warm", call for every parallel contender anyway.

Every peer runs the same per-chunk loop, :func:`chunk_loop` (the best plain Python loop: values
turned into Python floats with ``tolist()`` once, ``zip``, local names, a flat index list,
try/except), so the peers differ only in how they split, ship and gather the work. Chunks: 16 (8
per worker), a fair middle of the 4..16 per worker a competent user would pick.
"""

from __future__ import annotations

import os

import numpy as np

from chunkmap.stub import slowlib

#: masked means ``a1 <= THRESHOLD`` (the seed's sentinel test)
THRESHOLD = -1.0e10
#: marks "no value" in the dense outputs of the seed's recipe and of dask.array
SENTINEL = np.iinfo(np.int64).min
WORKERS = 2
CHUNKS_PER_WORKER = 8


def set_cost(cost_ns: int) -> None:
    """Set the stub's per-call busy-wait in this process and for processes started later."""
    os.environ["SLOWLIB_COST_NS"] = str(int(cost_ns))
    slowlib.set_cost_ns(int(cost_ns))


def unravel(flat: np.ndarray, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat C-order indices of an (n, ncols) array -> xs, ys (int64)."""
    flat = np.asarray(flat, dtype=np.int64)
    return flat // ncols, flat % ncols


def chunk_loop(v1: np.ndarray, v2: np.ndarray, offset: int = 0, func=None):
    """The best plain serial loop, over one flat range: -> (flat indices, values), both int64.

    ``v1``, ``v2`` are 1-D ranges of the flattened ``a1``, ``a2``; ``offset`` is the flat index
    of their first element. Masked elements are dropped with numpy first; failures are
    recorded by position and dropped afterwards, so a success costs one ``append``.
    """
    f = slowlib.slow_computation if func is None else func
    err = slowlib.InternalError
    keep = np.flatnonzero(~(v1 <= THRESHOLD))
    vals: list = []
    put = vals.append
    bad: list = []
    for b, a in zip(v2[keep].tolist(), v1[keep].tolist()):
        try:
            put(f(b, a))
        except err:
            bad.append(len(vals))
            put(0)
    values = np.array(vals, dtype=np.int64)
    if bad:
        ok = np.ones(len(values), dtype=bool)
        ok[bad] = False
        return keep[ok].astype(np.int64) + offset, values[ok]
    return keep.astype(np.int64) + offset, values


def chunk_ranges(total: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous (start, stop) ranges covering ``range(total)``."""
    bounds = np.linspace(0, total, max(1, min(chunks, total)) + 1).astype(np.int64)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def gather(parts, ncols: int):
    """[(flat indices, values), ...] in order -> xs, ys, values."""
    if parts:
        idx = np.concatenate([p[0] for p in parts])
        values = np.concatenate([p[1] for p in parts])
    else:
        idx = values = np.zeros(0, dtype=np.int64)
    xs, ys = unravel(idx, ncols)
    return xs, ys, values.astype(np.int64, copy=False)


class Contender:
    name = ""
    kind = "peer"  # "serial", "peer" or "chunkmap"
    persistent = False
    parallel = True

    def __init__(self, cost_ns: int, workers: int = WORKERS) -> None:
        self.cost_ns = cost_ns
        self.workers = workers
        self.chunks = workers * CHUNKS_PER_WORKER

    def open(self) -> None:
        pass

    def __call__(self, a1: np.ndarray, a2: np.ndarray):
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- serial ---------------------------------------------------------------------------------------


class SeedSerial(Contender):
    """The seed's build_indexes: np.ndenumerate, np.asscalar (now ``.item()``), three lists."""

    name = "serial (seed loop)"
    kind = "serial"
    parallel = False

    def __call__(self, a1, a2):
        f = slowlib.slow_computation
        xs, ys, idxs = [], [], []
        for (x, y), value in np.ndenumerate(a1):
            if not (value <= -1.0e10):
                try:
                    index = f(a2[x, y].item(), a1[x, y].item())
                except slowlib.InternalError:
                    pass
                else:
                    xs.append(x)
                    ys.append(y)
                    idxs.append(index)
        return (np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64),
                np.asarray(idxs, dtype=np.int64))


class BestSerial(Contender):
    """:func:`chunk_loop` over the whole flattened arrays: the baseline of the ratios."""

    name = "serial (best loop)"
    kind = "serial"
    parallel = False

    def __call__(self, a1, a2):
        return gather([chunk_loop(a1.ravel(), a2.ravel())], a1.shape[1])


class MapSerial(Contender):
    """Serial without a Python-level loop: ``list.extend(map(f, ...))``, resumed after each failure.

    ``map`` stays usable after its function raised (the failing element is consumed), and
    ``list.extend`` keeps what it appended before the exception, so the loop body runs in C.
    Reported for information; the ratio baseline is the plain loop.
    """

    name = "serial (map+extend)"
    kind = "serial"
    parallel = False

    def __call__(self, a1, a2):
        v1, v2 = a1.ravel(), a2.ravel()
        keep = np.flatnonzero(~(v1 <= THRESHOLD))
        out: list = []
        extend = out.extend
        bad: list = []
        it = map(slowlib.slow_computation, v2[keep].tolist(), v1[keep].tolist())
        while True:
            try:
                extend(it)
            except slowlib.InternalError:
                bad.append(len(out) + len(bad))
                continue
            break
        ok = np.ones(len(keep), dtype=bool)
        ok[bad] = False
        return gather([(keep[ok].astype(np.int64), np.array(out, dtype=np.int64))], a1.shape[1])


# -- the seed's dask.bag recipe -------------------------------------------------------------------


def seed_slow_function(pair):
    """The seed's slow_function on one stacked (a1, a2) pair; SENTINEL when masked or failed."""
    value = pair[0].item()
    if value <= -1.0e10:
        return SENTINEL
    try:
        return slowlib.slow_computation(pair[1].item(), value)
    except slowlib.InternalError:
        return SENTINEL


def seed_apply_on_chunk(chunk):
    return np.apply_along_axis(seed_slow_function, 0, chunk)


class SeedDaskBag(Contender):
    """The seed's answer: np.stack of the flat arrays, np.array_split into 250 chunks,
    db.from_sequence(chunks).map(apply_on_chunk).compute() on dask.bag's default scheduler
    (processes), np.concatenate. The mask test and the InternalError skip are done per element
    inside slow_function (returning a sentinel), then the sentinels are filtered out."""

    name = "dask.bag (seed recipe)"

    def __call__(self, a1, a2):
        import dask.bag as db

        a = np.stack((a1.flat, a2.flat))
        chunks = np.array_split(a, 250, axis=1)
        res = np.concatenate(db.from_sequence(chunks).map(seed_apply_on_chunk).compute())
        idx = np.flatnonzero(res != SENTINEL)
        xs, ys = unravel(idx, a1.shape[1])
        return xs, ys, res[idx].astype(np.int64)


# -- joblib -----------------------------------------------------------------------------------


def _range_task(a1, a2, lo, hi):
    return chunk_loop(a1.ravel()[lo:hi], a2.ravel()[lo:hi], lo)


class Joblib(Contender):
    """joblib.Parallel(n_jobs=2) (loky) over 16 flat ranges; the whole arrays are arguments, so
    joblib memmaps them (its default for arrays > 1 MB) and workers read their range in place.
    loky's executor is reused by the next Parallel call."""

    name = "joblib (loky)"
    persistent = True

    def __call__(self, a1, a2):
        from joblib import Parallel, delayed

        n = a1.size
        parts = Parallel(n_jobs=self.workers)(
            delayed(_range_task)(a1, a2, lo, hi) for lo, hi in chunk_ranges(n, self.chunks)
        )
        return gather(parts, a1.shape[1])


# -- multiprocessing.Pool -------------------------------------------------------------------------

_ARRAYS: dict = {}


def _pool_init(a1, a2, cost_ns):
    _ARRAYS["a1"], _ARRAYS["a2"] = a1, a2
    set_cost(cost_ns)


def _pool_task(bounds):
    lo, hi = bounds
    return chunk_loop(_ARRAYS["a1"].ravel()[lo:hi], _ARRAYS["a2"].ravel()[lo:hi], lo)


class MpPool(Contender):
    """multiprocessing.Pool(2) started with fork; the arrays reach the workers through the
    initializer (inherited by fork, copy-on-write: no copy), tasks are 16 (start, stop) ranges
    through imap. A second call reuses the pool when the arrays are the same objects."""

    name = "multiprocessing.Pool"
    persistent = True

    def open(self):
        self.pool = None

    def __call__(self, a1, a2):
        import multiprocessing as mp

        if self.pool is None or _ARRAYS.get("ids") != (id(a1), id(a2)):
            if self.pool is not None:
                self.pool.close()
                self.pool.join()
            _ARRAYS["ids"] = (id(a1), id(a2))
            self.pool = mp.get_context("fork").Pool(
                self.workers, initializer=_pool_init, initargs=(a1, a2, self.cost_ns)
            )
        parts = list(self.pool.imap(_pool_task, chunk_ranges(a1.size, self.chunks)))
        return gather(parts, a1.shape[1])

    def close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# -- mpire ----------------------------------------------------------------------------------------


def _mpire_init(*shared):
    slowlib.set_cost_ns(int(os.environ.get("SLOWLIB_COST_NS", "0")))


def _mpire_task(shared, lo, hi):
    a1, a2 = shared
    return chunk_loop(a1.ravel()[lo:hi], a2.ravel()[lo:hi], lo)


class Mpire(Contender):
    """mpire.WorkerPool(n_jobs=2, start_method="fork", shared_objects=(a1, a2), keep_alive=True):
    copy-on-write arrays, map over 16 ranges (chunk_size=1)."""

    name = "mpire"
    persistent = True

    def open(self):
        self.pool = None

    def __call__(self, a1, a2):
        from mpire import WorkerPool

        if self.pool is None or self.ids != (id(a1), id(a2)):
            if self.pool is not None:
                self.pool.terminate()
            self.ids = (id(a1), id(a2))
            self.pool = WorkerPool(
                n_jobs=self.workers, start_method="fork", shared_objects=(a1, a2), keep_alive=True
            )
        parts = self.pool.map(
            _mpire_task, chunk_ranges(a1.size, self.chunks), chunk_size=1,
            worker_init=_mpire_init, progress_bar=False,
        )
        return gather(parts, a1.shape[1])

    def close(self):
        if self.pool is not None:
            self.pool.terminate()


# -- dask.array -----------------------------------------------------------------------------------


def _block_task(b1, b2):
    idx, values = chunk_loop(b1.ravel(), b2.ravel())
    out = np.full(b1.shape, SENTINEL, dtype=np.int64)
    out.ravel()[idx] = values
    return out


class DaskArray(Contender):
    """da.from_array(a, chunks=(rows, n)) -> 16 row blocks, map_blocks to a dense int64 array with
    a sentinel, compute() on the processes scheduler (the default threads scheduler cannot run a
    GIL-holding function in parallel; a competent user switches), then filter the sentinels."""

    name = "dask.array map_blocks"

    def __call__(self, a1, a2):
        import dask.array as da

        rows = max(1, -(-a1.shape[0] // self.chunks))
        d1 = da.from_array(a1, chunks=(rows, a1.shape[1]))
        d2 = da.from_array(a2, chunks=(rows, a1.shape[1]))
        res = da.map_blocks(_block_task, d1, d2, dtype=np.int64).compute(
            scheduler="processes", num_workers=self.workers
        )
        idx = np.flatnonzero(res.ravel() != SENTINEL)
        xs, ys = unravel(idx, a1.shape[1])
        return xs, ys, res.ravel()[idx]


# -- distributed ----------------------------------------------------------------------------------


class Distributed(Contender):
    """distributed.LocalCluster(2 worker processes x 1 thread); the arrays are scattered once per
    call (broadcast), tasks are 16 ranges through client.map referring to the scattered arrays.
    The cluster is kept for the next call."""

    name = "distributed LocalCluster"
    persistent = True

    def open(self):
        self.client = None

    def __call__(self, a1, a2):
        if self.client is None:
            from distributed import Client, LocalCluster

            self.cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=50,
            )
            self.client = Client(self.cluster, set_as_default=False)
            self.client.run(set_cost, self.cost_ns)
        f1, f2 = self.client.scatter([a1, a2], broadcast=True)
        ranges = chunk_ranges(a1.size, self.chunks)
        futures = self.client.map(
            _range_task, [f1] * len(ranges), [f2] * len(ranges),
            [lo for lo, _ in ranges], [hi for _, hi in ranges], pure=False,
        )
        parts = self.client.gather(futures)
        del futures, f1, f2
        return gather(parts, a1.shape[1])

    def close(self):
        if self.client is not None:
            self.client.close()
            self.cluster.close()


# -- chunkmap -------------------------------------------------------------------------------------


class Chunkmap(Contender):
    """chunkmap.run with its defaults (scheduler="processes", chunks="auto")."""

    name = "chunkmap"
    kind = "chunkmap"
    scheduler = None
    func_name = "slow_computation"

    def function(self):
        """What chunkmap.run calls, and the exception it skips."""
        return getattr(slowlib, self.func_name), slowlib.InternalError

    def __call__(self, a1, a2):
        import chunkmap

        func, skip = self.function()
        kw = {} if self.scheduler is None else {"scheduler": self.scheduler}
        xs, ys, values = chunkmap.run(func, a2, a1, mask=a1 <= -1e10, skip=skip, **kw)
        return xs, ys, values


class ChunkmapThreadsNogil(Chunkmap):
    """chunkmap.run(scheduler="threads") with slowlib.slow_computation_nogil (releases the GIL)."""

    name = "chunkmap threads+nogil"
    scheduler = "threads"
    func_name = "slow_computation_nogil"


class ChunkmapCfunc(Chunkmap):
    """chunkmap.run(scheduler="threads") over ``chunkmap.stub.compute()``: the same C function,
    ``slowlib_compute``, as a :func:`chunkmap.cfunc` called from C with no Python per element,
    the GIL released once per chunk (what no peer offers)."""

    name = "chunkmap cfunc"
    scheduler = "threads"

    def function(self):
        from chunkmap import stub
        from chunkmap.errors import CError

        return stub.compute(), CError


CONTENDERS = {
    c.name: c
    for c in (
        SeedSerial, BestSerial, MapSerial, SeedDaskBag, Joblib, MpPool, Mpire, DaskArray,
        Distributed, Chunkmap, ChunkmapThreadsNogil, ChunkmapCfunc,
    )
}
#: short names accepted by ``--only``
ALIASES = {
    "seed": SeedSerial.name, "serial": BestSerial.name, "map": MapSerial.name,
    "bag": SeedDaskBag.name, "joblib": Joblib.name, "pool": MpPool.name, "mpire": Mpire.name,
    "array": DaskArray.name, "distributed": Distributed.name, "chunkmap": Chunkmap.name,
    "threads": ChunkmapThreadsNogil.name, "cfunc": ChunkmapCfunc.name,
}


def reference(a1: np.ndarray, a2: np.ndarray):
    """The stub's documented rule, vectorised: what every contender must return, exactly.

    ``k = floor(1000*a2) + floor(1000*a1)``; InternalError when ``k % 37 == 0`` or an input has
    ``not abs(1000*x) < 2**62``; masked where ``a1 <= -1e10``.
    """
    v1, v2 = a1.ravel(), a2.ravel()
    keep = ~(v1 <= THRESHOLD)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = keep & (np.abs(1000.0 * v1) < 2.0**62) & (np.abs(1000.0 * v2) < 2.0**62)
        idx = np.flatnonzero(ok)
        k = np.floor(1000.0 * v2[idx]).astype(np.int64) + np.floor(1000.0 * v1[idx]).astype(np.int64)
    good = k % 37 != 0
    xs, ys = unravel(idx[good], a1.shape[1])
    return xs, ys, k[good]
