"""Views of an open file's byte ranges, for hashing gigabytes on every core with bounded memory.

Hashing an APK or OTA package is the hot path of verification and signing. Each range is read with `os.preadv` into
a buffer that is reused from one view to the next (a pool shared by all threads), and hashed from there. A memory
map looks cheaper, since it copies nothing, but every page of a map has to be faulted in and zapped again, and on the
machines measured (virtual machines, where a page-table update costs most) that came to as much CPU time as the
SHA-256 of the page itself: mapping 1 GiB cost 1.2 CPU-seconds to hash, reading it into a reused 1 MiB buffer 0.65,
of which the copy is a tenth. A reused buffer also stays in the core's cache, so the hash reads it from there.

Memory is bounded by the views alive at once (one per thread, usually) times their size, whatever the file's size.
A file that ends before a range does is reported as a FormatError, never a crash.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from sealgate.errors import FormatError

#: Buffers kept for reuse per size; more views than this at once allocate (and then drop) extra ones.
_POOL_DEPTH = 16
_pool: dict[int, list[bytearray]] = {}
_pool_lock = threading.Lock()


def _take(size: int) -> bytearray:
    with _pool_lock:
        free = _pool.get(size)
        if free:
            return free.pop()
    return bytearray(size)


def _give(buffer: bytearray) -> None:
    with _pool_lock:
        free = _pool.setdefault(len(buffer), [])
        if len(free) < _POOL_DEPTH:
            free.append(buffer)


def _buffer_size(length: int) -> int:
    """Buffers come in powers of two from 64 KiB, so views of similar sizes share them."""
    return max(1 << 16, 1 << (length - 1).bit_length())


def read_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset` of the file, as far as the file goes; the number of bytes read."""
    done = 0
    while done < len(view):
        with view[done:] as rest:
            count = os.preadv(fd, [rest], offset + done)
        if count == 0:
            break
        done += count
    return done


class FileRanges:
    """Views of ranges of the file behind `fd` (of `size` bytes), which must stay open while this object is used."""

    def __init__(self, fd: int, size: int):
        self._fd = fd
        self._size = size

    @contextmanager
    def view(self, offset: int, length: int) -> Iterator[memoryview]:
        """A read-only view of `length` bytes at `offset`; valid only inside the `with` block."""
        if offset < 0 or length < 0 or offset + length > self._size:
            raise FormatError(f"range of {length} bytes at offset {offset} lies outside the {self._size}-byte file")
        buffer = _take(_buffer_size(length))
        try:
            with memoryview(buffer) as whole, whole[:length] as target:
                got = read_into(self._fd, target, offset)
                if got != length:
                    raise FormatError(f"file ends early: wanted {length} bytes at offset {offset}, got {got}")
                with target.toreadonly() as view:
                    yield view
        finally:
            _give(buffer)

    def close(self) -> None:
        """Nothing to release (the buffers go back to the pool as each view ends); kept for `with` blocks."""

    def __enter__(self) -> FileRanges:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
