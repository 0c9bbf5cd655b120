"""Small helpers for reading untrusted bytes: a bounds-checked cursor, QUIC varints, JSON.

Rules: no I/O; every short read raises `TruncatedError`; no other exception type escapes.
"""

from __future__ import annotations

import json
from typing import Any

from privproc.errors import DecodeError, TooLargeError, TruncatedError, UsageError

VARINT_MAX = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    """The variable-length integer encoding of RFC 9000 §16, in its shortest form."""
    if value < 0:
        raise UsageError("varints are non-negative")
    if value < 1 << 6:
        return bytes((value,))
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise UsageError("varint too large")


class Reader:
    """A cursor over a bytes-like object. Slices are views until `bytes()` is asked for."""

    __slots__ = ("_data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self._data)

    def read(self, n: int, what: str = "field") -> bytes:
        if n < 0 or n > self.remaining:
            raise TruncatedError(f"{what}: needs {n} bytes, {self.remaining} left")
        out = bytes(self._data[self.pos : self.pos + n])
        self.pos += n
        return out

    def uint(self, size: int, what: str = "integer") -> int:
        return int.from_bytes(self.read(size, what), "big")

    def varint(self, what: str = "varint") -> int:
        if self.at_end():
            raise TruncatedError(f"{what}: input ended")
        first = self._data[self.pos]
        length = 1 << (first >> 6)
        raw = self.read(length, what)
        return int.from_bytes(raw, "big") & ((1 << (8 * length - 2)) - 1)

    def varbytes(self, what: str, limit: int) -> bytes:
        """A varint length followed by that many bytes, with the length bounded by `limit`."""
        n = self.varint(what)
        if n > limit:
            raise DecodeError(f"{what}: length {n} exceeds the bound of {limit}")
        return self.read(n, what)

    def rest(self) -> memoryview:
        out = self._data[self.pos :]
        self.pos = len(self._data)
        return out


MAX_JSON = 1 << 20


def load_json(data: bytes | str, what: str, max_size: int = MAX_JSON) -> Any:
    """Untrusted JSON: its value, or `DecodeError` (`TooLargeError` past `max_size`). Nesting
    too deep (RecursionError), bad UTF-8 and numbers too long to convert are all DecodeError."""
    if len(data) > max_size:
        raise TooLargeError(f"{what} is larger than {max_size} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise DecodeError(f"{what} is not valid JSON") from None
