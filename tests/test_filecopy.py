"""The kernel copy and its fallback: what every archive and image writer copies through."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sealgate import filecopy


def _files(tmp_path: Path, data: bytes) -> tuple[int, int]:
    (tmp_path / "in").write_bytes(data)
    return os.open(tmp_path / "in", os.O_RDONLY), os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)


def test_the_kernel_copies_at_both_offsets(tmp_path: Path) -> None:
    source, target = _files(tmp_path, bytes(range(256)) * 100)
    copied, kernel = filecopy.copy_once(source, target, 10, 5, 1000, True)
    os.close(source), os.close(target)
    assert (copied, kernel) == (1000, True)
    assert (tmp_path / "out").read_bytes() == bytes(5) + (bytes(range(256)) * 100)[10:1010]


def test_a_refused_kernel_copy_falls_back_once_and_copies_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refused)
    data = os.urandom(filecopy.FALLBACK_CHUNK + 123)
    source, target = _files(tmp_path, data)
    copied, kernel = filecopy.copy_once(source, target, 0, 0, len(data), True)
    assert (copied, kernel) == (filecopy.FALLBACK_CHUNK, False)  # the caller goes on without the kernel
    copied, kernel = filecopy.copy_once(source, target, copied, copied, len(data), kernel)
    assert (copied, kernel) == (123, False)
    assert filecopy.copy_once(source, target, len(data), len(data), 10, False) == (0, False)  # the source's end
    os.close(source), os.close(target)
    assert (tmp_path / "out").read_bytes() == data


def test_a_real_io_error_is_not_hidden_by_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_: object) -> int:
        raise OSError(errno.EIO, "input/output error")

    monkeypatch.setattr(os, "copy_file_range", failing)
    source, target = _files(tmp_path, b"data")
    with pytest.raises(OSError, match="input/output"):
        filecopy.copy_once(source, target, 0, 0, 4, True)
    os.close(source), os.close(target)
