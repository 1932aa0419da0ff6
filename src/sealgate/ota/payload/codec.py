"""The data of REPLACE-family operations: choosing the smallest encoding of a chunk, and decoding it with bounds.

delta_generator's full payloads (payload_generator/full_update_generator.cc, delta_diff_utils.cc's
GenerateBestFullOperation) cut each partition into 2 MiB chunks and keep, per chunk, the smallest of the raw
REPLACE and the compressed forms allowed, or ZERO when the chunk is all zeros. XZ data must use CRC32 or no check:
the device decompresses with xz-embedded, which knows no other (update_metadata.proto, REPLACE_XZ). Chunks that a
fast zstd pass cannot shrink at all are stored as REPLACE without trying the slow compressors. Decoding is
bounded by the size of the operation's destination, so a hostile blob cannot inflate past it.
"""

from __future__ import annotations

import bz2
import io
import lzma
from dataclasses import dataclass

import zstandard

from sealgate.errors import PayloadError, UsageError
from sealgate.ota.payload.schema import OPERATION_TYPES

REPLACE = OPERATION_TYPES["REPLACE"]
REPLACE_BZ = OPERATION_TYPES["REPLACE_BZ"]
REPLACE_XZ = OPERATION_TYPES["REPLACE_XZ"]
REPLACE_ZSTD = OPERATION_TYPES["REPLACE_ZSTD"]
ZERO = OPERATION_TYPES["ZERO"]
DISCARD = OPERATION_TYPES["DISCARD"]
SOURCE_COPY = OPERATION_TYPES["SOURCE_COPY"]

COMPRESSIONS = ("xz", "zstd", "none")
XZ_PRESET = 6
ZSTD_LEVEL = 9  # zstd -19 buys 3% at a twentieth of the speed
_XZ_CHECKS = (lzma.CHECK_CRC32, lzma.CHECK_NONE)


@dataclass(frozen=True)
class EncodedChunk:
    type: int
    data: bytes  # empty for ZERO


def check_compression(compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")


def encode_chunk(chunk: bytes, compression: str, zero: bool = True) -> EncodedChunk:
    """The smallest encoding of `chunk` (whole blocks); run on worker threads (lzma and zstd release the GIL).

    With `zero`, an all-zero chunk is a ZERO operation (no data).
    """
    if zero and chunk.count(0) == len(chunk):
        return EncodedChunk(ZERO, b"")
    best = EncodedChunk(REPLACE, chunk)
    if compression == "none" or not _compressible(chunk):
        return best
    if compression == "xz":
        candidate = EncodedChunk(REPLACE_XZ, lzma.compress(chunk, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                                                           preset=XZ_PRESET))  # fmt: skip
    elif compression == "zstd":
        candidate = EncodedChunk(REPLACE_ZSTD, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(chunk))
    else:
        raise UsageError(f"unknown compression {compression!r}")
    return candidate if len(candidate.data) < len(best.data) else best


def _compressible(chunk: bytes) -> bool:
    """False for data that even a fast zstd pass cannot shrink (encrypted or already compressed): the slow
    compressors would not beat REPLACE on it either, and skipping them makes such chunks almost free."""
    return len(zstandard.ZstdCompressor(level=1).compress(chunk)) < len(chunk)


def decode(operation_type: int, data: bytes, expected_size: int, where: str) -> bytes:
    """The bytes a REPLACE-family operation writes; exactly `expected_size` of them or PayloadError."""
    if operation_type == REPLACE:
        out = data
    elif operation_type == REPLACE_XZ:
        out = _unxz(data, expected_size, where)
    elif operation_type == REPLACE_ZSTD:
        out = _unzstd(data, expected_size, where)
    elif operation_type == REPLACE_BZ:
        out = _unbz2(data, expected_size, where)
    else:
        raise AssertionError(operation_type)
    if len(out) != expected_size:
        raise PayloadError(f"{where}: the data decodes to {len(out)} bytes, but its extents hold {expected_size}")
    return out


def _unxz(data: bytes, limit: int, where: str) -> bytes:
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = decompressor.decompress(data, max_length=limit + 1)
    except lzma.LZMAError as exc:
        raise PayloadError(f"{where}: the XZ data is corrupt ({exc})") from None
    if decompressor.check not in _XZ_CHECKS:
        raise PayloadError(f"{where}: the XZ data uses an integrity check xz-embedded does not support")
    if not decompressor.eof or decompressor.unused_data or len(out) > limit:
        raise PayloadError(f"{where}: the XZ data does not decode to exactly its {limit}-byte extents")
    return out


def _unzstd(data: bytes, limit: int, where: str) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
            out = reader.read(limit + 1)
            rest = reader.read(1)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"{where}: the zstd data is corrupt ({exc})") from None
    if len(out) > limit or rest:
        raise PayloadError(f"{where}: the zstd data decodes past its {limit}-byte extents")
    return bytes(out)


def _unbz2(data: bytes, limit: int, where: str) -> bytes:
    decompressor = bz2.BZ2Decompressor()
    try:
        out = decompressor.decompress(data, max_length=limit + 1)
    except (OSError, ValueError) as exc:
        raise PayloadError(f"{where}: the bzip2 data is corrupt ({exc})") from None
    if not decompressor.eof or decompressor.unused_data or len(out) > limit:
        raise PayloadError(f"{where}: the bzip2 data does not decode to exactly its {limit}-byte extents")
    return out
