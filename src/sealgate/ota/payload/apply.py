"""Applying a signed payload to partition images, in the order and with the checks of update_engine.

payload_consumer/delta_performer.cc applies a payload as it streams in: it checks the request's payload
properties (sizes, metadata hash), verifies the metadata signature before it trusts a single manifest field,
validates the manifest, then performs each operation in order, checking the operation's data against its
data_sha256_hash before using it (the hashes are covered by the metadata signature) and, for SOURCE_* operations,
the source blocks against src_sha256_hash; when all data has arrived it verifies the payload signature, and
afterwards (filesystem_verifier_action.cc) each new partition against new_partition_info. We do the same, into
`<partition>.img` files in a staging directory the caller provides and swaps into place only on success; any
failure is a PayloadError naming the partition and the operation, and leaves the caller's real images untouched.

REPLACE, REPLACE_BZ, REPLACE_XZ, REPLACE_ZSTD, ZERO, DISCARD (written as zeros) and SOURCE_COPY are applied;
the diff operations (BSDIFF, PUFFDIFF, ZUCCHINI, ...) and verity hash tree or FEC generation are refused with an
error that says so. Memory is bounded by the largest operation (2 MiB in payloads from delta_generator or ours).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealgate.apk.certificate import Certificate
from sealgate.errors import PayloadError, UsageError
from sealgate.filecopy import pwrite_all
from sealgate.ota.payload import schema
from sealgate.ota.payload.codec import DISCARD, REPLACE, REPLACE_BZ, REPLACE_XZ, REPLACE_ZSTD, SOURCE_COPY, ZERO, decode
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.payload.reader import open_range
from sealgate.ota.payload.verify import check_payload_signature, describe_key, read_signed_metadata

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

BLOCK_SIZE = 4096
#: Far above delta_generator's 2 MiB operations; keeps a hostile manifest from making us allocate gigabytes.
MAX_OPERATION_SIZE = 256 * 1024 * 1024
_REPLACES = frozenset({REPLACE, REPLACE_BZ, REPLACE_XZ, REPLACE_ZSTD})
_STEP = 8 * 1024 * 1024


@dataclass
class ApplyResult:
    """What was written: one image per partition of the payload, each checked against new_partition_info."""

    target_dir: Path
    images: dict[str, Path] = field(default_factory=dict)
    is_delta: bool = False
    signer: dict[str, str | None] | None = None
    max_timestamp: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "target_dir": os.fspath(self.target_dir),
            "type": "delta" if self.is_delta else "full",
            "partitions": {name: os.fspath(path) for name, path in self.images.items()},
            "signer": self.signer,
            "max_timestamp": self.max_timestamp,
        }


def apply_payload(
    payload_path: Path,
    target_dir: Path,
    *,
    public_keys: Sequence[PublicKeyTypes | Certificate],
    source_dir: Path | None = None,
    offset: int = 0,
    size: int | None = None,
    properties: PayloadProperties | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyResult:
    """Apply the payload in bytes [offset, offset+size) of `payload_path`, writing `<partition>.img` to target_dir.

    `public_keys` may also hold certificates (their keys are trusted, and the result names the one that signed).
    `progress(done, total)` is called with data bytes consumed, for a progress bar.
    """
    if not public_keys:
        raise UsageError("applying a payload needs at least one trusted public key")
    target_dir = Path(target_dir)
    if not target_dir.is_dir():
        raise UsageError(f"the staging directory {target_dir} does not exist")
    with open_range(Path(payload_path), offset, size) as (fd, size):
        signed = read_signed_metadata(fd, offset, size, public_keys, properties)
        manifest = signed.manifest
        is_delta = any(partition.HasField("old_partition_info") for partition in manifest.partitions)
        if is_delta and source_dir is None:
            raise UsageError("this is a delta payload: give the directory of the source images")
        data_start = offset + signed.header.data_offset
        result = _Applier(fd, data_start, int(manifest.signatures_offset), progress, signed.hashers())
        images: dict[str, Path] = {}
        for partition in manifest.partitions:
            images[partition.partition_name] = result.apply_partition(partition, target_dir, source_dir)
        data_end = result.data_start + result.data_size
        check_payload_signature(
            fd, signed, data_end, result.payload_hasher, result.file_hasher, public_keys, properties
        )
    return ApplyResult(target_dir, images, is_delta, describe_key(signed.signer), int(manifest.max_timestamp))


class _Applier:
    """Performs operations, hashing the data area as it is consumed in order (the checked manifest ensures the
    operations' data are contiguous and cover it exactly)."""

    def __init__(
        self,
        fd: int,
        data_start: int,
        data_size: int,
        progress: Callable[[int, int], None] | None,
        hashers: tuple[hashlib._Hash, hashlib._Hash],
    ):
        self.fd = fd
        self.data_start = data_start
        self.data_size = data_size
        self.progress = progress
        self.consumed = 0
        #: The payload signature's hash and FILE_HASH's, already fed what comes before the data.
        self.payload_hasher, self.file_hasher = hashers

    def apply_partition(self, partition: Any, target_dir: Path, source_dir: Path | None) -> Path:
        name = partition.partition_name
        for unsupported in ("hash_tree_extent", "fec_extent"):
            if partition.HasField(unsupported):
                raise PayloadError(f"partition {name!r}: {unsupported} (verity generation) is not supported")
        path = target_dir / f"{name}.img"
        source_fd = -1
        if partition.HasField("old_partition_info"):
            assert source_dir is not None
            source_fd = _open_source(Path(source_dir) / f"{name}.img", int(partition.old_partition_info.size), name)
        try:
            out = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if source_fd >= 0:
                os.close(source_fd)
            raise PayloadError(f"cannot create {path}: {exc.strerror}") from None
        try:
            try:
                os.ftruncate(out, int(partition.new_partition_info.size))
            except OSError as exc:  # EFBIG, ENOSPC: the image cannot exist here
                raise PayloadError(f"partition {name!r}: cannot make a {partition.new_partition_info.size}-byte "
                                   f"image: {exc.strerror}") from None  # fmt: skip
            for index, operation in enumerate(partition.operations):
                self._perform(operation, out, source_fd, f"partition {name!r} operation {index}")
            if _fd_sha256(out, int(partition.new_partition_info.size)) != bytes(partition.new_partition_info.hash):
                raise PayloadError(f"partition {name!r}: the new image does not match new_partition_info's hash")
            os.fsync(out)
        finally:
            os.close(out)
            if source_fd >= 0:
                os.close(source_fd)
        return path

    def _perform(self, operation: Any, out: int, source_fd: int, where: str) -> None:
        kind = operation.type
        dst_size = _extents_size(operation.dst_extents)
        if kind in _REPLACES:
            if dst_size > MAX_OPERATION_SIZE or operation.data_length > MAX_OPERATION_SIZE:
                raise PayloadError(f"{where}: the operation is larger than this applier allows")
            data = self._data(operation, where)
            _write_extents(out, operation.dst_extents, decode(kind, data, dst_size, where))
        elif kind in (ZERO, DISCARD):
            for extent in operation.dst_extents:
                _write_zeros(out, int(extent.start_block) * BLOCK_SIZE, int(extent.num_blocks) * BLOCK_SIZE)
        elif kind == SOURCE_COPY:
            if dst_size > MAX_OPERATION_SIZE:
                raise PayloadError(f"{where}: the operation is larger than this applier allows")
            data = b"".join(_read_extents(source_fd, operation.src_extents, where))
            if operation.src_sha256_hash and hashlib.sha256(data).digest() != bytes(operation.src_sha256_hash):
                raise PayloadError(f"{where}: the source blocks do not match src_sha256_hash (wrong source build?)")
            _write_extents(out, operation.dst_extents, data)
        else:
            raise PayloadError(
                f"{where}: {schema.OPERATION_NAMES.get(kind, str(kind))} operations are not supported by this applier"
            )

    def _data(self, operation: Any, where: str) -> bytes:
        length = int(operation.data_length)
        data = _pread(self.fd, length, self.data_start + int(operation.data_offset))
        self.payload_hasher.update(data)
        self.file_hasher.update(data)
        self.consumed += length
        if hashlib.sha256(data).digest() != bytes(operation.data_sha256_hash):
            raise PayloadError(f"{where}: the operation's data does not match its data_sha256_hash")
        if self.progress is not None:
            self.progress(self.consumed, self.data_size)
        return data


def _open_source(path: Path, size: int, name: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PayloadError(f"partition {name!r}: cannot read the source image {path}: {exc.strerror}") from None
    actual = os.fstat(fd).st_size
    if actual != size:
        os.close(fd)
        raise PayloadError(f"partition {name!r}: the source image is {actual} bytes, old_partition_info says {size}")
    return fd


def _extents_size(extents: Any) -> int:
    return sum(int(extent.num_blocks) for extent in extents) * BLOCK_SIZE


def _read_extents(fd: int, extents: Any, where: str) -> list[bytes]:
    pieces = []
    for extent in extents:
        length = int(extent.num_blocks) * BLOCK_SIZE
        piece = os.pread(fd, length, int(extent.start_block) * BLOCK_SIZE)
        if len(piece) != length:
            raise PayloadError(f"{where}: the source image ends inside a source extent")
        pieces.append(piece)
    return pieces


def _write_extents(fd: int, extents: Any, data: bytes) -> None:
    view = memoryview(data)
    for extent in extents:
        length = int(extent.num_blocks) * BLOCK_SIZE
        pwrite_all(fd, view[:length], int(extent.start_block) * BLOCK_SIZE)
        view = view[length:]


def _write_zeros(fd: int, offset: int, length: int) -> None:
    zeros = bytes(min(length, _STEP))
    while length:
        step = min(length, len(zeros))
        pwrite_all(fd, memoryview(zeros)[:step], offset)
        offset += step
        length -= step


def _fd_sha256(fd: int, size: int) -> bytes:
    hasher = hashlib.sha256()
    for position in range(0, size, _STEP):
        hasher.update(os.pread(fd, min(_STEP, size - position), position))
    return hasher.digest()


def _pread(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise PayloadError(f"the payload ends early: wanted {length} bytes at offset {offset}")
    return data
