"""A ZIP writer for release archives: streaming, ZIP64 when needed, and the same bytes for the same input.

Target-files packages and factory images are gigabytes, so entries are never held in memory: unchanged entries are
copied as their raw compressed bytes (`copy_file_range`, the kernel copies), new ones are compressed while they
stream in. Every entry is stamped 2009-01-01 00:00, as releasetools' `common.ZipWriteStr` stamps the entries it
writes, so the archive depends only on its contents, never on the clock or on the machine that built the input.
Local headers carry the sizes and CRC (no data descriptors), and ZIP64 records appear only where a size, an offset
or the entry count does not fit in the classic fields.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sealgate.errors import ZipFormatError
from sealgate.filecopy import copy_once, pwrite_all
from sealgate.ziparchive import CD_FIXED_SIZE, METHOD_DEFLATED, METHOD_STORED, ZipArchive, ZipEntry

#: 2009-01-01 00:00:00 in MS-DOS date and time format: releasetools' fixed timestamp.
DOS_DATE = (2009 - 1980) << 9 | 1 << 5 | 1
DOS_TIME = 0
#: Regular file, rw-r--r--, as external attributes ("made by" Unix) store it.
REGULAR_FILE_ATTRIBUTES = 0o100644 << 16
EXECUTABLE_FILE_ATTRIBUTES = 0o100755 << 16
DIRECTORY_ATTRIBUTES = (0o040755 << 16) | 0x10

_LFH = struct.Struct("<IHHHHHIIIHH")
_CD = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_ZIP64_EOCD = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
#: Streamed entries above this size get ZIP64 local fields up front, since their final size is not known yet.
_ZIP64_STREAM_THRESHOLD = 0xF0000000
_MADE_BY_UNIX = 3 << 8 | 20
_FLAG_UTF8 = 0x0800
_CHUNK = 4 * 1024 * 1024
_COPY_STEP = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Record:
    name: bytes
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int
    attributes: int
    version_made_by: int


class ZipWriter:
    """Writes a new archive into `fd` (an empty file) front to back; `finish()` adds the central directory."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._offset = 0
        self._records: list[_Record] = []
        self._names: set[bytes] = set()
        self._copy_fallback = False

    def copy_entry(
        self,
        archive: ZipArchive,
        entry: ZipEntry,
        attributes: tuple[int, int] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """`entry` of `archive` as it is (its compressed bytes untouched), with the fixed timestamp.

        `attributes` is (version made by, external attributes) from the input's central record, so symlinks and
        modes survive; without it the entry is a plain rw-r--r-- file. `name` renames the entry.
        """
        made_by, external = attributes or (_MADE_BY_UNIX, REGULAR_FILE_ATTRIBUTES)
        raw_name = entry.raw_name if name is None else name.encode("utf-8")
        zip64 = _needs_zip64(entry.uncompressed_size, entry.compressed_size)
        start = self._local_header(raw_name, entry.method, entry.crc32, entry.compressed_size,
                                   entry.uncompressed_size, zip64=zip64)  # fmt: skip
        self._copy(archive.fileno, entry.data_offset, entry.compressed_size)
        self._add_record(raw_name, entry.method, entry.crc32, entry.compressed_size, entry.uncompressed_size,
                         start, external, made_by)  # fmt: skip

    def add_bytes(
        self, name: str, data: bytes, *, deflate: bool = True, attributes: int = REGULAR_FILE_ATTRIBUTES
    ) -> None:
        self.add_stream(name, [data], size_hint=len(data), deflate=deflate, attributes=attributes)

    def add_file(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        deflate: bool = True,
        attributes: int = REGULAR_FILE_ATTRIBUTES,
        tap: Callable[[bytes], object] | None = None,
    ) -> None:
        """A new entry from a file, read once; `tap` sees every chunk (to hash the file in the same pass)."""
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            chunks = iter(lambda: handle.read(_CHUNK), b"")
            if tap is not None:
                chunks = (_tapped(chunk, tap) for chunk in chunks)
            self.add_stream(name, chunks, size_hint=size, deflate=deflate, attributes=attributes)

    def add_stream(self, name: str, chunks: Iterable[bytes | memoryview], *, size_hint: int, deflate: bool,
                   attributes: int = REGULAR_FILE_ATTRIBUTES) -> None:  # fmt: skip
        """A new entry from `chunks`; its local header is completed once the data has been written."""
        raw_name = name.encode("utf-8")
        method = METHOD_DEFLATED if deflate else METHOD_STORED
        zip64 = size_hint >= _ZIP64_STREAM_THRESHOLD
        start = self._local_header(raw_name, method, 0, 0, 0, zip64=zip64)
        crc = size = compressed = 0
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15) if deflate else None
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            out = compressor.compress(chunk) if compressor is not None else chunk
            compressed += len(out)
            self._write(out)
        if compressor is not None:
            tail = compressor.flush()
            compressed += len(tail)
            self._write(tail)
        if not zip64 and _needs_zip64(size, compressed):
            raise ZipFormatError(f"entry {name!r} grew past the size announced for it ({size_hint} bytes)")
        pwrite_all(self._fd, self._local_bytes(raw_name, method, crc, compressed, size, zip64=zip64), start)
        self._add_record(raw_name, method, crc, compressed, size, start, attributes, _MADE_BY_UNIX)

    def finish(self) -> int:
        """Write the central directory and end records; the archive's size."""
        cd_offset = self._offset
        directory = b"".join(_central_record(record) for record in self._records)
        self._write(directory)
        count = len(self._records)
        if count > _MAX_U16 or cd_offset > _MAX_U32 or len(directory) > _MAX_U32:
            zip64_offset = self._offset
            self._write(_ZIP64_EOCD.pack(0x06064B50, 44, 45, 45, 0, 0, count, count, len(directory), cd_offset))
            self._write(_ZIP64_LOCATOR.pack(0x07064B50, 0, zip64_offset, 1))
            self._write(_EOCD.pack(0x06054B50, 0, 0, min(count, _MAX_U16), min(count, _MAX_U16),
                                   min(len(directory), _MAX_U32), min(cd_offset, _MAX_U32), 0))  # fmt: skip
        else:
            self._write(_EOCD.pack(0x06054B50, 0, 0, count, count, len(directory), cd_offset, 0))
        return self._offset

    # -- internals ----------------------------------------------------------------------------------------------

    def _local_header(self, raw_name: bytes, method: int, crc: int, compressed: int, size: int, *, zip64: bool) -> int:
        if raw_name in self._names:
            raise ZipFormatError(f"entry {raw_name.decode('utf-8', 'replace')!r} would be written twice")
        self._names.add(raw_name)
        start = self._offset
        self._write(self._local_bytes(raw_name, method, crc, compressed, size, zip64=zip64))
        return start

    @staticmethod
    def _local_bytes(raw_name: bytes, method: int, crc: int, compressed: int, size: int, *, zip64: bool) -> bytes:
        extra = struct.pack("<HHQQ", 1, 16, size, compressed) if zip64 else b""
        return (
            _LFH.pack(0x04034B50, 45 if zip64 else 20, _flags(raw_name), method, DOS_TIME, DOS_DATE, crc,
                      _MAX_U32 if zip64 else compressed, _MAX_U32 if zip64 else size, len(raw_name), len(extra))
            + raw_name + extra
        )  # fmt: skip

    def _add_record(self, raw_name: bytes, method: int, crc: int, compressed: int, size: int, offset: int,
                    attributes: int, made_by: int) -> None:  # fmt: skip
        self._records.append(_Record(raw_name, method, crc, compressed, size, offset, attributes, made_by))

    def _write(self, data: bytes | memoryview) -> None:
        pwrite_all(self._fd, data, self._offset)
        self._offset += len(data)

    def _copy(self, source: int, offset: int, length: int) -> None:
        while length > 0:
            copied, kernel = copy_once(source, self._fd, offset, self._offset, min(length, _COPY_STEP),
                                       not self._copy_fallback)  # fmt: skip
            self._copy_fallback = not kernel
            if copied == 0:
                raise ZipFormatError(f"the input archive ends early: no data at offset {offset}")
            offset += copied
            self._offset += copied
            length -= copied


def central_attributes(archive: ZipArchive) -> list[tuple[int, int]]:
    """(version made by, external attributes) of each entry of `archive`, in the order of `archive.entries`."""
    sections = archive.sections
    directory = archive.pread(sections.cd_offset, sections.cd_size)
    result = []
    position = 0
    for _ in archive.entries:
        made_by = struct.unpack_from("<H", directory, position + 4)[0]
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", directory, position + 28)
        external = struct.unpack_from("<I", directory, position + 38)[0]
        result.append((made_by, external))
        position += CD_FIXED_SIZE + name_length + extra_length + comment_length
    return result


def is_symlink(attributes: tuple[int, int]) -> bool:
    made_by, external = attributes
    return made_by >> 8 == 3 and (external >> 16) & 0o170000 == 0o120000


def _tapped(chunk: bytes, tap: Callable[[bytes], object]) -> bytes:
    tap(chunk)
    return chunk


def _needs_zip64(size: int, compressed: int) -> bool:
    return size >= _MAX_U32 or compressed >= _MAX_U32


def _flags(raw_name: bytes) -> int:
    return 0 if raw_name.isascii() else _FLAG_UTF8


def _central_record(record: _Record) -> bytes:
    values = [v for v in (record.size, record.compressed_size, record.offset) if v >= _MAX_U32]
    big_size = record.size >= _MAX_U32 or record.compressed_size >= _MAX_U32
    if big_size:  # both sizes go in the extra field once either overflows, as in the local header
        values = [record.size, record.compressed_size] + ([record.offset] if record.offset >= _MAX_U32 else [])
    extra = struct.pack("<HH", 1, 8 * len(values)) + struct.pack(f"<{len(values)}Q", *values) if values else b""
    needed = 45 if extra else 20
    return (
        _CD.pack(0x02014B50, record.version_made_by, needed, _flags(record.name), record.method, DOS_TIME, DOS_DATE,
                 record.crc, _MAX_U32 if big_size else record.compressed_size, _MAX_U32 if big_size else record.size,
                 len(record.name), len(extra), 0, 0, 0, record.attributes, min(record.offset, _MAX_U32))
        + record.name + extra
    )  # fmt: skip
