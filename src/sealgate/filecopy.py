"""Copying bytes between files by offset, for the writers that rebuild archives and images.

`copy_file_range` lets the kernel move data file to file (and share extents where the filesystem can), but it is
refused across filesystems, on some file types and by older kernels; those refusals are told apart from real I/O
errors so a writer can fall back to pread/pwrite once and go on. `pwrite_all` exists because `os.pwrite` may write
less than it was given.
"""

from __future__ import annotations

import errno
import os

#: copy_file_range's answers that mean "not here", not "the disk failed".
COPY_FALLBACK_ERRNOS = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF})
#: What a fallback copy reads at a time.
FALLBACK_CHUNK = 4 * 1024 * 1024


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset`."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


def copy_once(
    source: int, target: int, source_offset: int, target_offset: int, length: int, kernel: bool
) -> tuple[int, bool]:
    """Copy up to `length` bytes once, by the kernel while `kernel` holds: (bytes copied, 0 at the source's end;
    whether the kernel may still be used). OSError for a real I/O failure."""
    if kernel:
        try:
            return os.copy_file_range(source, target, length, source_offset, target_offset), True
        except OSError as exc:
            if exc.errno not in COPY_FALLBACK_ERRNOS:
                raise
    data = os.pread(source, min(length, FALLBACK_CHUNK), source_offset)
    if data:
        pwrite_all(target, data, target_offset)
    return len(data), False
