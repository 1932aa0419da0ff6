"""Small pieces of durable, strict file handling shared by every layer that writes or reads what must not be lost.

Publishing, signing and key storage all replace files atomically (temporary file, fsync, rename); the rename itself
only survives a crash once the directory is fsynced too. And the JSON sealgate reads back from its own records and
bundles must mean one thing only, so objects with a repeated key are refused instead of silently keeping the last.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice."""


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
