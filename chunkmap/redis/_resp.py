"""Commands as RESP, written straight from the arrays' memory.

A command is packed into a few buffers: the small pieces joined, each array's data left where
it is (``b"".join`` of them is the command; a ``sendmsg`` of them sends the arrays without a
copy on the client side). A batch of commands is joined into buffers of about :data:`FLUSH`
bytes: one copy, bounded, so large batches do not page-fault a huge fresh allocation, and one
``sendall`` each.

Why not redis-py's packers (measured, see ``benchmarks/README.md``): with hiredis,
``hiredis.pack_command`` turns memoryviews into ``bytes`` (one copy) and copies them again into
the command; the pure-Python packer sends every argument over 6000 bytes with its own
``sendall`` (one system call each, expensive on virtual machines).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["FLUSH", "Packer", "pack_parts", "encode_arg", "command_name"]

FLUSH = 1 << 20
"""Bytes of a batch joined into one buffer (one ``sendall``)."""

_CRLF = b"\r\n"


def encode_arg(a: Any) -> bytes:
    """One command argument as bytes.

    Examples
    --------
    >>> encode_arg("SET"), encode_arg(b"k"), encode_arg(5), encode_arg(0.5)
    (b'SET', b'k', b'5', b'0.5')
    """
    if type(a) is bytes:
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return repr(a).encode()
    if isinstance(a, (bytearray, memoryview)):
        return bytes(a)
    raise TypeError(f"cannot send {type(a).__name__} to Redis; expected bytes, str, int or float")


def command_name(args: Sequence[Any]) -> str:
    """The name of the command ``args`` (``"?"`` for none), for messages."""
    return encode_arg(args[0]).decode(errors="replace") if args else "?"


def pack_parts(args: Sequence[Any]) -> tuple[list[Any], int]:
    """Return one command as RESP in a few buffers and its length in bytes.

    A ``(header, data)`` or ``(header, data, trailer)`` argument (from
    :func:`chunkmap.codec.encode_parts`) is one bulk string whose ``data`` array is left in place.

    Examples
    --------
    >>> pack_parts(("GET", b"k"))
    ([b'*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n'], 20)
    """
    pieces = [b"*%d\r\n" % len(args)]
    out: list[Any] = []
    total = 0
    for a in args:
        if type(a) is tuple:  # (header, data[, trailer]) from chunkmap.codec.encode_parts
            header, data, *trailer = a
            n = data.nbytes
            tail = trailer[0] if trailer else b""
            pieces.append(b"$%d\r\n%b" % (len(header) + n + len(tail), header))
            small = b"".join(pieces)
            out.append(small)
            out.append(data)
            total += len(small) + n
            pieces = [tail, _CRLF] if tail else [_CRLF]
        else:
            b = a if type(a) is bytes else encode_arg(a)
            pieces.append(b"$%d\r\n%b\r\n" % (len(b), b))
    small = b"".join(pieces)
    out.append(small)
    return out, total + len(small)


class Packer:
    """Accumulate commands as RESP into buffers of about :data:`FLUSH` bytes."""

    __slots__ = ("parts", "size", "out")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.size = 0
        self.out: list[bytes] = []

    def command(self, args: Sequence[Any]) -> None:
        """Add one command (encoded by :func:`pack_parts`)."""
        pieces, size = pack_parts(args)
        self.parts.extend(pieces)
        self.size += size
        if self.size >= FLUSH:
            self.flush()

    def flush(self) -> None:
        """Join what was added since the last buffer into one."""
        if self.parts:
            self.out.append(b"".join(self.parts))
            self.parts = []
            self.size = 0

    def buffers(self) -> list[bytes]:
        """The commands added so far, as buffers to send in order."""
        self.flush()
        return self.out
