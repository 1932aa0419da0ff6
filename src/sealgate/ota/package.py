"""The A/B OTA package: payload.bin and friends, STORED, with property files that point at each entry's data.

Laid out as releasetools lays out an unsigned A/B package (GenerateAbOtaPackage in ota_from_target_files.py, then
FinalizeMetadata and WriteMetadata in ota_utils.py): payload.bin, payload_properties.txt, the secondary payload if
any, care_map.pb (or .txt), apex_info.pb, other extras, then META-INF/com/android/metadata.pb and
META-INF/com/android/metadata, every entry STORED so that update_engine can stream it straight out of the zip by
offset. The two property-files strings are releasetools' StreamingPropertyFiles (ota-streaming-property-files:
payload.bin, payload_properties.txt, then apex_info.pb, care_map.pb, care_map.txt, compatibility.zip when present,
then metadata and metadata.pb) and AbOtaPropertyFiles (ota-property-files: the same, led by payload_metadata.bin,
the payload's header, manifest and metadata signature). A token's offset is where the entry's data starts (its
local header offset + 30 + name + extra), its size the stored size.

The metadata entries name their own offsets. releasetools breaks the loop by writing a first version with a
15-space placeholder for each of `metadata:` and `metadata.pb:`, then the real tokens padded with spaces to the
reserved length, so the entries keep their size and nothing moves. We do the same in one pass: the placeholder
strings fix both entries' sizes, hence their offsets, before either is written, and the final strings are padded
to the same length (byte-identical to releasetools' output without signing, for the same inputs). The package is
then read back and every token is checked against the entries it names, as FinalizeMetadata's Verify does.

`ota.signer.sign_package` copies entries in place and appends only the otacert, so the offsets stay right in the
signed package. `signapk -w` does not keep them: it sorts and re-aligns the entries (releasetools signs twice for
that reason), so a package signed by signapk needs its property files computed again.

payload_properties.txt is checked against the payload (sizes and SHA-256 hashes, as brillo_update_payload writes
them) while the payload is copied, and gets POWERWASH=1 when the metadata says wipe, as releasetools appends it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# ISA-L's CRC-32 is the same function as zlib's, ten times faster: the CRC is not the slow part of a copy then.
from isal import isal_zlib

from sealgate.apk.signing.output import AtomicOutput
from sealgate.errors import OtaFormatError, UsageError
from sealgate.ota.metadata import (
    METADATA_NAME,
    METADATA_PROTO_NAME,
    OtaMetadata,
    PropertyToken,
    open_package,
    parse_property_files,
    read_package_metadata,
)
from sealgate.ota.small_text import read_small_text
from sealgate.ziparchive import METHOD_STORED, ZipArchive, ZipEntry

PAYLOAD = "payload.bin"
PAYLOAD_PROPERTIES = "payload_properties.txt"
PAYLOAD_METADATA = "payload_metadata.bin"
STREAMING_PROPERTY_FILES = "ota-streaming-property-files"
AB_PROPERTY_FILES = "ota-property-files"
#: StreamingPropertyFiles.required and .optional, in releasetools' order.
_REQUIRED = (PAYLOAD, PAYLOAD_PROPERTIES)
_OPTIONAL = ("apex_info.pb", "care_map.pb", "care_map.txt", "compatibility.zip")
#: Where GenerateAbOtaPackage writes the extras it knows, after payload.bin and payload_properties.txt.
_EXTRA_ORDER = ("secondary/payload.bin", "secondary/payload_properties.txt", "care_map.pb", "care_map.txt",
                "apex_info.pb")  # fmt: skip
#: PropertyFiles.Compute's placeholder for the metadata entries' offset:size, 15 spaces each.
_RESERVED = " " * 15
_PAYLOAD_MAGIC = b"CrAU"
_PAYLOAD_HEADER = struct.Struct(">4sQQI")
_BRILLO_MAJOR_VERSION = 2
_MAX_PROPERTIES = 64 * 1024
_CHUNK = 4 * 1024 * 1024
_MAX_U32 = 0xFFFFFFFF
_LFH = struct.Struct("<IHHHHHIIIHH")
_CD = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_LFH_SIZE = 30
_VERSION = 20
_MADE_BY_UNIX = 0x0300 | _VERSION
_FLAG_UTF8 = 0x0800
#: 2009-01-01 00:00 in MS-DOS format, the fixed time releasetools and apksigner stamp entries with.
_DOS_DATE, _DOS_TIME = 0x3A21, 0
_EXTERNAL_ATTR = 0o100644 << 16
_crc32 = isal_zlib.crc32


@dataclass(frozen=True)
class PackageEntry:
    """Where an entry of the written package lies: its local header, and its data (offset, size)."""

    name: str
    header_offset: int
    offset: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "offset": self.offset, "size": self.size}


@dataclass
class BuiltPackage:
    path: str
    metadata: OtaMetadata
    entries: list[PackageEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "metadata": self.metadata.to_json(),
            "entries": [entry.to_json() for entry in self.entries],
        }


def build_ab_package(
    out: Path,
    *,
    payload: Path,
    payload_properties: Path,
    metadata: OtaMetadata,
    extra_entries: Mapping[str, Path] = {},
) -> BuiltPackage:
    """Write an unsigned A/B OTA package to `out` (atomically); `metadata.property_files` is filled in on the copy
    that is written and returned. UsageError for metadata or names that cannot go into a package, OtaFormatError
    for a payload that is not one or a properties file that does not describe it."""
    if metadata.ota_type != "AB":
        raise UsageError(f"an A/B package needs ota type AB, not {metadata.ota_type}")
    metadata.check()
    extras = _ordered_extras(extra_entries)
    inputs = {Path(path).resolve() for path in (payload, payload_properties, *extra_entries.values())}
    if Path(out).resolve() in inputs:
        raise UsageError(f"the package {os.fspath(out)} would replace one of its own inputs")
    header = _payload_header(payload)
    properties = _payload_properties(payload_properties, metadata)
    with AtomicOutput(out) as output:
        writer = _StoredZipWriter(output.fd)
        digests = writer.add_file(PAYLOAD, payload, measure=header.metadata_size)
        header.check_properties(properties, digests)
        writer.add_bytes(PAYLOAD_PROPERTIES, properties.data)
        for name, path in extras:
            writer.add_file(name, path)
        final = _add_metadata(writer, metadata, header)
        writer.finish()
        _verify_layout(output.temp_path, final)
        output.commit()
    return BuiltPackage(os.fspath(out), final, writer.entries)


def entry_data_range(path: Path, name: str) -> tuple[int, int]:
    """(offset, size) of STORED entry `name`'s data in the package, as update_engine streams payload.bin."""
    with open_package(path) as archive:
        entry = archive.entry(name)
        if entry is None:
            raise OtaFormatError(f"{os.fspath(path)} has no entry {name!r}")
        if entry.method != METHOD_STORED or entry.compressed_size != entry.uncompressed_size:
            raise OtaFormatError(f"{name!r} in {os.fspath(path)} is compressed, so it cannot be read in place")
        return entry.data_offset, entry.uncompressed_size


def property_tokens(archive: ZipArchive, key: str) -> list[PropertyToken]:
    """The tokens releasetools' GetPropertyFilesString computes for `key` over the package as it is now."""
    tokens = []
    if key == AB_PROPERTY_FILES:
        payload = archive.entry(PAYLOAD)
        if payload is None:
            raise OtaFormatError(f"the package has no {PAYLOAD}")
        tokens.append(PropertyToken(PAYLOAD_METADATA, payload.data_offset, payload_metadata_size(archive, payload)))
    names = [*_REQUIRED, *(name for name in _OPTIONAL if archive.entry(name) is not None), METADATA_NAME]
    if archive.entry(METADATA_PROTO_NAME) is not None:
        names.append(METADATA_PROTO_NAME)
    for name in names:
        entry = archive.entry(name)
        if entry is None:
            raise OtaFormatError(f"the package has no {name}")
        tokens.append(PropertyToken(name.rsplit("/", 1)[-1], entry.data_offset, entry.uncompressed_size))
    return tokens


def payload_metadata_size(archive: ZipArchive, payload: ZipEntry) -> int:
    """The size of the payload_metadata.bin token: the STORED payload's header, manifest and metadata signature."""
    if payload.method != METHOD_STORED:
        raise OtaFormatError(f"{payload.name} is compressed, so it cannot be streamed")
    data = archive.pread(payload.data_offset, min(_PAYLOAD_HEADER.size, payload.uncompressed_size))
    return _parse_payload_header(data, payload.uncompressed_size).metadata_total


# -- the payload and its properties ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PayloadHeader:
    size: int
    #: Header and manifest: what METADATA_SIZE and METADATA_HASH cover.
    metadata_size: int
    #: Header, manifest and metadata signature: the payload_metadata.bin token.
    metadata_total: int

    def check_properties(self, properties: _Properties, digests: tuple[bytes, bytes]) -> None:
        file_hash, metadata_hash = (base64.b64encode(digest).decode("ascii") for digest in digests)
        # Sizes first, then the metadata's hash: the most telling difference is the one reported.
        expected = {
            "FILE_SIZE": str(self.size),
            "METADATA_SIZE": str(self.metadata_size),
            "METADATA_HASH": metadata_hash,
            "FILE_HASH": file_hash,
        }
        for key, value in expected.items():
            found = properties.values.get(key)
            if found != value:
                raise OtaFormatError(
                    f"{PAYLOAD_PROPERTIES} does not describe {PAYLOAD}: {key} is {found!r}, the payload's is {value!r}"
                )


@dataclass(frozen=True)
class _Properties:
    data: bytes
    values: dict[str, str]


def _payload_header(path: Path) -> _PayloadHeader:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(_PAYLOAD_HEADER.size)
    except OSError as exc:
        raise UsageError(f"cannot read the payload {os.fspath(path)}: {exc.strerror}") from None
    return _parse_payload_header(data, size)


def _parse_payload_header(data: bytes, size: int) -> _PayloadHeader:
    """update_engine's header (update_metadata.proto's delta_update_file): magic, version, manifest and
    metadata-signature sizes, big endian. Only major version 2 (Brillo) exists on Android."""
    if len(data) < _PAYLOAD_HEADER.size or data[:4] != _PAYLOAD_MAGIC:
        raise OtaFormatError(f"{PAYLOAD} does not start with an update_engine payload header ('CrAU')")
    _, version, manifest_size, signature_size = _PAYLOAD_HEADER.unpack_from(data)
    if version != _BRILLO_MAJOR_VERSION:
        raise OtaFormatError(f"{PAYLOAD} has major version {version}; update_engine on Android reads only 2")
    metadata_size = _PAYLOAD_HEADER.size + manifest_size
    if metadata_size + signature_size > size:
        raise OtaFormatError(f"{PAYLOAD}'s header declares more metadata than the payload holds")
    return _PayloadHeader(size, metadata_size, metadata_size + signature_size)


def _payload_properties(path: Path, metadata: OtaMetadata) -> _Properties:
    data, text = read_small_text(
        path, limit=_MAX_PROPERTIES, encoding="ascii", what=f"a {PAYLOAD_PROPERTIES}", unreadable=UsageError
    )
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, separator, value = line.partition("=")
        if not separator or key in values:
            raise OtaFormatError(f"{os.fspath(path)}: {line[:80]!r} is not a KEY=value line of its own")
        values[key] = value
    powerwash = values.get("POWERWASH") == "1"
    if powerwash and not metadata.wipe:
        raise UsageError(f"{os.fspath(path)} says POWERWASH=1 but the metadata does not wipe; pass --wipe")
    if metadata.wipe and not powerwash:
        # PayloadGenerator.WriteToZip appends this line when wiping, so update_engine wipes the data partition.
        if data and not data.endswith(b"\n"):
            data += b"\n"
        data += b"POWERWASH=1\n"
        values["POWERWASH"] = "1"
    return _Properties(data, values)


# -- layout -------------------------------------------------------------------------------------------------------


def _ordered_extras(extra_entries: Mapping[str, Path]) -> list[tuple[str, Path]]:
    reserved = {PAYLOAD, PAYLOAD_PROPERTIES}
    for name in extra_entries:
        parts = name.split("/")
        if (
            not name
            or name in reserved
            or name.startswith("META-INF/")
            or "\\" in name
            or any(part in ("", ".", "..") for part in parts)
            or any(ord(character) < 0x20 for character in name)
        ):
            raise UsageError(f"{name!r} cannot be an extra entry of an OTA package")
    known = [(name, extra_entries[name]) for name in _EXTRA_ORDER if name in extra_entries]
    return known + [(name, path) for name, path in extra_entries.items() if name not in _EXTRA_ORDER]


def _add_metadata(writer: _StoredZipWriter, metadata: OtaMetadata, header: _PayloadHeader) -> OtaMetadata:
    """Write metadata.pb and metadata, whose property files name both entries' own offsets."""
    by_name = {entry.name: entry for entry in writer.entries}
    payload = by_name[PAYLOAD]

    def tokens(key: str) -> list[str]:
        result = []
        if key == AB_PROPERTY_FILES:
            result.append(str(PropertyToken(PAYLOAD_METADATA, payload.offset, header.metadata_total)))
        for name in (*_REQUIRED, *(name for name in _OPTIONAL if name in by_name)):
            result.append(str(PropertyToken(name, by_name[name].offset, by_name[name].size)))
        return result

    keys = (AB_PROPERTY_FILES, STREAMING_PROPERTY_FILES)
    placeholders = {key: ",".join([*tokens(key), f"metadata:{_RESERVED}", f"metadata.pb:{_RESERVED}"]) for key in keys}
    draft = replace(metadata, property_files={**metadata.property_files, **placeholders})
    proto_size, text_size = len(draft.to_proto()), len(draft.to_text().encode("utf-8"))
    proto_offset = writer.offset + _LFH_SIZE + len(METADATA_PROTO_NAME.encode("utf-8"))
    text_offset = proto_offset + proto_size + _LFH_SIZE + len(METADATA_NAME.encode("utf-8"))
    final_strings = {}
    for key in keys:
        value = ",".join(
            [*tokens(key), f"metadata:{text_offset}:{text_size}", f"metadata.pb:{proto_offset}:{proto_size}"]
        )
        if len(value) > len(placeholders[key]):
            raise OtaFormatError(f"the package is too large for the space {key} reserves for the metadata offsets")
        final_strings[key] = value.ljust(len(placeholders[key]))
    final = replace(metadata, property_files={**metadata.property_files, **final_strings})
    proto, text = final.to_proto(), final.to_text().encode("utf-8")
    if (len(proto), len(text)) != (proto_size, text_size):
        raise OtaFormatError("the metadata changed size when its offsets were filled in")  # cannot happen
    writer.add_bytes(METADATA_PROTO_NAME, proto)
    writer.add_bytes(METADATA_NAME, text)
    return final


def _verify_layout(path: Path, metadata: OtaMetadata) -> None:
    """FinalizeMetadata's Verify: every property-files string, recomputed from the written zip, is the one we wrote."""
    with ZipArchive.open(path, strict=True) as archive:
        for key in (AB_PROPERTY_FILES, STREAMING_PROPERTY_FILES):
            written = parse_property_files(metadata.property_files[key], key=key)
            if property_tokens(archive, key) != written:
                raise OtaFormatError(f"{key} does not match the written package")  # cannot happen
    if read_package_metadata(path) != metadata:
        raise OtaFormatError("the written metadata does not read back as it was written")  # cannot happen


class _StoredZipWriter:
    """STORED entries, front to back, into a new file; then the central directory and end record (no ZIP64)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.offset = 0
        self.entries: list[PackageEntry] = []
        self._records: list[bytes] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        self._add(name, len(data), [data])

    def add_file(self, name: str, path: Path, *, measure: int = 0) -> tuple[bytes, bytes]:
        """Copy `path` in; (SHA-256 of the whole file, SHA-256 of its first `measure` bytes).

        SHA-256 is the slow part of the copy: each chunk is hashed on a second thread while the next one is read and
        written (hashlib releases the GIL), so building costs little more than copying."""
        file_hash, prefix_hash = hashlib.sha256(), hashlib.sha256()
        try:
            source = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
        try:
            size = os.fstat(source).st_size

            def chunks(hashing: ThreadPoolExecutor) -> Iterator[bytes]:
                pending: Future[None] | None = None
                position = 0
                while position < size:
                    chunk = os.pread(source, min(_CHUNK, size - position), position)
                    if not chunk:
                        raise OtaFormatError(f"{os.fspath(path)} shrank while it was being copied")
                    if position < measure:
                        prefix_hash.update(chunk[: measure - position])
                    if pending is not None:
                        pending.result()
                    pending = hashing.submit(file_hash.update, chunk)
                    position += len(chunk)
                    yield chunk
                if pending is not None:
                    pending.result()

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ota-package-hash") as hashing:
                self._add(name, size, chunks(hashing))
        finally:
            os.close(source)
        return file_hash.digest(), prefix_hash.digest()

    def _add(self, name: str, size: int, chunks: Iterable[bytes]) -> None:
        raw_name = name.encode("utf-8")
        flags = 0 if raw_name.isascii() else _FLAG_UTF8
        header_offset = self.offset
        data_offset = header_offset + _LFH_SIZE + len(raw_name)
        if data_offset + size > _MAX_U32:
            raise OtaFormatError(
                "the package would be larger than 4 GiB, which needs ZIP64; sealgate does not write it"
            )
        crc = 0
        position = data_offset
        for chunk in chunks:
            crc = _crc32(chunk, crc)
            self._write_at(position, chunk)
            position += len(chunk)
        if position != data_offset + size:
            raise OtaFormatError(f"{name} changed size while it was being copied")
        header = _LFH.pack(0x04034B50, _VERSION, flags, METHOD_STORED, _DOS_TIME, _DOS_DATE, crc, size, size,
                           len(raw_name), 0)  # fmt: skip
        self._write_at(header_offset, header + raw_name)
        central = _CD.pack(
            0x02014B50, _MADE_BY_UNIX, _VERSION, flags, METHOD_STORED, _DOS_TIME, _DOS_DATE, crc, size, size,
            len(raw_name), 0, 0, 0, 0, _EXTERNAL_ATTR, header_offset,
        )  # fmt: skip
        self._records.append(central + raw_name)
        self.entries.append(PackageEntry(name, header_offset, data_offset, size))
        self.offset = position

    def finish(self) -> None:
        directory = b"".join(self._records)
        if self.offset + len(directory) > _MAX_U32:
            raise OtaFormatError(
                "the package would be larger than 4 GiB, which needs ZIP64; sealgate does not write it"
            )
        count = len(self._records)
        end = _EOCD.pack(0x06054B50, 0, 0, count, count, len(directory), self.offset, 0)
        self._write_at(self.offset, directory + end)
        self.offset += len(directory) + len(end)

    def _write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise OtaFormatError(f"cannot write the package: {exc.strerror}") from None
