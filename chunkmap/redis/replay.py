"""ReplayBuffer: a bounded stream of steps (small dicts of arrays) in Redis.

One Redis stream per run. Producers (any number of processes or machines) ``XADD`` steps, each
a dict of named arrays or scalars (state, action, reward) stored as :mod:`chunkmap.codec`
payloads, trimmed to about ``maxlen`` entries (``MAXLEN ~``, which trims whole radix-tree nodes
and so costs nothing per append). Consumers read what is new since their last read (``XREAD``)
or the latest N steps (``XREVRANGE``) as a dataset: one stacked array per field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .. import codec
from ..errors import StoreError
from ._client import Client, escape_glob, redact

__all__ = ["ReplayBuffer", "Reader"]

Step = dict[str, np.ndarray]


def _id(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class ReplayBuffer:
    """A bounded, append-only log of steps for one run, shared through Redis.

    Parameters
    ----------
    url : str
        Where the server is (``redis://``, ``rediss://``, ``unix://``; password and db in it).
    run : str, default "default"
        Name of the run; each run is one Redis stream, deleted in one call by :meth:`delete`.
    maxlen : int, default 100_000
        Keep about this many of the latest steps (a few more, as Redis trims whole nodes).
    exact : bool, default False
        Trim to exactly ``maxlen`` (``MAXLEN =``), at a cost on every append.
    namespace : str, default "chunkmap:replay:"
        Prefix of the stream's key.
    checksum : bool, default True
        Store a checksum (xxh3) of each field's data and check it on read, so that a corrupted data byte
        raises :class:`~chunkmap.errors.CodecError` instead of coming back as a wrong value
        (what is verified with and without it: see :class:`RedisArrayStore`).
    **connection_kwargs
        Passed on to :meth:`redis.ConnectionPool.from_url` (``socket_timeout``, default
        :data:`~chunkmap.redis.DEFAULT_TIMEOUT`...).

    Attributes
    ----------
    key : str
        The Redis key of the run's stream, ``namespace + run`` (``"chunkmap:replay:exp1"``),
        for ``redis-cli`` (``XLEN``, ``XINFO STREAM``) or other clients.

    Examples
    --------
    >>> buf = ReplayBuffer("redis://127.0.0.1:6390/0", run="exp1", maxlen=1000)
    >>> buf
    ReplayBuffer('redis://127.0.0.1:6390/0', run='exp1', maxlen=1000)
    >>> buf.key
    'chunkmap:replay:exp1'
    >>> import numpy as np
    >>> buf.append(state=np.zeros((80, 80), np.uint16), action=3, reward=0.5)  # doctest: +SKIP
    '1718000000000-0'
    >>> buf.latest(1)["state"].shape  # doctest: +SKIP
    (1, 80, 80)
    """

    def __init__(
        self,
        url: str,
        run: str = "default",
        *,
        maxlen: int = 100_000,
        exact: bool = False,
        namespace: str = "chunkmap:replay:",
        checksum: bool = True,
        **connection_kwargs: Any,
    ) -> None:
        if int(maxlen) < 1:
            raise ValueError(f"maxlen must be a positive number of steps, received {maxlen!r}")
        self.url = url
        self.run = run
        self.maxlen = int(maxlen)
        self.exact = exact
        self.namespace = namespace
        self.checksum = checksum
        self.connection_kwargs = connection_kwargs
        self.key = namespace + run
        self._key = self.key.encode()
        self._client = Client(url, **connection_kwargs)
        self._trim = ("MAXLEN", "=" if exact else "~", self.maxlen)

    def __reduce__(self):
        kwargs = dict(
            self.connection_kwargs, run=self.run, maxlen=self.maxlen, exact=self.exact,
            namespace=self.namespace, checksum=self.checksum,
        )
        return (_rebuild, (type(self), self.url, kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r}, run={self.run!r}, maxlen={self.maxlen})"

    def close(self) -> None:
        """Close this thread's connection; the buffer reconnects if used again."""
        self._client.close()

    # -- writing -------------------------------------------------------------------------------

    def _fields(self, step: Any, fields: Mapping[str, Any]) -> list[Any]:
        if step is not None:
            if isinstance(step, Mapping):
                if fields:
                    raise TypeError("give the step as one mapping or as keyword arguments, not both")
                fields = step
            else:
                fields = {"array": step}
        if not fields:
            raise ValueError("a step needs at least one field, e.g. append(state=..., reward=...)")
        out: list[Any] = []
        for name, value in fields.items():
            if not isinstance(name, str):
                raise TypeError(f"step field names are str, received {name!r}")
            out.append(name)
            out.append(codec.encode_parts(value, checksum=self.checksum))
        return out

    def _xadd(self, step: Any, fields: Mapping[str, Any]) -> tuple[Any, ...]:
        return ("XADD", self._key, *self._trim, "*", *self._fields(step, fields))

    def append(self, step: Any = None, /, **fields: Any) -> str:
        """Append one step and return its stream id.

        Parameters
        ----------
        step : mapping of str to array_like, or array_like, optional
            The step's fields; a bare array is stored under the field ``"array"``.
        **fields : array_like
            The fields as keyword arguments instead (``state=s, action=a, reward=r``).
            Scalars are stored as 0-d arrays.
        """
        return _id(self._ok(self._client.call(*self._xadd(step, fields))))

    def extend(self, steps: Iterable[Any]) -> list[str]:
        """Append many steps in one round trip; return their ids."""
        cmds = [self._xadd(s, {}) for s in steps]
        if not cmds:
            return []
        replies = self._client.execute(cmds, retry=False)  # XADD is not idempotent
        return [_id(self._ok(r, cmds[0])) for r in replies]

    def _ok(self, reply: Any, args: tuple[Any, ...] = ("XADD",)) -> Any:
        if isinstance(reply, Exception):
            raise self._client.response_error(args, reply)
        return reply

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._client.call("XLEN", self._key))

    def last_id(self) -> str:
        """The id of the newest step, or ``"0-0"`` when the stream is empty."""
        entries = self._client.call("XREVRANGE", self._key, "+", "-", "COUNT", 1)
        return _id(entries[0][0]) if entries else "0-0"

    def _decode(self, entries: list[Any]) -> list[tuple[str, Step]]:
        out = []
        for eid, flat in entries:
            step = {}
            for i in range(0, len(flat), 2):
                name = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
                try:
                    step[name] = codec.decode(flat[i + 1])
                except Exception as exc:
                    raise type(exc)(f"step {_id(eid)} field {name!r} of run {self.run!r}: {exc}") from None
            out.append((_id(eid), step))
        return out

    def read(self, after: str = "0-0", *, count: int | None = None, block: float | None = None) -> list[tuple[str, Step]]:
        """Return the steps after the id ``after`` (oldest first) as ``(id, {field: array})``.

        Parameters
        ----------
        after : str
            Return steps newer than this id (``"0-0"``: from the oldest kept).
        count : int, optional
            At most this many steps.
        block : float, optional
            Wait up to this many seconds for a step when there is none yet.
        """
        args: list[Any] = ["XREAD"]
        if count is not None:
            args += ["COUNT", int(count)]
        if block is not None:
            args += ["BLOCK", max(1, int(block * 1000))]
        args += ["STREAMS", self._key, after]
        if block is None:
            reply = self._client.call(*args)
        else:
            (reply,) = self._client.execute((args,), timeout=block + 10.0)
            self._ok(reply, ("XREAD",))
        if not reply:
            return []
        # RESP3 answers a map {key: entries}, RESP2 a list [[key, entries]]
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return self._decode(entries)

    def range(self, start: str = "-", end: str = "+", *, count: int | None = None) -> list[tuple[str, Step]]:
        """Return the steps with ids in ``[start, end]``, oldest first (``XRANGE``)."""
        args: list[Any] = ["XRANGE", self._key, start, end]
        if count is not None:
            args += ["COUNT", int(count)]
        return self._decode(self._client.call(*args))

    def latest(self, n: int) -> dict[str, np.ndarray]:
        """Return the latest ``n`` steps (fewer if the run has fewer) as a dataset.

        Returns
        -------
        dict of str to numpy.ndarray
            One array per field, stacked along a new first axis, oldest step first; and
            ``"_id"``, the steps' stream ids as Redis writes them (``"1718000000000-0"``), a
            one-dimensional array of ``str`` (dtype object), so that it is indexed like the
            fields and its elements are plain ``str`` to pass to :meth:`read` or :meth:`range`.
        """
        entries = self._client.call("XREVRANGE", self._key, "+", "-", "COUNT", int(n))
        return stack(self._decode(entries[::-1]), run=self.run)

    def reader(self, start: str = "$") -> Reader:
        """Return a :class:`Reader` that yields the steps appended after ``start``.

        ``"$"`` (default) means after the newest step now; ``"0-0"`` from the oldest kept.
        """
        return Reader(self, self.last_id() if start == "$" else start)

    # -- deleting ------------------------------------------------------------------------------

    def delete(self) -> bool:
        """Delete the whole run (its stream) in one call; return whether it existed."""
        return bool(self._client.call("UNLINK", self._key))

    def runs(self) -> list[str]:
        """The names of the runs stored under this buffer's namespace (SCAN)."""
        ns = self.namespace.encode()
        return sorted(k[len(ns):].decode() for k in self._client.scan(escape_glob(ns) + b"*"))


class Reader:
    """A consumer's cursor in a :class:`ReplayBuffer`: each :meth:`poll` returns what is new.

    Several readers may follow the same buffer independently; a reader pickles with its
    position.
    """

    def __init__(self, buffer: ReplayBuffer, last_id: str = "0-0") -> None:
        self.buffer = buffer
        self.last_id = last_id

    def poll(self, count: int | None = None, block: float | None = None) -> dict[str, np.ndarray]:
        """Return the steps appended since the last poll as a dataset (see ``latest``).

        Returns an empty dict when there is nothing new (after waiting up to ``block`` s).
        """
        steps = self.buffer.read(self.last_id, count=count, block=block)
        if not steps:
            return {}
        self.last_id = steps[-1][0]
        return stack(steps, run=self.buffer.run)


def stack(steps: list[tuple[str, Step]], *, run: str = "") -> dict[str, np.ndarray]:
    """Stack ``(id, {field: array})`` steps into ``{field: array}`` with a leading step axis.

    Examples
    --------
    >>> import numpy as np
    >>> d = stack([("1-0", {"r": np.array(1.0)}), ("2-0", {"r": np.array(2.0)})])
    >>> d["r"], d["_id"]
    (array([1., 2.]), array(['1-0', '2-0'], dtype=object))
    """
    if not steps:
        return {}
    names = list(steps[0][1])
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            out[name] = np.stack([s[name] for _, s in steps])
        except (KeyError, ValueError) as exc:
            shapes = sorted({(tuple(s[name].shape), s[name].dtype.str) if name in s else None for _, s in steps}, key=str)
            raise StoreError(
                f"cannot stack field {name!r} of run {run!r} into a dataset: its steps hold "
                f"{shapes} (expected one shape and dtype in every step): {exc}"
            ) from None
    ids = np.empty(len(steps), dtype=object)
    ids[:] = [i for i, _ in steps]
    out["_id"] = ids
    return out


def _rebuild(cls: type, url: str, kwargs: dict[str, Any]) -> ReplayBuffer:
    return cls(url, **kwargs)
