"""META/care_map.pb of a target-files package, computed from its images as add_img_to_target_files computes it.

Followed: build/make/tools/releasetools/add_img_to_target_files.py, AddCareMapForAbOta and GetCareMap (called by
AddImagesToTargetFiles when META/ab_partitions.txt exists), and common.py's PARTITIONS_WITH_CARE_MAP and
PartitionBuildProps. For every partition of META/ab_partitions.txt, in its order, that is one of
PARTITIONS_WITH_CARE_MAP and is verified (`avb_<part>_hashtree_enable=true`, or `<part>_verity_block_device` set
in misc_info) and has IMAGES/<part>.img:

- ranges: the image's AVB footer gives original_image_size, the filesystem without its hash tree, FEC and vbmeta
  (dm-verity serves only those blocks to update_verifier; reading past them would fail). The range is blocks 0 to
  original_image_size // 4096 - 1 inclusive, written half-open as rangelib's to_string_raw writes it:
  "2,0,<original_image_size // 4096>". An Android sparse image (libsparse format) counts only its raw and fill
  chunks (sparse_img's care_map), intersected with that range, and its footer is read from its last block.
  An image without an AVB footer is left out, as GetCareMap returns None for it; a footer whose
  original_image_size is zero or not below the image's size is refused (GetCareMap asserts it).
- id and fingerprint: the first of ro.<part>.build.fingerprint and ro.<part>.build.thumbprint that the
  partition's build.prop sets (<PART>/etc/build.prop, else <PART>/build.prop, as PartitionBuildProps reads
  them), and its value; "unknown" for both when neither is set (update_verifier then skips the partition).

No entry at all means no care map: AOSP then writes no META/care_map.pb. Images are never read whole: a raw image
costs its first and last bytes (the whole stream only when the zip entry is deflated), a sparse one one pass over
its chunk headers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sealgate.avb.footer import FOOTER_SIZE, SPARSE_MAGIC, AvbFooter
from sealgate.errors import AvbFormatError, ReleaseError, ZipFormatError
from sealgate.ota.care_map import (
    BLOCK_SIZE,
    UNKNOWN,
    BlockRanges,
    PartitionCareMap,
    encode_care_map,
    format_ranges,
)
from sealgate.release.build_props import parse_props
from sealgate.release.misc_info import parse_misc_info
from sealgate.ziparchive import METHOD_STORED, ZipArchive, ZipEntry

CARE_MAP = "META/care_map.pb"
#: The text care map of older builds; ota_from_target_files packages it when there is no care_map.pb.
LEGACY_CARE_MAP = "META/care_map.txt"
AB_PARTITIONS = "META/ab_partitions.txt"
MISC_INFO = "META/misc_info.txt"
#: common.PARTITIONS_WITH_CARE_MAP: the partitions update_verifier may read.
PARTITIONS_WITH_CARE_MAP = (
    "system", "vendor", "product", "system_ext", "odm", "vendor_dlkm", "odm_dlkm", "system_dlkm",
)  # fmt: skip
_MAX_TEXT = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
_SPARSE_HEADER = struct.Struct("<IHHHHIIII")
_SPARSE_CHUNK = struct.Struct("<HHII")
_CHUNK_RAW, _CHUNK_FILL, _CHUNK_DONT_CARE, _CHUNK_CRC32 = 0xCAC1, 0xCAC2, 0xCAC3, 0xCAC4


def care_map_entries(archive: ZipArchive, images: Mapping[str, Path] | None = None) -> list[PartitionCareMap]:
    """The care map of the package `archive`, with `images` (entry name -> file: rebuilt images not yet written
    into a package) in place of the package's entries of those names (module docstring)."""
    images = images or {}
    misc_info = parse_misc_info(_text(archive, MISC_INFO) or "")
    entries = []
    for partition in ab_partitions(_text(archive, AB_PARTITIONS) or ""):
        if partition not in PARTITIONS_WITH_CARE_MAP:
            continue
        verified = f"{partition}_verity_block_device" in misc_info
        if not (verified or misc_info.get(f"avb_{partition}_hashtree_enable") == "true"):
            continue
        name = f"IMAGES/{partition}.img"
        if name in images:
            blocks = image_care_blocks(file_source(images[name]), name)
        elif (entry := archive.entry(name)) is not None:
            blocks = image_care_blocks(_entry_source(archive, entry), name)
        else:
            continue  # AddCareMapForAbOta warns and goes on
        if blocks is None:
            continue
        prop_id, fingerprint = partition_fingerprint(archive, partition)
        entries.append(PartitionCareMap(partition, format_ranges(blocks), prop_id, fingerprint))
    return entries


def care_map_bytes(archive: ZipArchive, images: Mapping[str, Path] | None = None) -> bytes | None:
    """META/care_map.pb as add_img_to_target_files would write it for the package, or None when it writes none."""
    entries = care_map_entries(archive, images)
    return encode_care_map(entries) if entries else None


def ab_partitions(text: str) -> list[str]:
    """META/ab_partitions.txt: one name a line (stripped, as AddCareMapForAbOta strips them), blanks skipped."""
    names: list[str] = []
    for line in text.splitlines():
        name = line.strip()
        if name and name not in names:
            names.append(name)
    return names


def partition_fingerprint(archive: ZipArchive, partition: str) -> tuple[str, str]:
    """(property id, value): ro.<part>.build.fingerprint, else ro.<part>.build.thumbprint, else unknown."""
    props: dict[str, str] = {}
    for name in (f"{partition.upper()}/etc/build.prop", f"{partition.upper()}/build.prop"):
        text = _text(archive, name)
        if text is not None:
            props = parse_props(text)
            break
    for prop in (f"ro.{partition}.build.fingerprint", f"ro.{partition}.build.thumbprint"):
        if props.get(prop):
            return prop, props[prop]
    return UNKNOWN, UNKNOWN


# -- the blocks of one image -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """An image to read: its size, its bytes in order, and bytes at an offset when it can be read in place."""

    size: int
    chunks: Callable[[], Iterable[bytes | memoryview]]
    read_at: Callable[[int, int], bytes] | None = None


def file_source(path: Path) -> ImageSource:
    def read_at(offset: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    return ImageSource(path.stat().st_size, chunks, read_at)


def _entry_source(archive: ZipArchive, entry: ZipEntry) -> ImageSource:
    in_place = entry.method == METHOD_STORED and entry.compressed_size == entry.uncompressed_size

    def read_at(offset: int, length: int) -> bytes:
        return archive.pread(entry.data_offset + offset, length)

    return ImageSource(entry.uncompressed_size, lambda: archive.iter_data(entry, max_size=2**40),
                       read_at if in_place else None)  # fmt: skip


def image_care_blocks(source: ImageSource, where: str) -> BlockRanges | None:
    """GetCareMap's ranges for one image, or None for an image without an AVB footer."""
    try:
        if source.read_at is not None and source.size >= FOOTER_SIZE and source.read_at(0, 4) != SPARSE_MAGIC:
            return _raw_blocks(source.read_at(source.size - FOOTER_SIZE, FOOTER_SIZE), source.size, where)
        stream = _Stream(source.chunks())
        head = stream.read(4)
        if head == SPARSE_MAGIC:
            return _sparse_blocks(stream, where)
        return _raw_blocks(stream.tail(FOOTER_SIZE, head), source.size, where)
    except ZipFormatError as exc:
        raise ReleaseError(f"cannot read {where}: {exc}") from exc


def _raw_blocks(tail: bytes, size: int, where: str) -> BlockRanges | None:
    blocks = _footer_blocks(tail, size, where)
    return None if blocks is None else ((0, blocks),)


def _footer_blocks(tail: bytes, size: int, where: str) -> int | None:
    """The number of blocks GetCareMap covers: original_image_size // 4096 (its "0-(size // 4096 - 1)")."""
    try:
        footer = AvbFooter.parse(tail)
    except AvbFormatError:
        return None  # ParseAvbFooter's LookupError: GetCareMap leaves the partition out
    original = footer.original_image_size
    if not 0 < original < size:
        raise ReleaseError(
            f"{where}: its AVB footer's original image size {original} is not between 0 and the image's {size} bytes"
        )
    if original < BLOCK_SIZE:
        raise ReleaseError(f"{where}: its AVB footer's original image size {original} is less than one block")
    return original // BLOCK_SIZE


def _sparse_blocks(stream: _Stream, where: str) -> BlockRanges | None:
    """sparse_img.SparseImage's care_map (raw and fill chunks) and the footer in its last block."""
    header = stream.read(_SPARSE_HEADER.size - 4)
    if len(header) != _SPARSE_HEADER.size - 4:
        raise ReleaseError(f"{where}: a truncated Android sparse image header")
    _, major, _, header_size, chunk_header_size, block_size, total_blocks, total_chunks, _ = _SPARSE_HEADER.unpack(
        SPARSE_MAGIC + header
    )
    if major != 1 or header_size < _SPARSE_HEADER.size or chunk_header_size < _SPARSE_CHUNK.size:
        raise ReleaseError(f"{where}: an Android sparse image of a version or layout libsparse does not write")
    if block_size != BLOCK_SIZE:
        raise ReleaseError(f"{where}: sparse blocks of {block_size} bytes, not the care map's {BLOCK_SIZE}")
    stream.skip(header_size - _SPARSE_HEADER.size)
    care: list[tuple[int, int]] = []
    position = 0
    last_block = bytes(BLOCK_SIZE)
    for _ in range(total_chunks):
        raw = stream.read(chunk_header_size)
        if len(raw) != chunk_header_size:
            raise ReleaseError(f"{where}: the sparse image ends inside its chunk list")
        kind, _, count, total_size = _SPARSE_CHUNK.unpack(raw[: _SPARSE_CHUNK.size])
        data_size = total_size - chunk_header_size
        end = position + count
        if end > total_blocks or data_size < 0:
            raise ReleaseError(f"{where}: a sparse chunk runs past the image's {total_blocks} blocks")
        if kind == _CHUNK_RAW:
            if data_size != count * BLOCK_SIZE:
                raise ReleaseError(f"{where}: a raw sparse chunk whose size does not match its blocks")
            if count and end == total_blocks:
                stream.skip(data_size - BLOCK_SIZE)
                last_block = stream.read(BLOCK_SIZE)
            else:
                stream.skip(data_size)
        elif kind == _CHUNK_FILL:
            if data_size != 4:
                raise ReleaseError(f"{where}: a fill sparse chunk without its 4-byte value")
            value = stream.read(4)
            if end == total_blocks:
                last_block = value * (BLOCK_SIZE // 4)
        elif kind == _CHUNK_DONT_CARE:
            if data_size != 0:
                raise ReleaseError(f"{where}: a don't-care sparse chunk that carries data")
            if end == total_blocks:
                last_block = bytes(BLOCK_SIZE)
        elif kind == _CHUNK_CRC32:
            raise ReleaseError(f"{where}: a sparse image with CRC32 chunks (sparse_img does not read them)")
        else:
            raise ReleaseError(f"{where}: an unknown sparse chunk type {kind:#x}")
        if kind in (_CHUNK_RAW, _CHUNK_FILL) and count:
            if care and care[-1][1] == position:
                care[-1] = (care[-1][0], end)
            else:
                care.append((position, end))
        position = end
    if position != total_blocks:
        raise ReleaseError(f"{where}: its sparse chunks cover {position} of its {total_blocks} blocks")
    if len(last_block) != BLOCK_SIZE:
        raise ReleaseError(f"{where}: the sparse image ends inside its last block")
    blocks = _footer_blocks(last_block[-FOOTER_SIZE:], total_blocks * BLOCK_SIZE, where)
    if blocks is None:
        return None
    kept = tuple((start, min(end, blocks)) for start, end in care if start < blocks)
    if not kept:
        raise ReleaseError(f"{where}: no block of its filesystem is in the sparse image's data")
    return kept


class _Stream:
    """Sequential reads over an iterator of chunks, holding one chunk at a time."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._at = 0

    def _next(self) -> bool:
        for chunk in self._chunks:
            if len(chunk):
                self._chunk, self._at = bytes(chunk), 0
                return True
        return False

    def read(self, length: int) -> bytes:
        """Up to `length` bytes (fewer only at the end of the stream)."""
        parts = []
        while length > 0 and (self._at < len(self._chunk) or self._next()):
            part = self._chunk[self._at : self._at + length]
            self._at += len(part)
            length -= len(part)
            parts.append(part)
        return b"".join(parts)

    def skip(self, length: int) -> None:
        while length > 0:
            if self._at == len(self._chunk) and not self._next():
                raise ReleaseError("the image ends inside a sparse chunk")
            taken = min(length, len(self._chunk) - self._at)
            self._at += taken
            length -= taken

    def tail(self, length: int, consumed: bytes) -> bytes:
        """The last `length` bytes of the whole stream (`consumed` were read before)."""
        last = consumed + self._chunk[self._at :]
        for chunk in self._chunks:
            last = (last + bytes(chunk))[-length:]
        return last[-length:]


def _text(archive: ZipArchive, name: str) -> str | None:
    entry = archive.entry(name)
    if entry is None:
        return None
    try:
        return archive.read(entry, max_size=_MAX_TEXT).decode("utf-8")
    except (UnicodeDecodeError, ZipFormatError) as exc:
        raise ReleaseError(f"cannot read {name}: {exc}") from exc


__all__ = [
    "CARE_MAP",
    "PARTITIONS_WITH_CARE_MAP",
    "ImageSource",
    "ab_partitions",
    "care_map_bytes",
    "care_map_entries",
    "file_source",
    "image_care_blocks",
    "partition_fingerprint",
]
