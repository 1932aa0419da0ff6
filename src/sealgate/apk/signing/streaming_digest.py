"""The v2/v3 content digest of the APK being written, hashed while it is still being written.

Everything before the APK Signing Block is digested in 1 MiB chunks counted from offset 0, and the entries are
written front to back and never touched again: a chunk is final as soon as the copy has passed its end. So the
chunks are hashed on the other cores while the copy goes on, straight from the output file (what is digested is
what was written), and once the JAR signature files and the padding are in place only the last few chunks are left.
The digests are `sealgate.apk.content_digest`'s, computed by its own chunk functions, so they are exactly the
verifier's CHUNKED_SHA256 / CHUNKED_SHA512.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from sealgate.apk.algorithms import ContentDigest
from sealgate.apk.content_digest import CHUNK_SIZE, chunk_digests, combine_chunk_digests
from sealgate.filerange import FileRanges

#: Chunks per background job: big enough that a job is worth scheduling, small enough to follow the copy closely.
_CHUNKS_PER_JOB = 16


@dataclass(frozen=True)
class HeadDigests:
    """The chunk digests of the output's first `end` bytes (whole chunks), one list per algorithm."""

    end: int
    algorithms: tuple[ContentDigest, ...]
    digests: tuple[tuple[bytes, ...], ...]

    def content_digests(self, tail: Sequence[Sequence[Sequence[bytes]]]) -> dict[ContentDigest, bytes]:
        """The content digests, given the chunk digests of every later piece (per piece, per algorithm)."""
        result: dict[ContentDigest, bytes] = {}
        for index, algorithm in enumerate(self.algorithms):
            chunks = list(self.digests[index])
            for piece in tail:
                chunks.extend(piece[index])
            result[algorithm] = combine_chunk_digests(algorithm, chunks)
        return result


def file_chunk_digests(fd: int, offset: int, length: int, algorithms: Sequence[ContentDigest]) -> list[list[bytes]]:
    """Chunk digests of `length` bytes at `offset` of the file behind `fd` (read only as far as `offset + length`)."""
    if length == 0:
        return [[] for _ in algorithms]
    with FileRanges(fd, offset + length) as ranges:
        return chunk_digests(ranges, offset, length, algorithms)


class StreamingDigest:
    """Hashes whole chunks of the output on `pool` as `advance` reports them final.

    `advance` is called from the writing thread only. Each job reads the output up to the job's end only: the output
    grows while it is hashed.
    """

    def __init__(self, fd: int, algorithms: Sequence[ContentDigest], pool: Executor) -> None:
        self._fd = fd
        self._algorithms = tuple(algorithms)
        self._pool = pool
        self._submitted = 0
        self._jobs: list[Future[list[list[bytes]]]] = []

    @property
    def algorithms(self) -> tuple[ContentDigest, ...]:
        return self._algorithms

    @property
    def submitted(self) -> int:
        """The end of the chunks handed to the pool so far."""
        return self._submitted

    def advance(self, final: int) -> None:
        """Every byte before `final` is written for good: hash the whole jobs' worth of chunks below it."""
        if not self._algorithms:
            return
        step = CHUNK_SIZE * _CHUNKS_PER_JOB
        while final - self._submitted >= step:
            job = self._pool.submit(file_chunk_digests, self._fd, self._submitted, step, self._algorithms)
            self._jobs.append(job)
            self._submitted += step

    def head(self) -> HeadDigests:
        """The digests of everything submitted so far (waiting for the jobs); the rest is the caller's tail."""
        per_algorithm: list[list[bytes]] = [[] for _ in self._algorithms]
        for job in self._jobs:
            for index, digests in enumerate(job.result()):
                per_algorithm[index].extend(digests)
        return HeadDigests(self._submitted, self._algorithms, tuple(tuple(d) for d in per_algorithm))

    def cancel(self) -> None:
        for job in self._jobs:
            job.cancel()
