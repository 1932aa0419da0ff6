"""Zero-copy views of an open file's byte ranges, for hashing gigabytes on every core.

Hashing an APK or OTA package is the hot path of verification. Reading with `os.pread` copies every byte from the
page cache into a Python buffer, which costs about as much as SHA-256 itself; a memory map avoids the copy. One map
of the whole file is shared by all worker threads (mapping and unmapping per range would serialise the threads on
the kernel's address-space lock), and each range is dropped from the process with MADV_DONTNEED once hashed, so the
resident set stays at a few tens of MB however large the file is. Where mapping is unavailable (an empty file,
a platform without madvise), ranges are read with `os.pread` instead.

A file that shrinks while it is mapped would fault (SIGBUS) on access; callers verify files they control, and the
repository copies uploads to a private path before verifying them.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType

from sealgate.errors import FormatError

_PAGE = mmap.PAGESIZE


class FileRanges:
    """Views of ranges of the file behind `fd`, which must stay open while this object is used."""

    def __init__(self, fd: int, size: int):
        self._fd = fd
        self._size = size
        self._map: mmap.mmap | None = None
        if size > 0 and hasattr(mmap, "MADV_DONTNEED"):
            try:
                self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                self._map = None

    @contextmanager
    def view(self, offset: int, length: int) -> Iterator[memoryview]:
        """A read-only view of `length` bytes at `offset`; valid only inside the `with` block."""
        if offset < 0 or length < 0 or offset + length > self._size:
            raise FormatError(f"range of {length} bytes at offset {offset} lies outside the {self._size}-byte file")
        if self._map is None:
            data = os.pread(self._fd, length, offset)
            if len(data) != length:
                raise FormatError(f"file ends early: wanted {length} bytes at offset {offset}, got {len(data)}")
            with memoryview(data) as view:
                yield view
            return
        try:
            with memoryview(self._map) as whole, whole[offset : offset + length] as view:
                yield view
        finally:
            # Also when the consumer stops early (an inflater that reached the end of its stream closes the reader).
            self._drop(offset, length)

    def _drop(self, offset: int, length: int) -> None:
        """Let the kernel unmap pages already hashed; they stay in the page cache for other readers."""
        assert self._map is not None
        start = offset - offset % _PAGE
        end = offset + length
        if end - start >= _PAGE:
            with suppress(OSError, ValueError):
                self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                return  # a view is still alive (only possible after an error); the GC unmaps it later
            self._map = None

    def __enter__(self) -> FileRanges:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
