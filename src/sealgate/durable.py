"""Small pieces of durable, strict file handling shared by every layer that writes or reads what must not be lost.

Publishing, signing and key storage all replace files atomically (temporary file, fsync, rename); the rename itself
only survives a crash once the directory is fsynced too. And the JSON sealgate reads back from its own records and
bundles must mean one thing only, so objects with a repeated key are refused instead of silently keeping the last.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

_COPY_BLOCK = 1 << 20


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice."""


class ChangedWhileCopyingError(OSError):
    """A file's bytes were not the size and hash the caller had checked when it was copied."""


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in `directory` durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(Path(directory), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for json.loads that refuses repeated keys."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def replace_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers and crashes see the old file or the new one, never a mix.

    Temporary file in the same directory, fsync, rename, fsync of the directory. Raises OSError (the caller names
    the layer's error); on any failure the temporary file is gone and `path` is as it was.
    """
    target = Path(path)
    directory = target.parent
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_path)
        raise
    fsync_directory(directory)


def sha256_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB blocks into one buffer; OSError when it cannot be read.

    The one way publishing services hash what they publish, so a repository and an OTA channel agree on a file.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(_COPY_BLOCK)
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


def copy_checked(source: str | os.PathLike[str], target: str | os.PathLike[str], sha256: str, size: int) -> bool:
    """Copy `source` to `target` (read-only) unless `target` exists; True when copied.

    For content-addressed stores that publish what was checked: the copy is hashed as it is written, fsynced and
    renamed into place only when it has the `sha256` and `size` the caller checked (ChangedWhileCopyingError
    otherwise). OSError on any failure, with `target` absent and no partial file left behind. The caller fsyncs
    the target's directory.
    """
    destination = Path(target)
    if destination.is_file():
        return False
    partial = destination.with_name(f".{destination.name}.partial")
    hasher = hashlib.sha256()
    written = 0
    try:
        with open(source, "rb", buffering=0) as reader, open(partial, "wb", buffering=0) as writer:
            buffer = bytearray(_COPY_BLOCK)
            view = memoryview(buffer)
            while count := reader.readinto(buffer):
                hasher.update(view[:count])
                writer.write(view[:count])
                written += count
            os.fchmod(writer.fileno(), 0o444)
            os.fsync(writer.fileno())
        if (hasher.hexdigest(), written) != (sha256, size):
            raise ChangedWhileCopyingError(f"{os.fspath(source)} changed while it was being copied")
        os.rename(partial, destination)
    finally:
        with suppress(OSError):
            partial.unlink()
    return True


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], busy: Exception) -> Iterator[None]:
    """Hold an flock on `path` (created if needed) for the block; raise `busy` at once if another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield
    finally:
        os.close(fd)
