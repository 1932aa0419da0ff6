"""The dm-verity hash tree of a partition image, as avbtool add_hashtree_footer computes and lays it out.

dm-verity format version 1 (what AVB's hashtree descriptors use): every data block is hashed as H(salt || block);
the digests, each padded with zeros to the next power of two (20-byte SHA-1 digests take 32 bytes), fill hash
blocks of the same size, the last one zero-padded; the hash blocks are hashed the same way, level after level,
until one block remains; the root digest is H(salt || that block). The tree is stored with the top level first and
the level over the data last (avbtool.py calc_hash_level_offsets and generate_hash_tree; the kernel's dm-verity
reads the same layout, and `veritysetup format --format=1 --no-superblock` writes it).

Streaming: the data is read a few blocks at a time and each level is written straight into the output file, and
the level above is computed by reading that level back, so memory stays bounded whatever the image's size.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from sealgate.errors import UsageError

_CHUNK_BLOCKS = 256


def digest_size(hash_algorithm: str) -> int:
    try:
        return hashlib.new(hash_algorithm).digest_size
    except ValueError as exc:
        raise UsageError(f"unknown hash algorithm {hash_algorithm!r} for a hash tree") from exc


def level_sizes(image_size: int, block_size: int, hash_algorithm: str) -> list[int]:
    """Sizes of the tree's levels, from the level over the data up to the single top block."""
    if image_size % block_size:
        raise UsageError(f"hash tree data size {image_size} is not a multiple of the block size {block_size}")
    if image_size <= block_size:
        raise UsageError(
            f"a hash tree needs more than one {block_size}-byte block of data; this image has {image_size} bytes"
        )
    stride = _stride(hash_algorithm)
    sizes: list[int] = []
    size = image_size
    while size > block_size:
        size = _round_up(size // block_size * stride, block_size)
        sizes.append(size)
    return sizes


def tree_size(image_size: int, block_size: int, hash_algorithm: str) -> int:
    return sum(level_sizes(image_size, block_size, hash_algorithm))


def write_hash_tree(
    data: BinaryIO,
    image_size: int,
    out: BinaryIO,
    tree_offset: int,
    *,
    block_size: int,
    hash_algorithm: str,
    salt: bytes,
) -> bytes:
    """Hash `image_size` bytes of `data` (from its current start, a multiple of `block_size`) into a tree written to
    `out` at `tree_offset`; returns the root digest. `data` and `out` may be the same file."""
    sizes = level_sizes(image_size, block_size, hash_algorithm)
    # Offsets inside the tree: the top level first, the level over the data last.
    offsets = [tree_offset + sum(sizes[index + 1 :]) for index in range(len(sizes))]
    source_offset = data.tell()
    source = data
    source_size = image_size
    for level, size in enumerate(sizes):
        written = _hash_level(source, source_offset, source_size, out, offsets[level], block_size, hash_algorithm,
                              salt)  # fmt: skip
        if written != size:
            raise AssertionError(f"hash tree level {level} is {written} bytes, expected {size}")
        source, source_offset, source_size = out, offsets[level], size
    out.seek(offsets[-1])
    top = out.read(block_size)
    return hashlib.new(hash_algorithm, salt + top).digest()


def _hash_level(
    source: BinaryIO,
    offset: int,
    size: int,
    out: BinaryIO,
    out_offset: int,
    block_size: int,
    hash_algorithm: str,
    salt: bytes,
) -> int:
    stride = _stride(hash_algorithm)
    pad = bytes(stride - digest_size(hash_algorithm))
    salted = hashlib.new(hash_algorithm, salt)
    written = 0
    position = 0
    while position < size:
        source.seek(offset + position)
        chunk = source.read(min(_CHUNK_BLOCKS * block_size, size - position))
        if len(chunk) % block_size or not chunk:
            raise UsageError("hash tree input ended early or is not block-aligned")
        digests = bytearray()
        for start in range(0, len(chunk), block_size):
            hasher = salted.copy()
            hasher.update(chunk[start : start + block_size])
            digests += hasher.digest() + pad
        out.seek(out_offset + written)
        out.write(digests)
        written += len(digests)
        position += len(chunk)
    remainder = _round_up(written, block_size) - written
    if remainder:
        out.seek(out_offset + written)
        out.write(bytes(remainder))
        written += remainder
    return written


def _stride(hash_algorithm: str) -> int:
    size = digest_size(hash_algorithm)
    return 1 << (size - 1).bit_length()


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple
