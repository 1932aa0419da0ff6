"""Writing a file so that readers see the old one or the complete new one, never half of it.

The data goes to a temporary file in the target's directory (same filesystem, so the final rename is atomic), is
fsynced, and only then replaces the target; the directory is fsynced so the rename survives a crash. Any failure,
including an interrupt, removes the temporary file and leaves the target untouched.

For a large file the flushing can start early (`start_writeback`): a background thread keeps flushing what is
being written while the caller goes on copying, hashing and checking, and the fsync in `commit` then has little
left to do.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from sealgate.durable import fsync_directory
from sealgate.errors import ApkSigningError

#: Seconds between background flushes while a large file is written.
_WRITEBACK_INTERVAL = 0.1


class AtomicOutput:
    """A temporary file beside `path`; `commit()` makes it `path`, leaving the block without it discards it."""

    def __init__(self, path: str | os.PathLike[str], *, mode: int | None = None) -> None:
        self.path = Path(path)
        self._mode = _default_mode() if mode is None else mode
        directory = self.path.parent
        try:
            fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise ApkSigningError(f"cannot create a file in {directory}: {exc.strerror}") from exc
        self.fd: int = fd
        self.temp_path = Path(temp)
        self._committed = False
        self._writeback: threading.Thread | None = None
        self._writeback_error: OSError | None = None
        self._stop_writeback = threading.Event()

    def start_writeback(self) -> None:
        """Keep flushing what is written to disk, in the background, until `sync`.

        Writing a large file and fsyncing it at the end costs the time to write it twice over: flushing while the
        data is still being produced lets the disk work in parallel with the caller, and the final fsync then has
        little left to do.
        """
        if self._writeback is not None:
            return
        # The thread syncs its own descriptor, so closing ours (discard) can never make it sync a reused number.
        duplicate = os.dup(self.fd)
        stop = self._stop_writeback

        def flush() -> None:
            try:
                while True:
                    last = stop.is_set()
                    os.fdatasync(duplicate)
                    if last or stop.wait(_WRITEBACK_INTERVAL):
                        break
            except OSError as exc:
                # A write-back error is reported once per open file description, which the duplicate shares:
                # keep it for sync(), which must not miss it.
                self._writeback_error = exc
            finally:
                os.close(duplicate)

        self._writeback = threading.Thread(target=flush, name="apk-writeback", daemon=True)
        self._writeback.start()

    def sync(self) -> None:
        """Make the written data durable before it is renamed into place."""
        if self._writeback is not None:
            self._stop_writeback.set()
            self._writeback.join()
            if self._writeback_error is not None:
                raise ApkSigningError(f"cannot write {self.path}: {self._writeback_error.strerror}")
        try:
            os.fchmod(self.fd, self._mode)
            os.fsync(self.fd)
        except OSError as exc:
            raise ApkSigningError(f"cannot write {self.path}: {exc.strerror}") from exc

    def commit(self) -> None:
        self.sync()
        os.close(self.fd)
        self.fd = -1
        try:
            os.replace(self.temp_path, self.path)
        except OSError as exc:
            raise ApkSigningError(f"cannot replace {self.path}: {exc.strerror}") from exc
        self._committed = True
        fsync_directory(self.path.parent)

    def discard(self) -> None:
        self._stop_writeback.set()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self._committed:
            with contextlib.suppress(FileNotFoundError):
                self.temp_path.unlink()

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def write_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    with AtomicOutput(path, mode=mode) as output:
        try:
            view = memoryview(data)
            while view:
                written = os.write(output.fd, view)
                view = view[written:]
        except OSError as exc:
            raise ApkSigningError(f"cannot write {output.path}: {exc.strerror}") from exc
        output.commit()


def _default_mode() -> int:
    """What open() would give a new file: 0666 minus the umask (mkstemp's 0600 is for secrets, not APKs)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
