"""Rewriting the ZIP around the signatures, streaming: entries are copied as their raw (compressed) bytes.

The output keeps what apksigner keeps: the entries the JAR signature covers, in the order of their local headers,
each local header and data descriptor byte for byte except the extra field of STORED entries (re-aligned, see
`align`), and every central directory record byte for byte except its local header offset; the end record keeps
the input's comment. Dropped: directories, the old signature files at the top of META-INF/, a stale source stamp,
and whatever lay between or after the entries (an old APK Signing Block, padding, data no entry points to).

Data moves file-to-file with `copy_file_range` (the kernel copies, or shares extents on filesystems that can), runs
of untouched entries in one call, so memory stays at a few KiB whatever the APK's size. The new JAR signature files
are deflated at level 9 and stamped with the newest timestamp among the kept entries, as apksigner stamps them, so
the same input gives the same output.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealgate.apk.signing.align import aligned_extra, entry_alignment
from sealgate.errors import ApkFormatError
from sealgate.filecopy import copy_once, pwrite_all
from sealgate.ziparchive import CD_FIXED_SIZE, EOCD_SIZE, LFH_FIXED_SIZE, METHOD_STORED, ZipArchive, ZipEntry

#: apksigner's timestamp for new entries when no entry has one: 2009-01-01 00:00 in MS-DOS format.
DEFAULT_DOS_DATE = 0x3A21
DEFAULT_DOS_TIME = 0
_MAX_U32 = 0xFFFFFFFF
_MAX_U16 = 0xFFFF
_LFH = struct.Struct("<IHHHHHIIIHH")
_CD = struct.Struct("<IHHHHHHIIIHHHHHII")
_LFH_SIGNATURE = 0x04034B50
_CD_SIGNATURE = 0x02014B50
_VERSION_20 = 20
_FLAG_UTF8 = 0x0800
_METHOD_DEFLATED = 8
#: Longest single copy: after each, `progress` learns how far the output is final, so it can be hashed meanwhile.
_COPY_STEP = 16 * 1024 * 1024


@dataclass(frozen=True)
class Layout:
    """Where the rewritten parts lie: entries end at `entries_end`, then padding up to `before_block`."""

    entries_end: int
    before_block: int
    central_directory: bytes
    #: The end record with its central-directory offset still to be filled in.
    eocd: bytes

    def eocd_with_cd_offset(self, offset: int) -> bytes:
        if offset > _MAX_U32:
            raise ApkFormatError("the signed APK would be larger than 4 GiB, which needs ZIP64; APKs cannot use it")
        eocd = bytearray(self.eocd)
        struct.pack_into("<I", eocd, 16, offset)
        return bytes(eocd)


class ZipWriter:
    """Writes the output APK into `out_fd` (a new, empty file), tracking the offset; positional writes only.

    Entries are written front to back and never touched again, so every byte before `offset` is final; `progress`
    is told the new offset after each step of the copy (`copy_step` bytes at most).
    """

    def __init__(
        self,
        archive: ZipArchive,
        out_fd: int,
        *,
        alignment: int,
        page_alignment: int,
        progress: Callable[[int], None] | None = None,
        copy_step: int = _COPY_STEP,
    ) -> None:
        self._archive = archive
        self._copy_step = copy_step
        self._fd = out_fd
        #: Told the new offset after each step of the copy; may be replaced between steps.
        self.progress = progress
        self._alignment = alignment
        self._page_alignment = page_alignment
        self._offset = 0
        self._records = _central_records(archive)
        self._output_records: dict[int, bytes] = {}
        self._new_records: list[bytes] = []
        self._timestamp: tuple[int, int] | None = None
        self._copy_fallback = False

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def fd(self) -> int:
        return self._fd

    def copy_entries(self, entries: Sequence[ZipEntry]) -> None:
        """Copy `entries` (in local-header order), re-aligning STORED data; runs of untouched bytes in one copy."""
        index_of = {id(entry): index for index, entry in enumerate(self._archive.entries)}
        run_start = run_end = -1
        for entry in sorted(entries, key=lambda item: item.local_header_offset):
            index = index_of[id(entry)]
            record = self._records[index]
            self._note_timestamp(record)
            header, name, extra = self._local_header(entry)
            out_offset = self._offset + (run_end - run_start if run_start >= 0 else 0)
            new_extra = extra
            if entry.method == METHOD_STORED:
                multiple = entry_alignment(
                    entry.name, extra, alignment=self._alignment, page_alignment=self._page_alignment
                )
                new_extra = aligned_extra(extra, out_offset + LFH_FIXED_SIZE + len(name), multiple)
            self._output_records[index] = _with_local_offset(record, out_offset)
            if new_extra == extra:
                if run_start >= 0 and run_end == entry.local_header_offset:
                    run_end = entry.end_offset
                else:
                    self._flush_run(run_start, run_end)
                    run_start, run_end = entry.local_header_offset, entry.end_offset
                continue
            self._flush_run(run_start, run_end)
            run_start = run_end = -1
            fixed = bytearray(header)
            struct.pack_into("<H", fixed, 28, len(new_extra))
            self._write(bytes(fixed) + name + new_extra)
            self._copy(entry.data_offset, entry.end_offset - entry.data_offset)
        self._flush_run(run_start, run_end)

    def add_deflated(self, name: str, data: bytes) -> None:
        """A new entry (a JAR signature file), deflated at level 9 as apksig deflates it."""
        raw_name = name.encode("utf-8")
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        compressed = compressor.compress(data) + compressor.flush()
        crc = zlib.crc32(data)
        date, time = self._timestamp or (DEFAULT_DOS_DATE, DEFAULT_DOS_TIME)
        local = _LFH.pack(
            _LFH_SIGNATURE, _VERSION_20, _FLAG_UTF8, _METHOD_DEFLATED, time, date, crc,
            len(compressed), len(data), len(raw_name), 0,
        )  # fmt: skip
        self._check_offset(self._offset)
        central = _CD.pack(
            _CD_SIGNATURE, _VERSION_20, _VERSION_20, _FLAG_UTF8, _METHOD_DEFLATED, time, date, crc,
            len(compressed), len(data), len(raw_name), 0, 0, 0, 0, 0, self._offset,
        )  # fmt: skip
        self._new_records.append(central + raw_name)
        self._write(local + raw_name + compressed)

    def layout(self, *, page_align: bool) -> Layout:
        """The central directory and end record for what was written; `page_align` pads for a signing block."""
        entries_end = self._offset
        before_block = entries_end
        if page_align and entries_end % 4096:
            before_block += 4096 - entries_end % 4096
        records = [self._output_records[index] for index in sorted(self._output_records)] + self._new_records
        if len(records) > _MAX_U16:
            raise ApkFormatError(f"{len(records)} entries need ZIP64, which APKs cannot use")
        central_directory = b"".join(records)
        sections = self._archive.sections
        eocd = bytearray(self._archive.pread(sections.eocd_offset, EOCD_SIZE + len(sections.comment)))
        struct.pack_into("<HHI", eocd, 8, len(records), len(records), len(central_directory))
        return Layout(entries_end, before_block, central_directory, bytes(eocd))

    def write_at(self, offset: int, data: bytes) -> None:
        """Positional write of the tail (padding, signing block, central directory, end record)."""
        pwrite_all(self._fd, data, offset)

    # -- internals ----------------------------------------------------------------------------------------------

    def _local_header(self, entry: ZipEntry) -> tuple[bytes, bytes, bytes]:
        header = self._archive.pread(entry.local_header_offset, LFH_FIXED_SIZE)
        name_length, extra_length = struct.unpack_from("<HH", header, 26)
        rest = self._archive.pread(entry.local_header_offset + LFH_FIXED_SIZE, name_length + extra_length)
        return header, rest[:name_length], rest[name_length:]

    def _note_timestamp(self, record: bytes) -> None:
        time, date = struct.unpack_from("<HH", record, 12)
        if self._timestamp is None or (date, time) > self._timestamp:
            self._timestamp = (date, time)

    def _flush_run(self, start: int, end: int) -> None:
        if start >= 0 and end > start:
            self._copy(start, end - start)

    def _write(self, data: bytes) -> None:
        self._check_offset(self._offset + len(data))
        pwrite_all(self._fd, data, self._offset)
        self._offset += len(data)

    def _copy(self, source_offset: int, length: int) -> None:
        self._check_offset(self._offset + length)
        source = self._archive.fileno
        while length > 0:
            copied, kernel = copy_once(source, self._fd, source_offset, self._offset,
                                       min(length, self._copy_step), not self._copy_fallback)  # fmt: skip
            self._copy_fallback = not kernel
            if copied == 0:
                raise ApkFormatError(f"the input APK ends early: no data at offset {source_offset}")
            source_offset += copied
            self._offset += copied
            length -= copied
            if self.progress is not None:
                self.progress(self._offset)

    def _check_offset(self, offset: int) -> None:
        if offset > _MAX_U32:
            raise ApkFormatError("the signed APK would be larger than 4 GiB, which needs ZIP64; APKs cannot use it")


def _central_records(archive: ZipArchive) -> list[bytes]:
    """The input's central directory records as raw bytes, in the order of `archive.entries`."""
    sections = archive.sections
    directory = archive.pread(sections.cd_offset, sections.cd_size)
    records = []
    position = 0
    for _ in archive.entries:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", directory, position + 28)
        end = position + CD_FIXED_SIZE + name_length + extra_length + comment_length
        records.append(directory[position:end])
        position = end
    return records


def _with_local_offset(record: bytes, offset: int) -> bytes:
    if offset > _MAX_U32:
        raise ApkFormatError("the signed APK would be larger than 4 GiB, which needs ZIP64; APKs cannot use it")
    changed = bytearray(record)
    struct.pack_into("<I", changed, 42, offset)
    return bytes(changed)
