"""One cursor for the little-endian, length-prefixed structures of APK signatures.

The v2/v3/v3.1 signer blocks, proof-of-rotation lineages and v4 .idsig files all nest uint32-length-prefixed
fields. Every read here is bounds-checked against the enclosing field, and an overrun raises the exception class the
caller names (with what was being read), so each format reports damage in its own terms: an internal exception
that v2/v3 turn into apksig's MALFORMED issues, LineageFormatError, IdsigFormatError. Sub-fields share the parent's
bytes (no copies), which matters for the signed-data slices that signatures are checked over.
"""

from __future__ import annotations

import struct

_U32 = struct.Struct("<I")


class Truncated(Exception):
    """A field runs past the end of the structure that holds it (the default error class)."""


class BinaryReader:
    """A little-endian cursor over data[start:end]."""

    __slots__ = ("data", "end", "error", "pos", "what")

    def __init__(
        self,
        data: bytes,
        what: str = "block",
        error: type[Exception] = Truncated,
        start: int = 0,
        end: int | None = None,
    ):
        self.data = data
        self.what = what
        self.error = error
        self.pos = start
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def u8(self, field: str = "byte") -> int:
        self._need(1, field)
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self, field: str = "integer") -> int:
        self._need(4, field)
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def i32(self, field: str = "integer") -> int:
        value = self.u32(field)
        return value - (1 << 32) if value >= 1 << 31 else value

    def slice(self, field: str = "field", limit: int | None = None) -> BinaryReader:
        """The next uint32-length-prefixed field, as a reader over the same bytes."""
        length = self.u32(f"{field} length")
        if length >= 1 << 31 or (limit is not None and length > limit):
            bound = f"; at most {limit} are allowed" if limit is not None else ""
            raise self.error(f"{self.what}: {field} has an impossible length {length}{bound}")
        self._need(length, field)
        start = self.pos
        self.pos += length
        return BinaryReader(self.data, f"{field} of {self.what}", self.error, start, start + length)

    def length_prefixed(self, field: str = "field", limit: int | None = None) -> bytes:
        """The next uint32-length-prefixed field's bytes."""
        return self.slice(field, limit).rest()

    def rest(self) -> bytes:
        value = bytes(self.data[self.pos : self.end])
        self.pos = self.end
        return value

    def _need(self, count: int, field: str) -> None:
        if count > self.remaining:
            raise self.error(f"{self.what} ends inside its {field} ({count} bytes needed, {self.remaining} left)")
