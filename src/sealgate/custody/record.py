"""The signing record: an append-only, hash-chained log of every signature the custodian makes.

Auditors ask "what did this key ever sign?", and the answer must not depend on trusting whoever last had the file.
Each line is one JSON object in a canonical encoding (sorted keys, no spaces, ASCII only) holding the sequence
number, the UTC time, the key (role and certificate SHA-256), the artifact (name, SHA-256 of what was submitted and
of what was produced), the purpose, the algorithm, the bundle it came from, and the hash of the previous entry; its
own `hash` covers all of that. Editing, removing, inserting or reordering any entry therefore breaks the chain at
that line, and a crash mid-write leaves a last line without its newline, which `verify` reports as truncated.

A chain alone cannot show that entries were cut off the end, or that someone rewrote the whole file from some
point on and recomputed every hash after it: for that the head (the hash of the last entry) must be kept somewhere
else. `sign` prints the head after each session, the response bundle carries it to the online side, and
`verify(path, head=...)` checks that a head written down earlier is still part of the chain.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.durable import DuplicateKeyError, fsync_directory, unique_keys
from sealgate.errors import RecordError

#: `prev` of the first entry.
GENESIS = "0" * 64
#: Bound on one line: entries are a few hundred bytes, so anything longer is not an entry.
MAX_LINE = 64 * 1024
#: Domain separation: a record hash can never be mistaken for the hash of some other sealgate object.
_HASH_PREFIX = b"sealgate-signing-record-v1\n"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_STRING_FIELDS = ("time", "role", "certificate_sha256", "artifact", "artifact_sha256", "output_sha256")
_FIELDS = frozenset(
    {*_STRING_FIELDS, "seq", "purpose", "algorithm", "bundle_id", "prev", "hash"},
)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def utc_now() -> str:
    """The record's time format: UTC to the second, so two machines' clocks compare as strings."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One signature made by the custodian."""

    seq: int
    time: str
    role: str
    certificate_sha256: str
    artifact: str
    #: SHA-256 of what was submitted for signing (the unsigned APK, the file, or the digest itself).
    artifact_sha256: str
    #: SHA-256 of what the signature produced (the signed APK, or the detached signature's bytes).
    output_sha256: str
    purpose: str
    algorithm: str
    bundle_id: str
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field but `hash`: what the hash covers."""
        return {
            "seq": self.seq,
            "time": self.time,
            "role": self.role,
            "certificate_sha256": self.certificate_sha256,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "output_sha256": self.output_sha256,
            "purpose": self.purpose,
            "algorithm": self.algorithm,
            "bundle_id": self.bundle_id,
            "prev": self.prev,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    def line(self) -> bytes:
        """The entry exactly as it is stored: canonical JSON and a newline."""
        return _canonical(self.to_json()) + b"\n"

    def computed_hash(self) -> str:
        return entry_hash(self.body())

    @classmethod
    def create(cls, *, seq: int, prev: str, time: str | None = None, **fields: str) -> RecordEntry:
        """A new entry with its hash computed; `fields` are the string fields and purpose/algorithm/bundle_id."""
        body: dict[str, Any] = {"seq": seq, "time": time or utc_now(), "prev": prev, **fields}
        _check_fields({**body, "hash": GENESIS})
        return cls(**body, hash=entry_hash(body))

    @classmethod
    def from_json(cls, obj: object) -> RecordEntry:
        """Parse one entry; RecordError says what is wrong with its shape (its hash is not checked here)."""
        if not isinstance(obj, dict):
            raise RecordError("a record entry must be a JSON object")
        _check_fields(obj)
        return cls(**obj)


def entry_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(_HASH_PREFIX + _canonical(body)).hexdigest()


def _check_fields(obj: dict[str, Any]) -> None:
    keys = set(obj)
    if keys != _FIELDS:
        missing, extra = sorted(_FIELDS - keys), sorted(keys - _FIELDS)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise RecordError(f"a record entry has the wrong fields ({'; '.join(parts)})")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise RecordError(f"a record entry's seq must be a positive integer, not {seq!r}")
    for name in (*_STRING_FIELDS, "purpose", "algorithm", "bundle_id", "prev", "hash"):
        if not isinstance(obj[name], str) or not obj[name]:
            raise RecordError(f"a record entry's {name} must be a non-empty string")
    for name in ("certificate_sha256", "artifact_sha256", "output_sha256", "prev", "hash"):
        if not _HEX64.match(obj[name]):
            raise RecordError(f"a record entry's {name} must be 64 lowercase hex digits")
    if not _TIME.match(obj["time"]):
        raise RecordError(f"a record entry's time must look like 2025-01-31T12:00:00Z, not {obj['time']!r}")


# -- verification ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordIssue:
    """What is wrong, and on which line (1-based; None when it concerns the whole record)."""

    line: int | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


@dataclass(slots=True)
class RecordReport:
    """The verdict on a record file. `entries` counts the entries that verified before the first bad line."""

    path: str
    entries: int = 0
    #: Hash of the last entry that verified (the head when the record is intact), None for an empty record.
    head: str | None = None
    issues: list[RecordIssue] = field(default_factory=list)
    #: The head the caller expected, and how many entries were appended after it (None when not found/not given).
    expected_head: str | None = None
    entries_after_head: int | None = None

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def first_bad_line(self) -> int | None:
        return next((issue.line for issue in self.issues if issue.line is not None), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "verified": self.ok,
            "entries": self.entries,
            "head": self.head,
            "first_bad_line": self.first_bad_line,
            "expected_head": self.expected_head,
            "entries_after_head": self.entries_after_head,
            "issues": [issue.to_json() for issue in self.issues],
        }


def verify(path: str | os.PathLike[str], head: str | None = None) -> RecordReport:
    """Check the whole chain of the record at `path`, stopping at the first bad line.

    `head` is a hash written down earlier (after a signing session): it must be the hash of some entry in the chain,
    or entries were removed from the end or the record was rewritten. Raises RecordError only when the file cannot
    be read at all; every problem with its content is an issue in the report.
    """
    report = RecordReport(os.fspath(path), expected_head=head)
    if head is not None and not _HEX64.match(head):
        raise RecordError(f"--head must be 64 lowercase hex digits (a hash `sealgate sign` printed), not {head!r}")
    try:
        with open(path, "rb") as handle:
            lines = _lines(handle, report)
            hashes = _verify_lines(lines, report)
    except FileNotFoundError as exc:
        raise RecordError(f"no signing record at {os.fspath(path)!r}") from exc
    except OSError as exc:
        raise RecordError(f"cannot read the signing record {os.fspath(path)!r}: {exc.strerror}") from exc
    if head is not None:
        if head in hashes:
            report.entries_after_head = len(hashes) - 1 - hashes.index(head)
        elif report.ok:
            report.issues.append(
                RecordIssue(
                    None,
                    "HEAD_NOT_FOUND",
                    f"the head {head} is not in the record: entries were removed from its end, or it was rewritten "
                    "and every hash recomputed",
                )
            )
        else:
            report.issues.append(
                RecordIssue(None, "HEAD_NOT_FOUND", f"the head {head} is not among the entries that verified")
            )
    return report


def _lines(handle: Any, report: RecordReport) -> Iterable[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, whether the newline was there) for each line of the file."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE + 1)
        if not raw:
            return
        number += 1
        complete = raw.endswith(b"\n")
        if not complete and len(raw) > MAX_LINE:
            report.issues.append(RecordIssue(number, "MALFORMED", f"line {number} is longer than any record entry"))
            return
        yield number, raw[:-1] if complete else raw, complete


def _verify_lines(lines: Iterable[tuple[int, bytes, bool]], report: RecordReport) -> list[str]:
    hashes: list[str] = []
    previous = GENESIS
    for number, raw, complete in lines:
        issue = _check_line(number, raw, complete, len(hashes) + 1, previous)
        if isinstance(issue, RecordIssue):
            report.issues.append(issue)
            break
        previous = issue.hash
        hashes.append(issue.hash)
        report.entries = len(hashes)
        report.head = issue.hash
    return hashes


def _check_line(number: int, raw: bytes, complete: bool, expected_seq: int, previous: str) -> RecordIssue | RecordEntry:
    if not complete:
        return RecordIssue(
            number,
            "TRUNCATED",
            f"line {number} ends without a newline: the last write was cut short (a crash or a full disk) "
            "or the file was truncated",
        )
    try:
        obj = json.loads(raw.decode("ascii"), object_pairs_hook=unique_keys)
        entry = RecordEntry.from_json(obj)
    except (UnicodeDecodeError, ValueError, RecordError) as exc:
        reason = str(exc) if isinstance(exc, RecordError | DuplicateKeyError) else "it is not valid JSON"
        return RecordIssue(number, "MALFORMED", f"line {number} is not a record entry: {reason}")
    if entry.line() != raw + b"\n":
        return RecordIssue(
            number, "EDITED", f"line {number} (entry {entry.seq}) is not in canonical form: it was edited by hand"
        )
    if entry.computed_hash() != entry.hash:
        return RecordIssue(
            number,
            "EDITED",
            f"line {number} (entry {entry.seq}) was changed after it was written: its hash does not match its content",
        )
    if entry.seq != expected_seq:
        return RecordIssue(
            number,
            "OUT_OF_SEQUENCE",
            f"line {number} holds entry {entry.seq} where entry {expected_seq} belongs: entries were removed, "
            "inserted or reordered before this line",
        )
    if entry.prev != previous:
        return RecordIssue(
            number,
            "BROKEN_CHAIN",
            f"line {number} (entry {entry.seq}) does not follow the entry before it (its prev hash differs): "
            "entries were removed, inserted or reordered before this line",
        )
    return entry


def check_segment(entries: Sequence[RecordEntry]) -> str | None:
    """Why `entries` are not a contiguous, untouched piece of some record, or None when they are.

    Used online, where only the entries a response bundle carries are at hand, not the whole record.
    """
    for index, entry in enumerate(entries):
        if entry.computed_hash() != entry.hash:
            return f"record entry {entry.seq} was changed: its hash does not match its content"
        if index:
            before = entries[index - 1]
            if entry.seq != before.seq + 1 or entry.prev != before.hash:
                return f"record entry {entry.seq} does not follow entry {before.seq} in the chain"
    return None


# -- appending -------------------------------------------------------------------------------------------------------


def head(path: str | os.PathLike[str]) -> RecordEntry | None:
    """The last entry of the record (checked for shape and hash only), or None when there is no record yet."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordError(f"cannot read the signing record {os.fspath(path)!r}: {exc.strerror}") from exc
    try:
        return _tail(fd, os.fspath(path))
    finally:
        os.close(fd)


def append(path: str | os.PathLike[str], *, time: str | None = None, **fields: str) -> RecordEntry:
    """Append one entry chained onto the current last one, and make it durable before returning.

    `fields`: role, certificate_sha256, artifact, artifact_sha256, output_sha256, purpose, algorithm, bundle_id.
    The file is opened with O_APPEND and locked, so two sessions never interleave; the line goes out in one write
    and is fsynced (and the directory too when the file was just created). A write that fails half-way (a full
    disk) is truncated away again, so the record is left as it was. A record whose last line is truncated or
    altered is refused: appending to it would hide the damage behind a fresh, valid-looking entry.
    """
    name = os.fspath(path)
    created = not os.path.exists(name)
    try:
        fd = os.open(name, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise RecordError(f"cannot open the signing record {name!r} for appending: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = _tail(fd, name)
        entry = RecordEntry.create(
            seq=1 if last is None else last.seq + 1,
            prev=GENESIS if last is None else last.hash,
            time=time,
            **fields,
        )
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, entry.line(), name)
            os.fsync(fd)
        except OSError:
            # Take back a partly written line (a full disk): the record stays as it was, not torn.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise
    except OSError as exc:
        hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
        raise RecordError(f"cannot append to the signing record {name!r}: {exc.strerror}{hint}") from exc
    finally:
        os.close(fd)
    if created:
        fsync_directory(Path(name).resolve().parent)
    return entry


def _write_all(fd: int, data: bytes, name: str) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise RecordError(f"cannot append to the signing record {name!r}: nothing was written")
        view = view[written:]


def _tail(fd: int, name: str) -> RecordEntry | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - MAX_LINE - 1)
    chunk = os.pread(fd, size - start, start)
    if not chunk.endswith(b"\n"):
        raise RecordError(
            f"the last line of the signing record {name!r} is truncated; run `sealgate record verify {name}` "
            "and repair the record before signing again"
        )
    body = chunk[:-1]
    cut = body.rfind(b"\n")
    if cut < 0 and start > 0:
        raise RecordError(f"the last line of the signing record {name!r} is longer than any record entry")
    line = body[cut + 1 :]
    try:
        entry = RecordEntry.from_json(json.loads(line.decode("ascii"), object_pairs_hook=unique_keys))
    except (UnicodeDecodeError, ValueError, RecordError) as exc:
        raise RecordError(f"the last entry of the signing record {name!r} is malformed: {exc}") from exc
    if entry.line() != line + b"\n" or entry.computed_hash() != entry.hash:
        raise RecordError(
            f"the last entry of the signing record {name!r} was altered; run `sealgate record verify {name}`"
        )
    return entry
