"""Hashing a file front to back on another thread while it is still being written.

A whole-file signature covers one sequential range, so its hash cannot be split across cores the way APK chunk
digests are; what can be overlapped is the hashing with the writing. The signer copies the package's entries and
reports, step by step, how far the output is final (`advance`); each step is read back from the output file itself
(what is hashed is what was written) into one of a few reused buffers while its pages are still in the shared cache,
and this hasher's thread hashes it, so memory stays at a few steps (8 MiB) whatever the package's size.
"""

from __future__ import annotations

import hashlib
import queue
import threading

from sealgate.filerange import read_into

#: Bytes read and hashed at a time, and the step the writer should report progress in: small enough that the hash
#: reads what the copy has just written while it is still in the shared cache (a step behind, on the other core).
HASH_STEP = 1024 * 1024


#: Steps read back but not yet hashed, at most: the writer waits for a free buffer beyond that (bounded memory).
_BUFFERS = 8


class FollowingHasher:
    """The `hash_name` digest of the file behind `fd` from offset 0, hashed on a thread as `advance` allows.

    The work is split by which side has time to spare: the hash is the slower of the two (one sequential SHA pass),
    so the writing thread reads each step back from the file into a free buffer itself, and the hash thread does
    nothing but hash. What is hashed is still what the file holds, read after it was written.
    """

    def __init__(self, fd: int, hash_name: str) -> None:
        self._fd = fd
        self._hasher = hashlib.new(hash_name)
        self._read = 0
        self._hashed = 0
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_BUFFERS):
            self._free.put(bytearray(HASH_STEP))
        self._pending: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"ota-{hash_name}", daemon=True)
        self._thread.start()

    def advance(self, final: int) -> None:
        """Every byte of the file before `final` is written for good: read it back for the hash thread.

        Called from the writing thread only; it waits when the hash is `_BUFFERS` steps behind.
        """
        while self._read < final:
            buffer = self._free.get()
            length = min(HASH_STEP, final - self._read)
            with memoryview(buffer) as whole, whole[:length] as target:
                got = read_into(self._fd, target, self._read)
            if got != length:
                self._free.put(buffer)
                raise OSError(f"the output ends at {self._read + got}, before the {final} bytes written")
            self._pending.put((buffer, length))
            self._read += length

    def finish(self, end: int) -> bytes:
        """The digest of the file's first `end` bytes, once the thread has hashed them."""
        self.advance(end)
        self._stop()
        if self._error is not None:
            raise self._error
        if self._hashed != end:
            raise OSError(f"{self._hashed} bytes of the output were hashed, not the {end} written")
        return self._hasher.digest()

    def cancel(self) -> None:
        """Stop the thread (after an error in the writer); the digest is then meaningless."""
        self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (item := self._pending.get()) is not None:
            buffer, length = item
            try:
                if self._error is None:
                    with memoryview(buffer) as whole, whole[:length] as view:
                        self._hasher.update(view)
                    self._hashed += length
            except BaseException as exc:  # handed to the writing thread, which raises it
                self._error = exc
            finally:
                self._free.put(buffer)
