"""Writing unsigned payloads from partition images: full (any device) and delta (from one source build).

A full payload is what delta_generator writes without --old_partitions (payload_generator/full_update_generator.cc,
payload_file.cc): minor version 0, each partition cut into 2 MiB chunks, each chunk the smallest of REPLACE and
the chosen compression; every operation with data carries data_sha256_hash; the data blobs follow each other in
partition and operation order; new_partition_info has the image's size and SHA-256. All-zero chunks become ZERO
operations (no data). delta_generator keeps ZERO for delta payloads (payload_generation_config.cc,
OperationAllowed: clients before minor version 4 mishandled it), while DeltaPerformer::PerformOperation applies
ZERO in any payload; `zero_operations=False` gives delta_generator's choice. A delta payload copies the blocks
that are unchanged at the same place in the source image (SOURCE_COPY with src_sha256_hash) and replaces the
rest, and records old_partition_info; it is deliberately simple (no bsdiff or puffdiff), enough for incremental
OTAs whose operations update_engine applies.

Images are streamed: chunks are compressed on every core (lzma and zstd release the GIL) with a bounded number in
flight, blobs go to a temporary file beside the output, and the header and manifest are written in front of them
once the operations are known. The output is unsigned (no metadata signature, no signatures_offset); sign it with
`signer.sign_payload`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sealgate.apk.signing.output import AtomicOutput
from sealgate.errors import UsageError
from sealgate.ota.payload import schema
from sealgate.ota.payload.codec import SOURCE_COPY, ZERO, EncodedChunk, check_compression, encode_chunk
from sealgate.ota.payload.header import MAJOR_VERSION, PayloadHeader

BLOCK_SIZE = 4096
FULL_CHUNK_SIZE = 2 * 1024 * 1024  # delta_generator's default full_chunk_size
FULL_MINOR_VERSION = 0
#: SOURCE_COPY with src_sha256_hash needs 3, ZERO 4; 8 is what Android 12+ (update_engine with ZUCCHINI) accepts.
DELTA_MINOR_VERSION = 8
_PARTITION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_COPY_STEP = 8 * 1024 * 1024


def write_full_payload(
    images: Mapping[str, Path],
    out: Path,
    *,
    block_size: int = BLOCK_SIZE,
    compression: str = "xz",
    max_timestamp: int = 0,
    chunk_size: int = FULL_CHUNK_SIZE,
    workers: int | None = None,
    security_patch_level: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    dynamic_partitions: DynamicPartitions | None = None,
    zero_operations: bool = True,
) -> None:
    """Write an unsigned full payload updating each partition (name -> image file) to its image.

    `security_patch_level` (YYYY-MM-DD) goes into the manifest, where update_engine refuses an SPL downgrade;
    `progress(done, total)` is called with image bytes read, for a progress bar; `dynamic_partitions` describes
    the groups of `super` on devices that have one. `zero_operations=False` encodes all-zero chunks like any other
    (compressed), which is what delta_generator does in full payloads (see the module docstring).
    """
    settings = _Settings(block_size, compression, max_timestamp, chunk_size, workers, security_patch_level, progress,
                         dynamic_partitions, zero_operations)  # fmt: skip
    _write(None, images, Path(out), settings)


def write_delta_payload(
    source: Mapping[str, Path],
    target: Mapping[str, Path],
    out: Path,
    *,
    block_size: int = BLOCK_SIZE,
    compression: str = "xz",
    max_timestamp: int = 0,
    chunk_size: int = FULL_CHUNK_SIZE,
    workers: int | None = None,
    security_patch_level: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    dynamic_partitions: DynamicPartitions | None = None,
    zero_operations: bool = True,
) -> None:
    """Write an unsigned delta payload from the source images to the target images.

    Partitions in `target` but not in `source` get full operations (and no old_partition_info); partitions only in
    `source` are not in the payload. The options are `write_full_payload`'s.
    """
    settings = _Settings(block_size, compression, max_timestamp, chunk_size, workers, security_patch_level, progress,
                         dynamic_partitions, zero_operations)  # fmt: skip
    _write(source, target, Path(out), settings)


@dataclass(frozen=True)
class PartitionGroup:
    """A group of dynamic partitions in `super`: its maximum size and the partitions in it."""

    name: str
    size: int
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class DynamicPartitions:
    """The manifest's DynamicPartitionMetadata, which update_engine needs on a device with a `super` partition
    (releasetools fills it from the build's dynamic_partitions_info.txt)."""

    groups: tuple[PartitionGroup, ...]
    snapshot_enabled: bool = False
    vabc_enabled: bool = False
    vabc_compression_param: str | None = None


@dataclass(frozen=True)
class _Settings:
    block_size: int
    compression: str
    max_timestamp: int
    chunk_size: int
    workers: int | None
    security_patch_level: str | None
    progress: Callable[[int, int], None] | None
    dynamic_partitions: DynamicPartitions | None
    zero_operations: bool

    def check(self) -> None:
        check_compression(self.compression)
        if self.security_patch_level is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.security_patch_level):
            raise UsageError(f"the security patch level {self.security_patch_level!r} is not YYYY-MM-DD")
        if self.block_size != BLOCK_SIZE:
            raise UsageError(
                f"update_engine only applies payloads with {BLOCK_SIZE}-byte blocks, not {self.block_size}"
            )
        if self.chunk_size <= 0 or self.chunk_size % self.block_size:
            raise UsageError(f"the chunk size must be a positive multiple of {self.block_size}")


@dataclass(frozen=True)
class _Job:
    """One planned operation: encode `data` into the blocks, or (data None) copy the same blocks of the source."""

    start_block: int
    num_blocks: int
    data: bytes | None
    src_hash: bytes | None = None


class _Progress:
    def __init__(self, total: int, report: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.done = 0
        self.report = report

    def advance(self, length: int) -> None:
        self.done += length
        if self.report is not None:
            self.report(self.done, self.total)


def _write(source: Mapping[str, Path] | None, target: Mapping[str, Path], out: Path, settings: _Settings) -> None:
    settings.check()
    if not target:
        raise UsageError("a payload needs at least one partition image")
    for name, path in {**(source or {}), **target}.items():
        if not _PARTITION_NAME.match(name):
            raise UsageError(f"{name!r} is not a partition name")
        _image_size(Path(path), settings.block_size)
    manifest = schema.DeltaArchiveManifest(
        block_size=settings.block_size, minor_version=FULL_MINOR_VERSION if source is None else DELTA_MINOR_VERSION
    )
    if settings.max_timestamp:
        manifest.max_timestamp = settings.max_timestamp
    if settings.security_patch_level:
        manifest.security_patch_level = settings.security_patch_level
    if settings.dynamic_partitions is not None:
        _set_dynamic_partitions(manifest, settings.dynamic_partitions, target)
    workers = settings.workers or os.cpu_count() or 1
    progress = _Progress(sum(Path(path).stat().st_size for path in target.values()), settings.progress)
    with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.blobs.") as blobs:
        writer = _BlobWriter(blobs)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="payload-compress") as pool:
            for name, path in target.items():
                partition = manifest.partitions.add(partition_name=name)
                old = None if source is None else source.get(name)
                _write_partition(partition, Path(path), None if old is None else Path(old), settings, pool, workers,
                                 writer, progress)  # fmt: skip
        serialized = manifest.SerializeToString()
        header = PayloadHeader(MAJOR_VERSION, len(serialized), 0)
        with AtomicOutput(out) as output:
            _write_all(output.fd, header.pack() + serialized)
            blobs.seek(0)
            while chunk := blobs.read(_COPY_STEP):
                _write_all(output.fd, chunk)
            output.commit()


def _set_dynamic_partitions(manifest: Any, dynamic: DynamicPartitions, target: Mapping[str, Path]) -> None:
    metadata = manifest.dynamic_partition_metadata
    seen: set[str] = set()
    for group in dynamic.groups:
        missing = [name for name in group.partitions if name not in target]
        if missing or seen & set(group.partitions):
            raise UsageError(f"group {group.name!r}: partitions not in the payload or in two groups: {missing}")
        seen.update(group.partitions)
        total = sum(Path(target[name]).stat().st_size for name in group.partitions)
        if total > group.size:
            raise UsageError(f"group {group.name!r}: its partitions need {total} bytes, more than its {group.size}")
        metadata.groups.add(name=group.name, size=group.size, partition_names=list(group.partitions))
    metadata.snapshot_enabled = dynamic.snapshot_enabled
    if dynamic.vabc_enabled:
        metadata.vabc_enabled = True
    if dynamic.vabc_compression_param:
        metadata.vabc_compression_param = dynamic.vabc_compression_param


class _BlobWriter:
    """The data area being built: blobs appended in operation order, and the offset of the next one."""

    def __init__(self, blobs: IO[bytes]) -> None:
        self.blobs = blobs
        self.offset = 0

    def append(self, data: bytes) -> int:
        offset = self.offset
        self.blobs.write(data)
        self.offset += len(data)
        return offset


def _write_partition(
    partition: Any,
    image: Path,
    source: Path | None,
    settings: _Settings,
    pool: ThreadPoolExecutor,
    workers: int,
    writer: _BlobWriter,
    progress: _Progress,
) -> None:
    size = _image_size(image, settings.block_size)
    hasher = hashlib.sha256()
    source_size = 0 if source is None else _image_size(source, settings.block_size)
    if source is not None:
        partition.old_partition_info.size = source_size
        partition.old_partition_info.hash = _file_sha256(source)
    pending: collections.deque[tuple[_Job, Future[EncodedChunk] | None]] = collections.deque()

    def finish_one() -> None:
        job, future = pending.popleft()
        operation = partition.operations.add()
        if future is None:
            operation.type = SOURCE_COPY
            operation.src_extents.add(start_block=job.start_block, num_blocks=job.num_blocks)
            operation.src_sha256_hash = job.src_hash
        else:
            encoded = future.result()
            operation.type = encoded.type
            if encoded.type != ZERO:
                operation.data_offset = writer.append(encoded.data)
                operation.data_length = len(encoded.data)
                operation.data_sha256_hash = hashlib.sha256(encoded.data).digest()
        operation.dst_extents.add(start_block=job.start_block, num_blocks=job.num_blocks)
        progress.advance(job.num_blocks * settings.block_size)

    with contextlib.ExitStack() as stack:
        new = stack.enter_context(open(image, "rb"))
        old = None if source is None else stack.enter_context(open(source, "rb"))
        for job in _plan(new, old, size, source_size, settings.block_size, settings.chunk_size, hasher):
            future = (
                None
                if job.data is None
                else pool.submit(encode_chunk, job.data, settings.compression, settings.zero_operations)
            )
            pending.append((job, future))
            while len(pending) > 2 * workers:
                finish_one()
        while pending:
            finish_one()
    partition.new_partition_info.size = size
    partition.new_partition_info.hash = hasher.digest()


def _plan(
    new: IO[bytes],
    old: IO[bytes] | None,
    size: int,
    old_size: int,
    block_size: int,
    chunk_size: int,
    hasher: Any,
) -> Iterator[_Job]:
    """The operations of one partition, chunk by chunk; hashes the new image on the way."""
    for start in range(0, size, chunk_size):
        chunk = new.read(min(chunk_size, size - start))
        hasher.update(chunk)
        first_block = start // block_size
        if old is None or start >= old_size:
            yield _Job(first_block, len(chunk) // block_size, chunk)
            continue
        old.seek(start)
        old_chunk = old.read(min(len(chunk), old_size - start))
        if old_chunk == chunk:
            yield _Job(first_block, len(chunk) // block_size, None, hashlib.sha256(old_chunk).digest())
            continue
        # Runs of blocks equal to the source block at the same place, and runs of changed blocks.
        run_start, run_same = 0, None
        blocks = len(chunk) // block_size
        for index in range(blocks + 1):
            if index < blocks:
                piece = slice(index * block_size, (index + 1) * block_size)
                same = chunk[piece] == old_chunk[piece]
                if same == run_same:
                    continue
            if run_same is not None:
                span = slice(run_start * block_size, index * block_size)
                if run_same:
                    yield _Job(
                        first_block + run_start, index - run_start, None, hashlib.sha256(old_chunk[span]).digest()
                    )
                else:
                    yield _Job(first_block + run_start, index - run_start, chunk[span])
            if index < blocks:
                run_start, run_same = index, same


def _image_size(path: Path, block_size: int) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read the image {path}: {exc.strerror}") from None
    if size % block_size:
        raise UsageError(f"{path} is {size} bytes, not a multiple of the {block_size}-byte block size")
    return size


def _file_sha256(path: Path) -> bytes:
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_COPY_STEP):
            hasher.update(chunk)
    return hasher.digest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
