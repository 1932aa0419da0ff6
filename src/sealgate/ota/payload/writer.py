"""Writing unsigned payloads from partition images: full (any device) and delta (from one source build).

A full payload is what delta_generator writes without --old_partitions (payload_generator/full_update_generator.cc,
payload_file.cc): minor version 0, each partition cut into 2 MiB chunks, each chunk the smallest of REPLACE and
the chosen compression, or ZERO when all zeros; every operation with data carries data_sha256_hash; the data blobs
follow each other in partition and operation order; new_partition_info has the image's size and SHA-256. A delta
payload copies the blocks that are unchanged at the same place in the source image (SOURCE_COPY with
src_sha256_hash) and replaces the rest, and records old_partition_info; it is deliberately simple (no bsdiff or
puffdiff), enough for incremental OTAs whose operations update_engine applies.

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
from collections.abc import Iterator, Mapping
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
) -> None:
    """Write an unsigned full payload updating each partition (name -> image file) to its image."""
    _write(None, images, Path(out), block_size, compression, max_timestamp, chunk_size, workers)


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
) -> None:
    """Write an unsigned delta payload from the source images to the target images.

    Partitions in `target` but not in `source` get full operations (and no old_partition_info); partitions only in
    `source` are not in the payload.
    """
    _write(source, target, Path(out), block_size, compression, max_timestamp, chunk_size, workers)


@dataclass(frozen=True)
class _Job:
    """One planned operation: encode `data` into the blocks, or (data None) copy the same blocks of the source."""

    start_block: int
    num_blocks: int
    data: bytes | None
    src_hash: bytes | None = None


def _write(
    source: Mapping[str, Path] | None,
    target: Mapping[str, Path],
    out: Path,
    block_size: int,
    compression: str,
    max_timestamp: int,
    chunk_size: int,
    workers: int | None,
) -> None:
    check_compression(compression)
    if block_size != BLOCK_SIZE:
        raise UsageError(f"update_engine only applies payloads with {BLOCK_SIZE}-byte blocks, not {block_size}")
    if chunk_size <= 0 or chunk_size % block_size:
        raise UsageError(f"the chunk size must be a positive multiple of {block_size}")
    if not target:
        raise UsageError("a payload needs at least one partition image")
    for name, path in {**(source or {}), **target}.items():
        if not _PARTITION_NAME.match(name):
            raise UsageError(f"{name!r} is not a partition name")
        _image_size(Path(path), block_size)
    manifest = schema.DeltaArchiveManifest(
        block_size=block_size, minor_version=FULL_MINOR_VERSION if source is None else DELTA_MINOR_VERSION
    )
    if max_timestamp:
        manifest.max_timestamp = max_timestamp
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.blobs.") as blobs:
        offset = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="payload-compress") as pool:
            for name, path in target.items():
                partition = manifest.partitions.add(partition_name=name)
                old = None if source is None else source.get(name)
                offset = _write_partition(
                    partition, Path(path), None if old is None else Path(old), block_size, chunk_size,
                    compression, pool, workers, blobs, offset,
                )  # fmt: skip
        serialized = manifest.SerializeToString()
        header = PayloadHeader(MAJOR_VERSION, len(serialized), 0)
        with AtomicOutput(out) as output:
            _write_all(output.fd, header.pack() + serialized)
            blobs.seek(0)
            while chunk := blobs.read(_COPY_STEP):
                _write_all(output.fd, chunk)
            output.commit()


def _write_partition(
    partition: Any,
    image: Path,
    source: Path | None,
    block_size: int,
    chunk_size: int,
    compression: str,
    pool: ThreadPoolExecutor,
    workers: int,
    blobs: IO[bytes],
    offset: int,
) -> int:
    size = _image_size(image, block_size)
    hasher = hashlib.sha256()
    source_size = 0 if source is None else _image_size(source, block_size)
    if source is not None:
        partition.old_partition_info.size = source_size
        partition.old_partition_info.hash = _file_sha256(source)
    pending: collections.deque[tuple[_Job, Future[EncodedChunk] | None]] = collections.deque()

    def finish_one() -> None:
        nonlocal offset
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
                operation.data_offset = offset
                operation.data_length = len(encoded.data)
                operation.data_sha256_hash = hashlib.sha256(encoded.data).digest()
                blobs.write(encoded.data)
                offset += len(encoded.data)
        operation.dst_extents.add(start_block=job.start_block, num_blocks=job.num_blocks)

    with contextlib.ExitStack() as stack:
        new = stack.enter_context(open(image, "rb"))
        old = None if source is None else stack.enter_context(open(source, "rb"))
        for job in _plan(new, old, size, source_size, block_size, chunk_size, hasher):
            future = None if job.data is None else pool.submit(encode_chunk, job.data, compression)
            pending.append((job, future))
            while len(pending) > 2 * workers:
                finish_one()
        while pending:
            finish_one()
    partition.new_partition_info.size = size
    partition.new_partition_info.hash = hasher.digest()
    return offset


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
