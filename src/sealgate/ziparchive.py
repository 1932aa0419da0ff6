"""Strict ZIP reading, shared by the APK and OTA code.

Python's `zipfile` is lenient: it tolerates bytes before the first entry (the Janus attack), duplicate names (the
Master Key attack), local headers that disagree with the central directory, and trailing garbage. Android's
libziparchive refuses all of these, so a verifier built on `zipfile` would accept files the device rejects, or worse,
read different bytes than the device installs. This module locates the end-of-central-directory record (with comment
and ZIP64), reads the central directory and every local header itself, and checks them against each other.

Two kinds of problem are told apart:

* structural damage that leaves nothing to verify (no EOCD, a central directory out of range, a local header that is
  missing or disagrees with its central record) raises `ZipFormatError`;
* constructs that parse but that Android refuses to install (Janus prefix, duplicate names, control characters in
  names, overlapping entries, garbage before the EOCD) are listed in `ZipArchive.violations`, so that a verifier can
  report them as reasons for a failed verdict. `ZipArchive.open(..., strict=True)` raises on them instead.

Reads use `os.pread` on one descriptor, so an archive can be shared by threads and never loaded whole.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import cast

# ISA-L inflates raw deflate streams about twice as fast as zlib, and inflating is most of the cost of checking v1
# signatures on deflated entries; the streams and errors are the same.
from isal import isal_zlib as _inflate

from sealgate.errors import FormatError, ZipBombError, ZipFormatError
from sealgate.filerange import FileRanges

#: isal's stub declares `error` as an instance; it is the exception class raised on a corrupt stream.
_INFLATE_ERROR = cast("type[Exception]", _inflate.error)

EOCD_SIGNATURE = 0x06054B50
EOCD_SIZE = 22
ZIP64_EOCD_LOCATOR_SIGNATURE = 0x07064B50
ZIP64_EOCD_LOCATOR_SIZE = 20
ZIP64_EOCD_SIGNATURE = 0x06064B50
ZIP64_EOCD_MIN_SIZE = 56
CD_SIGNATURE = 0x02014B50
CD_FIXED_SIZE = 46
LFH_SIGNATURE = 0x04034B50
LFH_FIXED_SIZE = 30
DATA_DESCRIPTOR_SIGNATURE = 0x08074B50
ZIP64_EXTRA_ID = 0x0001
MAX_COMMENT = 0xFFFF

METHOD_STORED = 0
METHOD_DEFLATED = 8
FLAG_ENCRYPTED = 0x0001
FLAG_DATA_DESCRIPTOR = 0x0008

#: Default bound on the inflated size of one entry read into memory.
DEFAULT_MAX_ENTRY_SIZE = 256 * 1024 * 1024
_READ_CHUNK = 4 * 1024 * 1024
#: Compressed (or stored) bytes read at a time: small enough to stay in a core's cache while hashed or inflated.
_RAW_CHUNK = 1024 * 1024

_EOCD = struct.Struct("<IHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_ZIP64_EOCD = struct.Struct("<IQHHIIQQQQ")
_CD = struct.Struct("<IHHHHHHIIIHHHHHII")
_LFH = struct.Struct("<IHHHHHIIIHH")


@dataclass(frozen=True, slots=True)
class ZipViolation:
    """A construct that parses but that Android refuses; `code` is stable, `message` is for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One entry, as agreed by its central directory record and its local file header."""

    name: str
    raw_name: bytes
    method: int
    flags: int
    crc32: int
    compressed_size: int
    uncompressed_size: int
    local_header_offset: int
    data_offset: int
    #: Offset just past the entry's data and data descriptor, if any.
    end_offset: int

    @property
    def is_directory(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True, slots=True)
class ZipSections:
    """Where the parts of the archive lie; APK signing needs these offsets exactly."""

    file_size: int
    cd_offset: int
    cd_size: int
    cd_record_count: int
    eocd_offset: int
    #: Offset of the ZIP64 end-of-central-directory record, or None for a plain archive.
    zip64_eocd_offset: int | None
    comment: bytes


class ZipArchive:
    """A ZIP archive opened for strict, random-access reading.

    Use `ZipArchive.open(path)` as a context manager. Entries keep central-directory order; `entry(name)` finds one
    by name (the first one, if duplicates were allowed through as violations).
    """

    def __init__(self, fd: int, sections: ZipSections, entries: list[ZipEntry], violations: list[ZipViolation]):
        self._fd = fd
        self._ranges: FileRanges | None = None
        self.sections = sections
        self.entries: tuple[ZipEntry, ...] = tuple(entries)
        self.violations: tuple[ZipViolation, ...] = tuple(violations)
        self._by_name: dict[str, ZipEntry] = {}
        for entry in entries:
            self._by_name.setdefault(entry.name, entry)

    # -- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, strict: bool = False) -> ZipArchive:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; the regular-file check below refuses it.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise ZipFormatError(f"cannot open {os.fspath(path)!r}: {exc.strerror}") from exc
        try:
            if not _is_regular_file(fd):
                raise ZipFormatError(f"{os.fspath(path)!r} is not a regular file")
            archive = cls.from_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        if strict and archive.violations:
            archive.close()
            raise ZipFormatError(archive.violations[0].message)
        return archive

    @classmethod
    def from_fd(cls, fd: int) -> ZipArchive:
        """Parse the archive behind an open descriptor; the archive owns the descriptor from now on."""
        size = os.fstat(fd).st_size
        sections = _locate_sections(fd, size)
        violations: list[ZipViolation] = []
        entries = _read_central_directory(fd, sections, violations)
        _check_layout(entries, sections, violations)
        return cls(fd, sections, entries, violations)

    def close(self) -> None:
        if self._ranges is not None:
            self._ranges.close()
            self._ranges = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ZipArchive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------------

    @property
    def fileno(self) -> int:
        return self._fd

    def entry(self, name: str) -> ZipEntry | None:
        return self._by_name.get(name)

    def pread(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`, or ZipFormatError if the file is shorter."""
        return _pread_exact(self._fd, offset, length)

    def iter_data(
        self, entry: ZipEntry, *, max_size: int | None = None, check_crc: bool = True
    ) -> Iterator[bytes | memoryview]:
        """Yield the uncompressed bytes of `entry` in chunks, checking size and CRC-32 at the end.

        Stored entries come as views of a reused read buffer (`FileRanges`), each valid only until the iterator
        advances: hash or copy a chunk before asking for the next one. `check_crc=False` is for callers that
        authenticate the bytes themselves (the JAR signature's digests), as Android's StrictJarFile does not check
        CRC-32 either; sizes are still enforced.

        Memory stays bounded whatever the entry declares; inflating past `max_size` (or past the declared size)
        raises ZipBombError, and a corrupt stream raises ZipFormatError.
        """
        if entry.flags & FLAG_ENCRYPTED:
            raise ZipFormatError(f"entry {entry.name!r} is encrypted, which Android does not support")
        limit = entry.uncompressed_size if max_size is None else min(max_size, entry.uncompressed_size)
        if max_size is not None and entry.uncompressed_size > max_size:
            raise ZipBombError(
                f"entry {entry.name!r} declares {entry.uncompressed_size} bytes, over the limit of {max_size}"
            )
        crc = 0
        produced = 0
        if entry.method == METHOD_STORED:
            for chunk in self._iter_raw(entry):
                if check_crc:
                    crc = zlib.crc32(chunk, crc)
                produced += len(chunk)
                yield chunk
        elif entry.method == METHOD_DEFLATED:
            inflater = _inflate.decompressobj(-15)
            try:
                for raw in self._iter_raw(entry):
                    data = inflater.decompress(raw, _READ_CHUNK)
                    while True:
                        if data:
                            produced += len(data)
                            if produced > limit:
                                raise _inflated_too_far(entry, limit)
                            if check_crc:
                                crc = zlib.crc32(data, crc)
                            yield data
                        if not inflater.unconsumed_tail:
                            break
                        data = inflater.decompress(inflater.unconsumed_tail, _READ_CHUNK)
                    if inflater.eof:
                        break
                tail = inflater.flush()
            except _INFLATE_ERROR as exc:
                raise ZipFormatError(f"entry {entry.name!r} has a corrupt deflate stream: {exc}") from exc
            if tail:
                produced += len(tail)
                if produced > limit:
                    raise _inflated_too_far(entry, limit)
                if check_crc:
                    crc = zlib.crc32(tail, crc)
                yield tail
            if not inflater.eof:
                raise ZipFormatError(f"entry {entry.name!r} has a truncated deflate stream")
        else:
            raise ZipFormatError(f"entry {entry.name!r} uses compression method {entry.method}, which is unsupported")
        if produced != entry.uncompressed_size:
            raise ZipFormatError(
                f"entry {entry.name!r} inflates to {produced} bytes but declares {entry.uncompressed_size}"
            )
        if check_crc and crc != entry.crc32:
            raise ZipFormatError(f"entry {entry.name!r} fails its CRC-32 check")

    def read(self, entry: ZipEntry, *, max_size: int = DEFAULT_MAX_ENTRY_SIZE) -> bytes:
        """The whole uncompressed entry, bounded by `max_size`."""
        return b"".join(bytes(chunk) for chunk in self.iter_data(entry, max_size=max_size))

    def _iter_raw(self, entry: ZipEntry) -> Iterator[memoryview]:
        if self._ranges is None:
            self._ranges = FileRanges(self._fd, self.sections.file_size)
        offset = entry.data_offset
        end = entry.data_offset + entry.compressed_size
        while offset < end:
            length = min(_RAW_CHUNK, end - offset)
            try:
                with self._ranges.view(offset, length) as chunk:
                    yield chunk
            except FormatError as exc:
                raise ZipFormatError(f"data of entry {entry.name!r} lies outside the file: {exc}") from exc
            offset += length


# -- parsing -----------------------------------------------------------------------------------------------------


def not_a_zip_reason(exc: Exception) -> str:
    """Why a file could not be opened as an archive, saying "not a ZIP archive" once: the reader's own messages for
    a missing end record already start with it, other failures (an unreadable file, a bad local header) do not."""
    text = str(exc)
    return text if text.startswith("not a ZIP archive") else f"not a ZIP archive: {text}"


def _is_regular_file(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def _inflated_too_far(entry: ZipEntry, limit: int) -> ZipBombError:
    return ZipBombError(
        f"entry {entry.name!r} inflates past {limit} bytes (declared {entry.uncompressed_size}); refusing to go on"
    )


def _pread_exact(fd: int, offset: int, length: int) -> bytes:
    if offset < 0 or length < 0:
        raise ZipFormatError(f"read out of range at offset {offset}")
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise ZipFormatError(f"file ends early: wanted {length} bytes at offset {offset}, got {len(data)}")
    return data


def _locate_sections(fd: int, size: int) -> ZipSections:
    """Find the EOCD the way libziparchive does: the last signature in the tail, with an exact comment length."""
    if size < EOCD_SIZE:
        raise ZipFormatError(f"not a ZIP archive: only {size} bytes")
    tail_len = min(size, EOCD_SIZE + MAX_COMMENT)
    tail = _pread_exact(fd, size - tail_len, tail_len)
    signature = struct.pack("<I", EOCD_SIGNATURE)
    index = tail.rfind(signature, 0, tail_len - EOCD_SIZE + 4)
    if index < 0 or index > tail_len - EOCD_SIZE:
        raise ZipFormatError("not a ZIP archive: no end-of-central-directory record")
    eocd_offset = size - tail_len + index
    (_, disk, cd_disk, disk_entries, total_entries, cd_size, cd_offset, comment_len) = _EOCD.unpack_from(tail, index)
    if eocd_offset + EOCD_SIZE + comment_len != size:
        raise ZipFormatError(
            f"not a ZIP archive: end-of-central-directory comment length {comment_len} does not reach the end of "
            f"the file ({size - eocd_offset - EOCD_SIZE} bytes follow the record)"
        )
    comment = tail[index + EOCD_SIZE : index + EOCD_SIZE + comment_len]
    zip64_offset: int | None = None
    cd_end_limit = eocd_offset
    needs_zip64 = cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF or total_entries == 0xFFFF
    if eocd_offset >= ZIP64_EOCD_LOCATOR_SIZE:
        locator = _pread_exact(fd, eocd_offset - ZIP64_EOCD_LOCATOR_SIZE, ZIP64_EOCD_LOCATOR_SIZE)
        loc_sig, _, z64_offset, _ = _ZIP64_LOCATOR.unpack(locator)
        if loc_sig == ZIP64_EOCD_LOCATOR_SIGNATURE:
            if z64_offset + ZIP64_EOCD_MIN_SIZE > eocd_offset - ZIP64_EOCD_LOCATOR_SIZE:
                raise ZipFormatError("ZIP64 end-of-central-directory locator points out of range")
            record = _pread_exact(fd, z64_offset, ZIP64_EOCD_MIN_SIZE)
            (z_sig, z_size, _, _, disk, cd_disk, disk_entries, total_entries, cd_size, cd_offset) = _ZIP64_EOCD.unpack(
                record
            )
            if z_sig != ZIP64_EOCD_SIGNATURE:
                raise ZipFormatError("ZIP64 end-of-central-directory record has a bad signature")
            if z64_offset + 12 + z_size != eocd_offset - ZIP64_EOCD_LOCATOR_SIZE:
                raise ZipFormatError("ZIP64 end-of-central-directory record size does not match its locator")
            zip64_offset = z64_offset
            cd_end_limit = z64_offset
        elif needs_zip64:
            raise ZipFormatError("archive needs ZIP64 but has no ZIP64 end-of-central-directory locator")
    elif needs_zip64:
        raise ZipFormatError("archive needs ZIP64 but has no ZIP64 end-of-central-directory locator")
    if disk != 0 or cd_disk != 0 or disk_entries != total_entries:
        raise ZipFormatError("multi-disk (spanned) archives are not supported")
    if cd_offset > cd_end_limit or cd_size > cd_end_limit - cd_offset:
        raise ZipFormatError(
            f"not a ZIP archive: central directory (offset {cd_offset}, size {cd_size}) lies outside the file"
        )
    if total_entries * CD_FIXED_SIZE > cd_size:
        raise ZipFormatError(
            f"central directory of {cd_size} bytes cannot hold the {total_entries} entries the EOCD declares"
        )
    return ZipSections(size, cd_offset, cd_size, total_entries, eocd_offset, zip64_offset, comment)


def _read_central_directory(fd: int, sections: ZipSections, violations: list[ZipViolation]) -> list[ZipEntry]:
    cd = _pread_exact(fd, sections.cd_offset, sections.cd_size)
    entries: list[ZipEntry] = []
    seen: set[str] = set()
    pos = 0
    for index in range(sections.cd_record_count):
        if pos + CD_FIXED_SIZE > len(cd):
            raise ZipFormatError(f"central directory record #{index} is truncated")
        fields = _CD.unpack_from(cd, pos)
        (
            sig,
            _made_by,
            _needed,
            flags,
            method,
            _time,
            _date,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            _disk_start,
            _int_attr,
            _ext_attr,
            lfh_offset,
        ) = fields
        if sig != CD_SIGNATURE:
            raise ZipFormatError(f"central directory record #{index} has a bad signature")
        var_end = pos + CD_FIXED_SIZE + name_len + extra_len + comment_len
        if var_end > len(cd):
            raise ZipFormatError(f"central directory record #{index} runs past the central directory")
        raw_name = cd[pos + CD_FIXED_SIZE : pos + CD_FIXED_SIZE + name_len]
        extra = cd[pos + CD_FIXED_SIZE + name_len : pos + CD_FIXED_SIZE + name_len + extra_len]
        pos = var_end
        if usize == 0xFFFFFFFF or csize == 0xFFFFFFFF or lfh_offset == 0xFFFFFFFF:
            usize, csize, lfh_offset = _apply_zip64_extra(extra, usize, csize, lfh_offset, raw_name)
        name = raw_name.decode("utf-8", errors="surrogateescape")
        if any(c in raw_name for c in (0, 0x0A, 0x0D)):
            violations.append(ZipViolation("ZIP_BAD_ENTRY_NAME", f"entry name {name!r} contains a NUL, CR or LF"))
        elif not _is_utf8(raw_name):
            violations.append(ZipViolation("ZIP_BAD_ENTRY_NAME", f"entry name {name!r} is not valid UTF-8"))
        if name in seen:
            violations.append(ZipViolation("ZIP_DUPLICATE_ENTRY", f"entry name {name!r} appears more than once"))
        seen.add(name)
        if method == METHOD_STORED and csize != usize:
            raise ZipFormatError(f"stored entry {name!r} has different compressed and uncompressed sizes")
        entries.append(
            _read_local_header(fd, sections, raw_name, name, flags, method, crc, csize, usize, lfh_offset, violations)
        )
    if pos != len(cd):
        violations.append(
            ZipViolation("ZIP_CD_SIZE_MISMATCH", f"central directory has {len(cd) - pos} bytes after its last record")
        )
    return entries


def _is_utf8(raw: bytes) -> bool:
    """libziparchive's IsValidEntryName accepts only well-formed UTF-8 (and no NUL)."""
    try:
        raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _apply_zip64_extra(extra: bytes, usize: int, csize: int, lfh_offset: int, raw_name: bytes) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if header_id != ZIP64_EXTRA_ID:
            continue
        values = [usize, csize, lfh_offset]
        cursor = 0
        for i, value in enumerate(values):
            if value == 0xFFFFFFFF:
                if cursor + 8 > len(body):
                    raise ZipFormatError(f"ZIP64 extra field of {raw_name!r} is truncated")
                values[i] = struct.unpack_from("<Q", body, cursor)[0]
                cursor += 8
        return values[0], values[1], values[2]
    raise ZipFormatError(f"entry {raw_name!r} needs a ZIP64 extra field but has none")


def _read_local_header(
    fd: int,
    sections: ZipSections,
    raw_name: bytes,
    name: str,
    flags: int,
    method: int,
    crc: int,
    csize: int,
    usize: int,
    lfh_offset: int,
    violations: list[ZipViolation],
) -> ZipEntry:
    if lfh_offset + LFH_FIXED_SIZE > sections.cd_offset:
        raise ZipFormatError(f"local header of {name!r} lies outside the entry area")
    header = _pread_exact(fd, lfh_offset, LFH_FIXED_SIZE)
    (sig, _needed, l_flags, l_method, _time, _date, l_crc, l_csize, l_usize, l_name_len, l_extra_len) = _LFH.unpack(
        header
    )
    if sig != LFH_SIGNATURE:
        raise ZipFormatError(f"local header of {name!r} at offset {lfh_offset} has a bad signature")
    l_name = _pread_exact(fd, lfh_offset + LFH_FIXED_SIZE, l_name_len) if l_name_len else b""
    mismatch = ""
    if l_name != raw_name:
        mismatch = f"local header name {l_name!r} differs from central directory name {raw_name!r}"
    elif l_method != method:
        mismatch = f"local header of {name!r} declares method {l_method}, central directory {method}"
    elif (l_flags ^ flags) & (FLAG_ENCRYPTED | FLAG_DATA_DESCRIPTOR):
        mismatch = f"local header of {name!r} disagrees with the central directory on encryption or data descriptor"
    elif not flags & FLAG_DATA_DESCRIPTOR:
        zip64_local = l_csize == 0xFFFFFFFF and l_usize == 0xFFFFFFFF
        if l_crc != crc or (not zip64_local and (l_csize != csize or l_usize != usize)):
            mismatch = f"local header of {name!r} disagrees with the central directory on CRC-32 or sizes"
    if mismatch:
        violations.append(ZipViolation("ZIP_LOCAL_HEADER_MISMATCH", mismatch))
    data_offset = lfh_offset + LFH_FIXED_SIZE + l_name_len + l_extra_len
    end = data_offset + csize
    if flags & FLAG_DATA_DESCRIPTOR:
        end += _data_descriptor_size(fd, end, sections, csize, usize)
    if end > sections.cd_offset:
        raise ZipFormatError(f"data of entry {name!r} runs past the start of the central directory")
    return ZipEntry(name, raw_name, method, flags, crc, csize, usize, lfh_offset, data_offset, end)


def _data_descriptor_size(fd: int, offset: int, sections: ZipSections, csize: int, usize: int) -> int:
    """Size of the data descriptor at `offset`: optional signature, CRC, then 32- or 64-bit sizes."""
    available = sections.cd_offset - offset
    probe = os.pread(fd, min(24, max(available, 0)), offset)
    has_sig = len(probe) >= 4 and struct.unpack_from("<I", probe)[0] == DATA_DESCRIPTOR_SIGNATURE
    base = 4 if has_sig else 0
    wide = csize >= 0xFFFFFFFF or usize >= 0xFFFFFFFF
    size = base + (20 if wide else 12)
    if size > available:
        raise ZipFormatError("data descriptor runs past the start of the central directory")
    return size


def _check_layout(entries: list[ZipEntry], sections: ZipSections, violations: list[ZipViolation]) -> None:
    if entries:
        first = min(entry.local_header_offset for entry in entries)
        if first != 0:
            violations.append(
                ZipViolation(
                    "ZIP_DATA_BEFORE_FIRST_ENTRY",
                    f"{first} bytes precede the first local header (the Janus construct); Android refuses this",
                )
            )
    ordered = sorted(entries, key=lambda entry: entry.local_header_offset)
    for before, after in itertools.pairwise(ordered):
        if after.local_header_offset < before.end_offset:
            violations.append(
                ZipViolation(
                    "ZIP_OVERLAPPING_ENTRIES",
                    f"entries {before.name!r} and {after.name!r} overlap in the file",
                )
            )
            break
    cd_end = sections.cd_offset + sections.cd_size
    expected_end = sections.zip64_eocd_offset if sections.zip64_eocd_offset is not None else sections.eocd_offset
    if cd_end != expected_end:
        violations.append(
            ZipViolation(
                "ZIP_GARBAGE_BEFORE_EOCD",
                f"{expected_end - cd_end} bytes lie between the central directory and the end record",
            )
        )
