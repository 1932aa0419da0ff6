"""Adding AVB footers to partition images, as avbtool add_hash_footer and add_hashtree_footer do.

A hash footer (boot.img and other images the bootloader loads whole): the image, zero-padded to the block size,
then a vbmeta image holding one hash descriptor (H(salt || image)), padded to the block size, then zeros, and the
64-byte AVB footer in the last bytes of the partition. A hashtree footer (system.img and other dm-verity
partitions): the image padded to the block size, its dm-verity hash tree (`sealgate.avb.hashtree`), the vbmeta image
with one hashtree descriptor, and the footer at the end. FEC is not generated (fec_num_roots 0, as avbtool
--do_not_generate_fec); dm-verity works without it. Layouts: avbtool.py add_hash_footer / add_hashtree_footer.

Both work in place on an unsigned build output (as avbtool does); the image grows to the partition size. Images
are hashed in chunks, never read whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sealgate.avb.descriptors import Descriptor, HashDescriptor, HashtreeDescriptor, PropertyDescriptor
from sealgate.avb.footer import FOOTER_SIZE, AvbFooter, read_footer
from sealgate.avb.hashtree import digest_size, tree_size, write_hash_tree
from sealgate.avb.vbmeta import build_vbmeta
from sealgate.errors import AvbFormatError, UsageError

if TYPE_CHECKING:
    from sealgate.signing import Signer

BLOCK_SIZE = 4096
_CHUNK = 1024 * 1024


def add_hash_footer(
    image: Path,
    partition_name: str,
    partition_size: int,
    signer: Signer | None,
    *,
    algorithm: str | None = None,
    rollback_index: int = 0,
    hash_algorithm: str = "sha256",
    salt: bytes | None = None,
    properties: Mapping[str, bytes] | None = None,
    block_size: int = BLOCK_SIZE,
) -> AvbFooter:
    """Append a signed vbmeta with a hash descriptor of `image` and an AVB footer, growing it to `partition_size`."""
    original_size = _unfooted_size(image, partition_size, block_size)
    salt = os.urandom(digest_size(hash_algorithm)) if salt is None else salt
    hasher = hashlib.new(hash_algorithm, salt)
    with image.open("rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    descriptor = HashDescriptor(original_size, hash_algorithm, partition_name, salt, hasher.digest())
    vbmeta = _vbmeta(descriptor, properties, signer, algorithm, rollback_index)
    vbmeta_offset = _round_up(original_size, block_size)
    return _finish(image, original_size, vbmeta_offset, vbmeta, partition_size, block_size)


def add_hashtree_footer(
    image: Path,
    partition_name: str,
    partition_size: int,
    signer: Signer | None,
    *,
    algorithm: str | None = None,
    rollback_index: int = 0,
    hash_algorithm: str = "sha256",
    salt: bytes | None = None,
    properties: Mapping[str, bytes] | None = None,
    block_size: int = BLOCK_SIZE,
    flags: int = 0,
) -> AvbFooter:
    """Append `image`'s dm-verity hash tree, a signed vbmeta with its hashtree descriptor and an AVB footer."""
    original_size = _unfooted_size(image, partition_size, block_size)
    salt = os.urandom(digest_size(hash_algorithm)) if salt is None else salt
    data_size = _round_up(original_size, block_size)
    size_of_tree = tree_size(data_size, block_size, hash_algorithm)
    if data_size + size_of_tree + block_size > partition_size:
        raise UsageError(f"{image}: {original_size} bytes and a {size_of_tree}-byte hash tree do not fit a "
                         f"{partition_size}-byte partition")  # fmt: skip
    try:
        with image.open("r+b") as file:
            file.truncate(data_size)
            file.seek(0)
            root = write_hash_tree(file, data_size, file, data_size, block_size=block_size,
                                   hash_algorithm=hash_algorithm, salt=salt)  # fmt: skip
        descriptor = HashtreeDescriptor(
            1, data_size, data_size, size_of_tree, block_size, block_size, 0, 0, 0, hash_algorithm, partition_name,
            salt, root, flags,
        )  # fmt: skip
        vbmeta = _vbmeta(descriptor, properties, signer, algorithm, rollback_index)
        return _finish(image, original_size, data_size + size_of_tree, vbmeta, partition_size, block_size)
    except BaseException:
        with image.open("r+b") as file:
            file.truncate(original_size)
        raise


def _vbmeta(
    descriptor: Descriptor,
    properties: Mapping[str, bytes] | None,
    signer: Signer | None,
    algorithm: str | None,
    rollback_index: int,
) -> bytes:
    descriptors: list[Descriptor] = [PropertyDescriptor(key, value) for key, value in (properties or {}).items()]
    descriptors.append(descriptor)
    return build_vbmeta(descriptors, signer, algorithm=algorithm, rollback_index=rollback_index)


def _finish(
    image: Path, original_size: int, vbmeta_offset: int, vbmeta: bytes, partition_size: int, block_size: int
) -> AvbFooter:
    padded = _round_up(len(vbmeta), block_size)
    if vbmeta_offset + padded + block_size > partition_size:
        raise UsageError(f"{image}: the image and its {len(vbmeta)}-byte vbmeta do not fit a {partition_size}-byte "
                         "partition (the last block holds the footer)")  # fmt: skip
    footer = AvbFooter(original_size, vbmeta_offset, len(vbmeta))
    with image.open("r+b") as file:
        file.truncate(vbmeta_offset)
        file.seek(vbmeta_offset)
        file.write(vbmeta + bytes(padded - len(vbmeta)))
        file.truncate(partition_size)
        file.seek(partition_size - FOOTER_SIZE)
        file.write(footer.encode())
        file.flush()
        os.fsync(file.fileno())
    return footer


def _unfooted_size(image: Path, partition_size: int, block_size: int) -> int:
    if partition_size % block_size:
        raise UsageError(f"partition size {partition_size} is not a multiple of the block size {block_size}")
    try:
        footer = read_footer(image)
    except AvbFormatError:
        footer = None
    if footer is not None:
        raise UsageError(f"{image} already has an AVB footer; re-sign it (avb-sign) instead of adding another")
    size = image.stat().st_size
    if size >= partition_size:
        raise UsageError(f"{image} is {size} bytes, too big for a {partition_size}-byte partition with a footer")
    return size


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple
