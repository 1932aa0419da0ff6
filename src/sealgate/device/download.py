"""Fetching OTA packages and channel files for the device: resumable, bounded, checked against what the channel says.

A package download is kept as `<sha256>.zip.part` next to a small record of what it should become (URL, size,
SHA-256). An interrupted download keeps its partial file; the next run asks the server for the rest with an HTTP
Range request (`Range: bytes=N-`) and accepts the answer only when the Content-Range names exactly those bytes of a
file of the expected size; a server that ignores the range (200) is read from the start again. Nothing beyond the
expected size is ever written, and the finished file becomes `<sha256>.zip` only when its size and SHA-256 are the
channel's: a corrupted download is discarded. The hash covers the partial file's bytes too, read once at resume,
so memory stays bounded whatever the size.

file:// URLs and plain paths are read the same way (a channel on local storage or a USB drive). Integrity never
depends on the transport: the signature of the package is checked again when it is applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sealgate.durable import fsync_directory, replace_file
from sealgate.errors import DeviceError

_STEP = 1 << 20
_TIMEOUT = 30.0
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(DeviceError):
    """A URL could not be read (connection refused, HTTP error, missing file); the message says which and why."""


@dataclass(frozen=True)
class DownloadResult:
    """A download's outcome: `ok` with the finished file, or why not (the partial file is kept when resumable)."""

    ok: bool
    code: str
    reason: str
    path: Path | None
    size: int
    #: Bytes that were already on disk when this run started (0: a fresh download).
    resumed_from: int = 0
    #: Bytes this run received.
    received: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "code": self.code,
            "reason": self.reason,
            "path": os.fspath(self.path) if self.path is not None else None,
            "size": self.size,
            "resumed_from": self.resumed_from,
            "received": self.received,
        }


def resolve(base: str, reference: str) -> str:
    """A channel's relative file name resolved against where the channel came from (a URL or a path).

    The channel format only has relative references of plain segments, so a remote channel cannot point the device
    at a local file.
    """
    if _is_url(base):
        return urllib.parse.urljoin(base, reference)
    return os.fspath(Path(base).parent / reference)


def fetch_bytes(source: str, *, max_size: int) -> bytes:
    """A small document (a channel file) from a URL or a path; refused when it is larger than `max_size`."""
    with _open(source, 0) as (stream, _start, _total):
        data = stream.read(max_size + 1)
    if len(data) > max_size:
        raise FetchError(f"{source} is larger than {max_size} bytes; a channel file is never that big")
    return data


def download(url: str, directory: Path, *, size: int, sha256: str) -> DownloadResult:
    """Fetch `url` into `directory` as <sha256>.zip, resuming a partial file an earlier run left."""
    sha256 = sha256.lower()
    if not _SHA256.match(sha256) or size < 0:
        raise DeviceError(f"the channel's SHA-256 {sha256!r} or size {size} for {url} is not usable")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(f"cannot make the download directory {directory}: {exc.strerror}") from exc
    final = directory / f"{sha256}.zip"
    partial = directory / f"{sha256}.zip.part"
    record = directory / f"{sha256}.zip.part.json"
    if final.is_file() and final.stat().st_size == size and _file_sha256(final) == sha256:
        return DownloadResult(
            True, "ALREADY_DOWNLOADED", f"{final.name} is already downloaded and checked", final, size
        )
    expected = {"url": url, "size": size, "sha256": sha256}
    start = _resumable_length(partial, record, expected)
    if start == 0:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        replace_file(record, json.dumps(expected, sort_keys=True).encode())
    digest = hashlib.sha256()
    if start:
        _hash_into(digest, partial)
    received = 0
    try:
        if start == size:  # an earlier run received every byte but stopped before the check: nothing to fetch
            raise _Complete
        with _open(url, start) as (stream, offset, total):
            if total is not None and total != size:
                return _discard(partial, record, "SIZE_MISMATCH", f"{url} is {total} bytes; the channel says {size}")
            if offset != start:  # the server sent the whole file: start over
                digest, start = hashlib.sha256(), 0
            with open(partial, "r+b" if start else "wb") as target:
                target.seek(start)
                target.truncate()
                try:
                    received = _copy(stream, target, digest, size - start)
                finally:
                    target.flush()
                    os.fsync(target.fileno())
    except _Complete:
        pass
    except _TooLong:
        return _discard(partial, record, "CORRUPTED", f"{url} sent more than the {size} bytes the channel says")
    except _RangeMismatch as exc:
        return _discard(partial, record, "RANGE_MISMATCH", f"{url}: {exc}; the partial file was discarded")
    except FetchError as exc:
        kept = partial if start else None
        return DownloadResult(False, "FETCH_FAILED", f"{exc}; nothing more was downloaded", kept, size, start)
    except (OSError, http.client.HTTPException) as exc:
        have = partial.stat().st_size if partial.exists() else 0
        return DownloadResult(
            False,
            "INTERRUPTED",
            f"the download of {url} stopped at {have} of {size} bytes ({_describe(exc)}); run again to resume",
            partial,
            size,
            start,
            have - start,
        )
    have = start + received
    if have < size:
        return DownloadResult(
            False,
            "INTERRUPTED",
            f"the download of {url} stopped at {have} of {size} bytes; run again to resume",
            partial,
            size,
            start,
            received,
        )
    if digest.hexdigest() != sha256:
        return _discard(
            partial,
            record,
            "CORRUPTED",
            f"{url} does not have the SHA-256 the channel says (got {digest.hexdigest()[:16]}…, expected "
            f"{sha256[:16]}…); the download was discarded",
        )
    os.chmod(partial, 0o400)
    os.replace(partial, final)
    with contextlib.suppress(FileNotFoundError):
        record.unlink()
    fsync_directory(directory)
    code = "RESUMED" if start else "DOWNLOADED"
    how = f"resumed at byte {start}" if start else "downloaded"
    return DownloadResult(
        True, code, f"{final.name}: {how}, {size} bytes, SHA-256 checked", final, size, start, received
    )


class _TooLong(Exception):
    pass


class _Complete(Exception):
    pass


class _RangeMismatch(Exception):
    pass


def _resumable_length(partial: Path, record: Path, expected: dict[str, object]) -> int:
    """How many bytes of an earlier partial download can be kept (0 unless it was for exactly this file)."""
    try:
        recorded = json.loads(record.read_bytes())
        length = partial.stat().st_size
    except (OSError, ValueError):
        return 0
    if not isinstance(recorded, dict) or recorded.get("size") != expected["size"]:
        return 0
    if recorded.get("sha256") != expected["sha256"]:
        return 0
    size = expected["size"]
    assert isinstance(size, int)
    return length if length <= size else 0


def _discard(partial: Path, record: Path, code: str, reason: str) -> DownloadResult:
    for path in (partial, record):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return DownloadResult(False, code, reason, None, 0)


def _copy(stream: BinaryIO, target: BinaryIO, digest: hashlib._Hash, remaining: int) -> int:
    written = 0
    while True:
        chunk = stream.read(min(_STEP, remaining - written + 1))
        if not chunk:
            return written
        if written + len(chunk) > remaining:
            raise _TooLong
        target.write(chunk)
        digest.update(chunk)
        written += len(chunk)


def _hash_into(digest: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as reader:
        while chunk := reader.read(_STEP):
            digest.update(chunk)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def _is_url(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme in ("http", "https", "file")


@contextlib.contextmanager
def _open(source: str, start: int) -> Iterator[tuple[BinaryIO, int, int | None]]:
    """(stream positioned at the returned offset, that offset, the whole file's size when known)."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        request = urllib.request.Request(source, headers={"Range": f"bytes={start}-"} if start else {})
        try:
            response = urllib.request.urlopen(request, timeout=_TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:
                raise _RangeMismatch(f"the server cannot send bytes {start}- (416)") from None
            raise FetchError(f"{source}: the server answered {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise FetchError(f"cannot fetch {source}: {exc.reason}") from None
        with response:
            offset, total = _range_of(response, start)
            yield response, offset, total
        return
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path)) if scheme == "file" else Path(source)
    try:
        reader = path.open("rb")
    except OSError as exc:
        raise FetchError(f"cannot read {source}: {exc.strerror}") from None
    with reader:
        total = os.fstat(reader.fileno()).st_size
        reader.seek(start)
        yield reader, start, total


def _range_of(response: http.client.HTTPResponse, start: int) -> tuple[int, int | None]:
    if response.status == 206:
        header = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.match(header.strip())
        if match is None:
            raise _RangeMismatch(f"the server's Content-Range {header!r} is not a byte range")
        first, last, total_text = match.groups()
        total = int(total_text) if total_text != "*" else None
        if int(first) != start or int(last) < start or (total is not None and int(last) >= total):
            raise _RangeMismatch(f"asked for bytes {start}- but the server sent {header!r}")
        return start, total
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None and length.isdigit() else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed early"
    return str(exc) or type(exc).__name__
