"""Whole-file content digests of APK Signature Schemes v2 and v3 (chunked SHA-256 / SHA-512).

The digested bytes are three sections: everything before the APK Signing Block, the central directory, and the
EOCD record with its central-directory offset rewritten to the signing block's offset. Each section is cut into
1 MiB chunks; each chunk digest is H(0xa5 || uint32 len || chunk), and the result is H(0x5a || uint32 count ||
chunk digests...). Chunks are independent, so they are hashed on every core: hashlib releases the GIL, and each
worker reads its own contiguous run of chunks, one chunk at a time into a reused buffer (`FileRanges`), so memory
stays at a MiB per worker whatever the APK's size and the hash reads the chunk from the core's cache. All requested
algorithms are computed in the same pass over the data.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sealgate.apk.algorithms import ContentDigest
from sealgate.filerange import FileRanges

CHUNK_SIZE = 1024 * 1024
#: Fewest chunks per job: smaller jobs cost more to schedule than they take to hash.
_CHUNKS_PER_WINDOW = 16
#: Bytes read at a time: one chunk, which stays in a core's L2 cache while it is hashed.
_READ_WINDOW = CHUNK_SIZE


@dataclass(frozen=True, slots=True)
class DigestedSections:
    """The bytes a v2/v3 content digest covers: two file ranges and the rewritten EOCD."""

    fd: int
    before_block: tuple[int, int]
    central_directory: tuple[int, int]
    eocd: bytes

    @property
    def total_size(self) -> int:
        return self.before_block[1] + self.central_directory[1] + len(self.eocd)


def compute_chunked_digests(
    sections: DigestedSections, algorithms: Sequence[ContentDigest], *, workers: int | None = None
) -> dict[ContentDigest, bytes]:
    """Chunked digests for CHUNKED_SHA256 and/or CHUNKED_SHA512 over the three sections."""
    wanted = [algorithm for algorithm in algorithms if algorithm is not ContentDigest.VERITY_CHUNKED_SHA256]
    if not wanted:
        return {}
    jobs = _plan_jobs(sections)
    chunk_count = sum(count for _, _, _, count in jobs)
    hash_names = [algorithm.hash_name for algorithm in wanted]
    worker_count = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    with FileRanges(sections.fd, os.fstat(sections.fd).st_size) as ranges:

        def run(job: tuple[int, bytes | None, int, int]) -> list[list[bytes]]:
            return _hash_range(ranges, job, hash_names)

        if worker_count == 1:
            results = [run(job) for job in jobs]
        else:
            with ThreadPoolExecutor(max_workers=worker_count, thread_name_prefix="apk-digest") as pool:
                results = list(pool.map(run, jobs))
    digests: dict[ContentDigest, bytes] = {}
    for index, algorithm in enumerate(wanted):
        top = hashlib.new(algorithm.hash_name)
        top.update(b"\x5a" + struct.pack("<I", chunk_count))
        for per_job in results:
            top.update(b"".join(per_job[index]))
        digests[algorithm] = top.digest()
    return digests


def chunk_digests(
    ranges: FileRanges, offset: int, length: int, algorithms: Sequence[ContentDigest]
) -> list[list[bytes]]:
    """Digests of the chunks of `length` bytes at `offset` of the file, cut from `offset` on; one list per algorithm.

    For a caller that hashes a section piece by piece as it becomes final (the APK signer hashes what it has
    written while it goes on copying); every piece but the section's last must be a whole number of chunks.
    """
    return _hash_range(ranges, (offset, None, length, -(-length // CHUNK_SIZE)), [a.hash_name for a in algorithms])


def bytes_chunk_digests(data: bytes, algorithms: Sequence[ContentDigest]) -> list[list[bytes]]:
    """`chunk_digests` of an in-memory section (a central directory, an end record)."""
    return _hash_range(None, (0, data, len(data), -(-len(data) // CHUNK_SIZE)), [a.hash_name for a in algorithms])


def combine_chunk_digests(algorithm: ContentDigest, digests: Sequence[bytes]) -> bytes:
    """The content digest over the chunk digests of all three sections, in order."""
    top = hashlib.new(algorithm.hash_name)
    top.update(b"\x5a" + struct.pack("<I", len(digests)))
    top.update(b"".join(digests))
    return top.digest()


def _plan_jobs(sections: DigestedSections) -> list[tuple[int, bytes | None, int, int]]:
    """Split the sections into jobs of whole chunks: (offset, in-memory bytes or None, length, chunk count)."""
    jobs: list[tuple[int, bytes | None, int, int]] = []
    cpu = os.cpu_count() or 1
    for start, size in (sections.before_block, sections.central_directory):
        if size == 0:
            continue
        chunks = -(-size // CHUNK_SIZE)
        # Enough jobs to balance the cores, each a run of whole chunks read with large preads.
        per_job = max(_CHUNKS_PER_WINDOW, -(-chunks // (cpu * 4)))
        for first in range(0, chunks, per_job):
            count = min(per_job, chunks - first)
            offset = start + first * CHUNK_SIZE
            length = min(count * CHUNK_SIZE, start + size - offset)
            jobs.append((offset, None, length, count))
    if sections.eocd:
        jobs.append((0, sections.eocd, len(sections.eocd), -(-len(sections.eocd) // CHUNK_SIZE)))
    return jobs


def _hash_range(
    ranges: FileRanges | None, job: tuple[int, bytes | None, int, int], hash_names: list[str]
) -> list[list[bytes]]:
    offset, data, length, _ = job
    out: list[list[bytes]] = [[] for _ in hash_names]
    constructors: list[Callable[[], hashlib._Hash]] = [_constructor(name) for name in hash_names]
    window = _READ_WINDOW
    for window_start in range(0, length, window):
        window_length = min(window, length - window_start)
        if data is not None:
            with memoryview(data) as whole, whole[window_start : window_start + window_length] as view:
                _hash_window(view, constructors, out)
        else:
            assert ranges is not None
            with ranges.view(offset + window_start, window_length) as view:
                _hash_window(view, constructors, out)
    return out


def _hash_window(view: memoryview, constructors: list[Callable[[], hashlib._Hash]], out: list[list[bytes]]) -> None:
    for chunk_start in range(0, len(view), CHUNK_SIZE):
        with view[chunk_start : chunk_start + CHUNK_SIZE] as chunk:
            prefix = b"\xa5" + struct.pack("<I", len(chunk))
            for index, make in enumerate(constructors):
                digest = make()
                digest.update(prefix)
                digest.update(chunk)
                out[index].append(digest.digest())


def _constructor(name: str) -> Callable[[], hashlib._Hash]:
    return hashlib.sha512 if name == "sha512" else hashlib.sha256
