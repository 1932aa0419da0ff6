"""The fs-verity style Merkle tree that APK Signature Scheme v4 and the v2/v3 "verity" digests are built on.

The tree is the one AOSP's VerityTreeBuilder and the kernel build (4096-byte blocks, SHA-256):

* leaf level: SHA-256(salt || block) for every 4096-byte block of the input, the last block zero-padded;
* each level is zero-padded to a whole number of 4096-byte pages, and while a level is larger than one page, the
  next level up hashes its pages the same way;
* root hash: SHA-256(salt || the single top page).

The salt is prepended as given (apksig does not pad it to the hash block size as fs-verity's kernel interface does);
the v2/v3 content digest uses eight zero bytes, v4 uses the salt its .idsig names (empty in every file apksig
writes). Leaf hashing is nearly all of the work, so it reads 1-MiB ranges on a thread pool: `os.pread` and
`hashlib` both release the GIL, so the ranges hash on every core.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sealgate.errors import FormatError, UsageError

BLOCK_SIZE = 4096
DIGEST_SIZE = 32
#: Salt of the VERITY_CHUNKED_SHA256 content digest of APK Signature Schemes v2 and v3.
CONTENT_DIGEST_SALT = bytes(8)
#: Bytes each worker reads and hashes at once; a multiple of BLOCK_SIZE.
RANGE_SIZE = 1 << 20

#: One piece of a virtual stream: bytes held in memory, or (fd, offset, length) read with os.pread.
Segment = bytes | tuple[int, int, int]
Reader = Callable[[int, int], bytes]


def merkle_root(read: Reader, size: int, salt: bytes = b"") -> bytes:
    """Root hash of the tree over `size` bytes that `read(offset, length)` returns."""
    return merkle_tree(read, size, salt)[0]


def merkle_tree(read: Reader, size: int, salt: bytes = b"") -> tuple[bytes, bytes]:
    """Root hash and the whole tree, levels from the top down (the layout a v4 .idsig carries).

    An empty input has the all-zero root and an empty tree, as in fs-verity.
    """
    if size < 0:
        raise UsageError(f"cannot hash a negative size ({size})")
    if size == 0:
        return bytes(DIGEST_SIZE), b""
    level = _pad_to_block(_leaf_level(read, size, salt))
    levels = [level]
    while len(level) > BLOCK_SIZE:
        level = _pad_to_block(_hash_pages(level, salt))
        levels.append(level)
    root = _salted(salt, level)
    return root, b"".join(reversed(levels))


def verity_content_digest(segments: Sequence[Segment]) -> bytes:
    """The VERITY_CHUNKED_SHA256 content digest of v2/v3 signatures: root hash || uint64 LE total length.

    The segments are hashed as one stream, in order. For an APK they are the bytes before the APK Signing Block
    (4096-aligned, which the caller checks), the central directory, and the End of Central Directory with its
    central-directory offset rewritten to where the signing block starts.
    """
    read, size = segment_reader(segments)
    return merkle_root(read, size, CONTENT_DIGEST_SALT) + struct.pack("<Q", size)


def segment_reader(segments: Sequence[Segment]) -> tuple[Reader, int]:
    """A thread-safe `read(offset, length)` over the concatenation of `segments`, and its total size."""
    starts: list[int] = []
    pieces: list[Segment] = []
    total = 0
    for segment in segments:
        length = _segment_length(segment)
        if length:
            starts.append(total)
            pieces.append(segment)
            total += length

    def read(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > total:
            raise UsageError(f"read of {length} bytes at {offset} outside a stream of {total} bytes")
        out = bytearray()
        index = max(bisect.bisect_right(starts, offset) - 1, 0)
        while length > 0:
            piece_offset = offset - starts[index]
            take = min(length, _segment_length(pieces[index]) - piece_offset)
            out += _read_segment(pieces[index], piece_offset, take)
            offset += take
            length -= take
            index += 1
        return bytes(out)

    return read, total


def fd_reader(fd: int) -> Reader:
    """`read(offset, length)` over an open file, refusing short reads (a file that shrank under us)."""

    def read(offset: int, length: int) -> bytes:
        return _pread_exact(fd, offset, length)

    return read


# -- internals ----------------------------------------------------------------------------------------------------


def _leaf_level(read: Reader, size: int, salt: bytes) -> bytes:
    ranges = [(offset, min(RANGE_SIZE, size - offset)) for offset in range(0, size, RANGE_SIZE)]
    if len(ranges) == 1:
        return _hash_range(read, *ranges[0], salt)
    workers = min(len(ranges), os.cpu_count() or 1, 32)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verity") as pool:
        return b"".join(pool.map(lambda r: _hash_range(read, r[0], r[1], salt), ranges))


def _hash_range(read: Reader, offset: int, length: int, salt: bytes) -> bytes:
    data = read(offset, length)
    if len(data) != length:
        raise FormatError(f"short read while hashing: wanted {length} bytes at offset {offset}, got {len(data)}")
    tail = length % BLOCK_SIZE
    if tail:
        data += bytes(BLOCK_SIZE - tail)
    return _hash_pages(data, salt)


def _hash_pages(data: bytes, salt: bytes) -> bytes:
    """Concatenated salted digests of each whole BLOCK_SIZE page of `data` (a multiple of BLOCK_SIZE long)."""
    view = memoryview(data)
    out = bytearray()
    if salt:
        base = hashlib.sha256(salt)
        for start in range(0, len(view), BLOCK_SIZE):
            digest = base.copy()
            digest.update(view[start : start + BLOCK_SIZE])
            out += digest.digest()
    else:
        sha256 = hashlib.sha256
        for start in range(0, len(view), BLOCK_SIZE):
            out += sha256(view[start : start + BLOCK_SIZE]).digest()
    return bytes(out)


def _pad_to_block(data: bytes) -> bytes:
    tail = len(data) % BLOCK_SIZE
    return data + bytes(BLOCK_SIZE - tail) if tail else data


def _salted(salt: bytes, data: bytes) -> bytes:
    digest = hashlib.sha256(salt)
    digest.update(data)
    return digest.digest()


def _segment_length(segment: Segment) -> int:
    if isinstance(segment, bytes):
        return len(segment)
    if not (isinstance(segment, tuple) and len(segment) == 3 and all(isinstance(v, int) for v in segment)):
        raise UsageError(f"a segment is bytes or (fd, offset, length), not {type(segment).__name__}")
    _, offset, length = segment
    if offset < 0 or length < 0:
        raise UsageError(f"segment ({offset}, {length}) has a negative offset or length")
    return length


def _read_segment(segment: Segment, offset: int, length: int) -> bytes:
    if isinstance(segment, bytes):
        return segment[offset : offset + length]
    fd, base, _ = segment
    return _pread_exact(fd, base + offset, length)


def _pread_exact(fd: int, offset: int, length: int) -> bytes:
    try:
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise FormatError(f"cannot read {length} bytes at offset {offset}: {exc.strerror}") from exc
    if len(data) != length:
        raise FormatError(f"file ends early: wanted {length} bytes at offset {offset}, got {len(data)}")
    return data
