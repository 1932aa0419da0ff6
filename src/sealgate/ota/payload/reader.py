"""Reading payload.bin: header, manifest, signatures, with every size and offset checked before it is used.

The layout is update_engine's (see `header`). The manifest is parsed with the real protobuf runtime over our
declarative schema, and then checked as update_engine's DeltaPerformer checks it while streaming
(payload_consumer/delta_performer.cc: ValidateManifest, ParseManifestPartitions, and the "operations consumed
exactly the right amount of data" check): 4096-byte blocks, minor version 0 for a full payload, each operation's
data immediately after the previous one's, inside the data area, with a data hash; destination extents inside the
new partition, source extents inside the old one; the payload signature exactly at the end of the data and the
file ending with it. A payload that fails any of these is a `PayloadError` naming the partition and operation.

`read_payload` does not verify signatures (that is `verify`); it is what `ota payload info` shows.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from sealgate.errors import PayloadError
from sealgate.ota.payload import schema
from sealgate.ota.payload.codec import SOURCE_COPY
from sealgate.ota.payload.header import HEADER_SIZE, PayloadHeader

BLOCK_SIZE = 4096
FULL_MINOR_VERSION = 0
SUPPORTED_DELTA_MINOR_VERSIONS = range(2, 10)
HASH_SIZE = 32
#: Partition sizes (and so every extent's byte offset) stay below what a file offset (off_t) can hold.
MAX_PARTITION_SIZE = 1 << 62
_SPARSE_HOLE = (1 << 64) - 1
#: Operations that read the source partition.
SOURCE_OPERATIONS = frozenset(
    schema.OPERATION_TYPES[name]
    for name in ("SOURCE_COPY", "SOURCE_BSDIFF", "BROTLI_BSDIFF", "PUFFDIFF", "ZUCCHINI", "LZ4DIFF_BSDIFF",
                 "LZ4DIFF_PUFFDIFF")
)  # fmt: skip
_NO_DATA_OPERATIONS = frozenset(schema.OPERATION_TYPES[name] for name in ("ZERO", "DISCARD", "SOURCE_COPY", "MOVE"))


@dataclass(frozen=True)
class PartitionSummary:
    name: str
    size: int
    hash: bytes
    old_size: int | None
    old_hash: bytes | None
    operation_counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.hash.hex(),
            "old_size": self.old_size,
            "old_sha256": None if self.old_hash is None else self.old_hash.hex(),
            "operations": dict(sorted(self.operation_counts.items())),
        }


@dataclass(frozen=True)
class Payload:
    """A parsed payload: where it lies in its file, its header and manifest, and its raw signature blobs."""

    path: Path
    offset: int
    size: int
    header: PayloadHeader
    manifest: Any  # schema.DeltaArchiveManifest
    metadata_signature: bytes
    payload_signature: bytes

    @property
    def metadata_size(self) -> int:
        return self.header.metadata_size

    @property
    def data_start(self) -> int:
        """Absolute file offset of the first data blob."""
        return self.offset + self.header.data_offset

    @property
    def signatures_offset(self) -> int | None:
        """Offset of the payload signature blob relative to `data_start`, or None when the payload is unsigned."""
        return int(self.manifest.signatures_offset) if self.manifest.HasField("signatures_offset") else None

    @property
    def minor_version(self) -> int:
        return int(self.manifest.minor_version)

    @property
    def max_timestamp(self) -> int:
        return int(self.manifest.max_timestamp)

    @property
    def block_size(self) -> int:
        return int(self.manifest.block_size)

    @property
    def is_delta(self) -> bool:
        return any(partition.HasField("old_partition_info") for partition in self.manifest.partitions)

    @property
    def signed(self) -> bool:
        return bool(self.metadata_signature) and bool(self.payload_signature)

    @property
    def partitions(self) -> list[PartitionSummary]:
        summaries = []
        for partition in self.manifest.partitions:
            old = partition.old_partition_info if partition.HasField("old_partition_info") else None
            counts = Counter(schema.OPERATION_NAMES[operation.type] for operation in partition.operations)
            summaries.append(
                PartitionSummary(
                    partition.partition_name,
                    int(partition.new_partition_info.size),
                    bytes(partition.new_partition_info.hash),
                    None if old is None else int(old.size),
                    None if old is None else bytes(old.hash),
                    dict(counts),
                )
            )
        return summaries

    def to_json(self) -> dict[str, Any]:
        return {
            "file": os.fspath(self.path),
            "offset": self.offset,
            "size": self.size,
            "major_version": self.header.major_version,
            "minor_version": self.minor_version,
            "block_size": self.block_size,
            "type": "delta" if self.is_delta else "full",
            "max_timestamp": self.max_timestamp,
            "security_patch_level": _text(self.manifest.security_patch_level),
            "manifest_size": self.header.manifest_size,
            "metadata_size": self.metadata_size,
            "metadata_signature_size": self.header.metadata_signature_size,
            "signatures_offset": self.signatures_offset,
            "signatures_size": int(self.manifest.signatures_size) if self.signatures_offset is not None else None,
            "metadata_signatures": signature_sizes(self.metadata_signature),
            "payload_signatures": signature_sizes(self.payload_signature),
            "partitions": [partition.to_json() for partition in self.partitions],
            "dynamic_partition_groups": [
                {
                    "name": _text(group.name),
                    "size": int(group.size),
                    "partitions": [_text(name) for name in group.partition_names],
                }
                for group in self.manifest.dynamic_partition_metadata.groups
            ],
        }


def _text(value: str | bytes) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace") or None
    return value or None


def read_payload(path: Path, *, offset: int = 0, size: int | None = None) -> Payload:
    """Read and check the payload in bytes [offset, offset+size) of `path` (its signatures are not verified)."""
    with open_range(path, offset, size) as (fd, size):
        header, metadata = read_metadata(fd, offset, size)
        metadata_signature = _pread(fd, header.metadata_signature_size, offset + header.metadata_size)
        manifest = parse_manifest(metadata[HEADER_SIZE:])
        check_manifest(manifest, size - header.data_offset)
        payload_signature = b""
        if manifest.HasField("signatures_offset"):
            payload_signature = _pread(
                fd, int(manifest.signatures_size), offset + header.data_offset + int(manifest.signatures_offset)
            )
    return Payload(Path(path), offset, size, header, manifest, metadata_signature, payload_signature)


class open_range:
    """Open `path` and resolve [offset, offset+size) against its size; yields (fd, size)."""

    def __init__(self, path: Path, offset: int, size: int | None) -> None:
        self._path = Path(path)
        self._offset = offset
        self._size = size
        self._fd = -1

    def __enter__(self) -> tuple[int, int]:
        try:
            self._fd = os.open(self._path, os.O_RDONLY)
        except OSError as exc:
            raise PayloadError(f"cannot read {self._path}: {exc.strerror}") from None
        total = os.fstat(self._fd).st_size
        size = total - self._offset if self._size is None else self._size
        if self._offset < 0 or size < 0 or self._offset + size > total:
            os.close(self._fd)
            raise PayloadError(f"{self._path}: the payload range lies outside the {total}-byte file")
        return self._fd, size

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)


def read_metadata(fd: int, offset: int, size: int) -> tuple[PayloadHeader, bytes]:
    """The header, and the metadata bytes (header + manifest) that the metadata signature covers."""
    header = PayloadHeader.parse(_pread(fd, min(HEADER_SIZE, size), offset), size)
    return header, _pread(fd, header.metadata_size, offset)


def parse_manifest(data: bytes) -> Any:
    manifest = schema.DeltaArchiveManifest()
    try:
        manifest.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(f"the manifest is not a valid DeltaArchiveManifest ({exc})") from None
    if not manifest.IsInitialized():
        missing = ", ".join(manifest.FindInitializationErrors())
        raise PayloadError(f"the manifest lacks required fields ({missing}), or names an unknown operation type")
    return manifest


def parse_signatures(blob: bytes, what: str) -> Any:
    signatures = schema.Signatures()
    try:
        signatures.ParseFromString(blob)
    except DecodeError:
        raise PayloadError(f"the {what} is not a valid Signatures message") from None
    return signatures


def signature_sizes(blob: bytes) -> list[dict[str, int | None]]:
    """Each signature's padded and unpadded size, for `info` (empty when absent or unreadable)."""
    if not blob:
        return []
    try:
        signatures = parse_signatures(blob, "signature blob")
    except PayloadError:
        return []
    return [
        {
            "size": len(signature.data),
            "unpadded_size": int(signature.unpadded_signature_size)
            if signature.HasField("unpadded_signature_size")
            else None,
        }
        for signature in signatures.signatures
    ]


def check_manifest(manifest: Any, data_size: int) -> None:
    """update_engine's structural checks of a manifest against the `data_size` bytes that follow the metadata."""
    if manifest.block_size != BLOCK_SIZE:
        raise PayloadError(f"unsupported block size {manifest.block_size} (update_engine requires {BLOCK_SIZE})")
    has_offset, has_size = manifest.HasField("signatures_offset"), manifest.HasField("signatures_size")
    if has_offset != has_size:
        raise PayloadError("the manifest sets only one of signatures_offset and signatures_size")
    if has_offset:
        end = int(manifest.signatures_offset)
        if manifest.signatures_size == 0 or end + int(manifest.signatures_size) != data_size:
            raise PayloadError("the payload signature does not end exactly where the payload ends")
    else:
        end = data_size
    if not manifest.partitions:
        raise PayloadError("the manifest updates no partition")
    is_delta = any(partition.HasField("old_partition_info") for partition in manifest.partitions)
    if not is_delta and manifest.minor_version != FULL_MINOR_VERSION:
        raise PayloadError(f"a full payload must have minor version 0, not {manifest.minor_version}")
    if is_delta and manifest.minor_version not in SUPPORTED_DELTA_MINOR_VERSIONS:
        raise PayloadError(f"unsupported delta payload minor version {manifest.minor_version}")
    names: set[str] = set()
    next_offset = 0
    for partition in manifest.partitions:
        name = partition.partition_name
        if not isinstance(name, str):  # proto2 strings are not checked for UTF-8 when parsed
            raise PayloadError(f"the manifest names a partition {name!r} that is not UTF-8 text")
        if not name or "/" in name or "\x00" in name or name in (".", "..") or name in names:
            raise PayloadError(f"the manifest names the partition {name!r} twice or in a form that cannot be a file")
        names.add(name)
        next_offset = _check_partition(partition, next_offset, end)
    if next_offset != end:
        raise PayloadError(f"the operations' data ends at {next_offset}, but the data area ends at {end}")


def _check_partition(partition: Any, next_offset: int, end: int) -> int:
    name = partition.partition_name
    info = partition.new_partition_info
    if not partition.HasField("new_partition_info") or len(info.hash) != HASH_SIZE or info.size % BLOCK_SIZE:
        raise PayloadError(f"partition {name!r}: new_partition_info lacks a block-aligned size or a SHA-256 hash")
    if info.size >= MAX_PARTITION_SIZE:  # no file (ftruncate, pwrite offsets) can be that large
        raise PayloadError(f"partition {name!r}: new_partition_info's size {info.size} is impossible")
    blocks = int(info.size) // BLOCK_SIZE
    old_blocks = 0
    if partition.HasField("old_partition_info"):
        old = partition.old_partition_info
        if len(old.hash) != HASH_SIZE or old.size % BLOCK_SIZE:
            raise PayloadError(f"partition {name!r}: old_partition_info lacks a block-aligned size or a SHA-256 hash")
        if old.size >= MAX_PARTITION_SIZE:
            raise PayloadError(f"partition {name!r}: old_partition_info's size {old.size} is impossible")
        old_blocks = int(old.size) // BLOCK_SIZE
    for index, operation in enumerate(partition.operations):
        where = f"partition {name!r} operation {index}"
        if operation.data_length:
            if operation.type in _NO_DATA_OPERATIONS:
                raise PayloadError(f"{where}: a {schema.OPERATION_NAMES[operation.type]} operation carries data")
            if operation.data_offset != next_offset:
                raise PayloadError(f"{where}: its data is at offset {operation.data_offset}, expected {next_offset}")
            next_offset += int(operation.data_length)
            if next_offset > end:
                raise PayloadError(f"{where}: its data runs past the end of the data area")
            if len(operation.data_sha256_hash) != HASH_SIZE:
                raise PayloadError(f"{where}: the operation's data has no SHA-256 hash")
        if not operation.dst_extents:
            raise PayloadError(f"{where}: no destination extents")
        _check_extents(operation.dst_extents, blocks, f"{where}: destination")
        if operation.type in SOURCE_OPERATIONS:
            if not partition.HasField("old_partition_info"):
                raise PayloadError(f"{where}: reads the source partition, but the partition has no old_partition_info")
            _check_extents(operation.src_extents, old_blocks, f"{where}: source")
            if operation.type == SOURCE_COPY and _blocks(operation.src_extents) != _blocks(operation.dst_extents):
                raise PayloadError(f"{where}: SOURCE_COPY with source and destination of different sizes")
    return next_offset


def _check_extents(extents: Any, blocks: int, where: str) -> None:
    for extent in extents:
        if extent.start_block == _SPARSE_HOLE or extent.num_blocks == 0:
            raise PayloadError(f"{where} extent is empty or a sparse hole")
        if extent.start_block + extent.num_blocks > blocks:
            raise PayloadError(f"{where} extent ({extent.start_block}, {extent.num_blocks}) lies outside the partition")


def _blocks(extents: Any) -> int:
    return sum(int(extent.num_blocks) for extent in extents)


def _pread(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset) if length else b""
    if len(data) != length:
        raise PayloadError(f"the payload ends early: wanted {length} bytes at offset {offset}")
    return data
