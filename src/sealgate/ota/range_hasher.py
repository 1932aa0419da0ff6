"""Hashing a file front to back on another thread while it is still being written.

A whole-file signature covers one sequential range, so its hash cannot be split across cores the way APK chunk
digests are; what can be overlapped is the hashing with the writing. The signer copies the package's entries and
reports, step by step, how far the output is final (`advance`); this hasher's thread follows behind, hashing the
output file itself (what is hashed is what was written), read a step at a time into a reused buffer (`FileRanges`)
while the pages are still in the shared cache, so memory stays at one step (1 MiB) whatever the package's size.
"""

from __future__ import annotations

import hashlib
import queue
import threading

from sealgate.filerange import FileRanges

#: Bytes read and hashed at a time, and the step the writer should report progress in: small enough that the hash
#: reads what the copy has just written while it is still in the shared cache (a step behind, on the other core).
HASH_STEP = 1024 * 1024


class FollowingHasher:
    """The `hash_name` digest of the file behind `fd` from offset 0, hashed on a thread as `advance` allows."""

    def __init__(self, fd: int, hash_name: str) -> None:
        self._fd = fd
        self._hasher = hashlib.new(hash_name)
        self._hashed = 0
        self._reported = 0
        self._pending: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"ota-{hash_name}", daemon=True)
        self._thread.start()

    def advance(self, final: int) -> None:
        """Every byte of the file before `final` is written for good (called from the writing thread)."""
        if final > self._reported:
            self._reported = final
            self._pending.put(final)

    def finish(self, end: int) -> bytes:
        """The digest of the file's first `end` bytes, once the thread has hashed them."""
        self.advance(end)
        self._pending.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._hashed != end:
            raise OSError(f"the output ends at {self._hashed}, before the {end} bytes written")
        return self._hasher.digest()

    def cancel(self) -> None:
        """Stop the thread (after an error in the writer); the digest is then meaningless."""
        self._pending.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            while (final := self._pending.get()) is not None:
                while self._hashed < final:
                    self._hash(self._hashed, min(final, self._hashed + HASH_STEP))
        except BaseException as exc:  # handed to the writing thread, which raises it
            self._error = exc

    def _hash(self, start: int, end: int) -> None:
        with FileRanges(self._fd, end) as ranges, ranges.view(start, end - start) as view:
            self._hasher.update(view)
        self._hashed = end
