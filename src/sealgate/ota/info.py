"""What an OTA package says about itself: its metadata, its property files, and who signed it (unverified).

META-INF/com/android/metadata is the text recovery and update_engine read: sorted `key=value` lines (pre-device,
post-build, post-timestamp, post-security-patch-level, ota-type, ota-downgrade, ota-wipe, the property files).
Property files (`ota-property-files`, `ota-streaming-property-files`) are `name:offset:size` tokens that let a
device stream payload.bin and friends straight out of the zip; each is checked here against where the entry's data
really lies (data offset from its local header, as releasetools computes it), so a package whose tokens point at
the wrong bytes is reported (payload_metadata.bin's size too, from the payload's header). The metadata is also
read as `metadata.read_package_metadata` reads it (metadata.pb first, the text checked against it), so a package
whose metadata is malformed or self-contradictory is an OtaFormatError here as it is for a device. Nothing here is
a verdict on the signature: `whole_file.verify_package` is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sealgate.apk.certificate import Certificate
from sealgate.errors import OtaFormatError, SealgateError
from sealgate.ota.metadata import METADATA_PROTO_NAME, OtaMetadata, read_package_metadata
from sealgate.ziparchive import ZipArchive, ZipEntry, not_a_zip_reason

METADATA = "META-INF/com/android/metadata"
_PROPERTY_KEYS = ("ota-property-files", "ota-streaming-property-files")
_MAX_METADATA = 1024 * 1024
#: Token names that stand for a part of an entry rather than an entry.
_PAYLOAD_METADATA = "payload_metadata.bin"


@dataclass
class PropertyFile:
    name: str
    offset: int
    size: int
    matches: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "offset": self.offset, "size": self.size, "matches": self.matches}


@dataclass
class OtaInfo:
    path: str
    metadata: dict[str, str] = field(default_factory=dict)
    property_files: dict[str, list[PropertyFile]] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)
    whole_file_signed: bool = False
    #: The certificate inside the whole-file signature, as the package claims it (not verified here).
    claimed_signer: Certificate | None = None
    #: The metadata as `metadata.read_package_metadata` reads it (metadata.pb first), None without any metadata.
    ota_metadata: OtaMetadata | None = None
    #: The entry `ota_metadata` was read from: "metadata.pb", "metadata", or None.
    metadata_source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "metadata": self.metadata,
            "property_files": {key: [item.to_json() for item in items] for key, items in self.property_files.items()},
            "entries": self.entries,
            "whole_file_signed": self.whole_file_signed,
            "claimed_signer": (
                {"sha256": self.claimed_signer.sha256, "subject": self.claimed_signer.subject}
                if self.claimed_signer is not None
                else None
            ),
            "ota_metadata": self.ota_metadata.to_json() if self.ota_metadata is not None else None,
            "metadata_source": self.metadata_source,
        }


def read_info(path: str | os.PathLike[str]) -> OtaInfo:
    """The package's metadata and property files; OtaFormatError when it is not a ZIP archive at all, or when its
    metadata is malformed (metadata.pb that does not parse, values of the wrong type, text and .pb disagreeing)."""
    info = OtaInfo(os.fspath(path))
    try:
        archive = ZipArchive.open(path)
    except SealgateError as exc:
        raise OtaFormatError(f"{os.fspath(path)}: {not_a_zip_reason(exc)}") from None
    with archive:
        info.entries = [entry.name for entry in archive.entries]
        entry = archive.entry(METADATA)
        if entry is not None:
            text = archive.read(entry, max_size=_MAX_METADATA).decode("utf-8", errors="replace")
            info.metadata = parse_metadata(text)
        if archive.entry(METADATA_PROTO_NAME) is not None:
            info.metadata_source = "metadata.pb"
        elif entry is not None:
            info.metadata_source = "metadata"
        if info.metadata_source is not None:
            info.ota_metadata = read_package_metadata(path)
        # The text's property files when there is a text, else metadata.pb's: the ones a client would read.
        source = info.metadata or (info.ota_metadata.property_files if info.ota_metadata is not None else {})
        for key in _PROPERTY_KEYS:
            if key in source:
                info.property_files[key] = _check_tokens(archive, source[key])
        info.whole_file_signed, info.claimed_signer = _claimed_signer(archive)
    return info


def text_property_files(archive: ZipArchive) -> dict[str, list[PropertyFile]]:
    """The text metadata's property-files tokens, each checked against the entry it names; lenient (no metadata,
    or tokens that do not parse, give fewer of them), for callers that only compare layouts, like the signer."""
    entry = archive.entry(METADATA)
    if entry is None:
        return {}
    values = parse_metadata(archive.read(entry, max_size=_MAX_METADATA).decode("utf-8", errors="replace"))
    return {key: _check_tokens(archive, values[key]) for key in _PROPERTY_KEYS if key in values}


def parse_metadata(text: str) -> dict[str, str]:
    """`key=value` lines; values keep everything after the first '=' (trimmed, as recovery trims them)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if separator and key.strip():
            result[key.strip()] = value.strip()
    return result


def _check_tokens(archive: ZipArchive, value: str) -> list[PropertyFile]:
    by_base = {entry.name.rsplit("/", 1)[-1]: entry for entry in archive.entries}
    tokens = []
    for token in value.split(","):
        name, _, rest = token.strip().partition(":")
        offset_text, _, size_text = rest.partition(":")
        if not name or not offset_text.isdigit() or not size_text.isdigit():
            continue
        offset, size = int(offset_text), int(size_text)
        lookup = "payload.bin" if name == _PAYLOAD_METADATA else name
        entry = by_base.get(lookup)
        matches = entry is not None and entry.data_offset == offset
        if entry is not None and name != _PAYLOAD_METADATA:
            matches = matches and entry.uncompressed_size == size and entry.compressed_size == size
        elif entry is not None:
            matches = matches and _payload_metadata_size(archive, entry) == size
        tokens.append(PropertyFile(name, offset, size, matches))
    return tokens


def _payload_metadata_size(archive: ZipArchive, payload: ZipEntry) -> int | None:
    """The size payload_metadata.bin stands for (header, manifest, metadata signature), None if not a payload."""
    from sealgate.ota.package import payload_metadata_size

    try:
        return payload_metadata_size(archive, payload)
    except SealgateError:
        return None


def _claimed_signer(archive: ZipArchive) -> tuple[bool, Certificate | None]:
    from asn1crypto import cms

    from sealgate.ota.whole_file import FOOTER_SIZE

    comment = archive.sections.comment
    if len(comment) < FOOTER_SIZE or comment[-4:-2] != b"\xff\xff":
        return False, None
    start = comment[-6] | comment[-5] << 8
    if not FOOTER_SIZE < start <= len(comment):
        return True, None
    try:
        signed_data = cms.ContentInfo.load(comment[len(comment) - start : len(comment) - FOOTER_SIZE])["content"]
        certificates = signed_data["certificates"]
        if certificates.native is None or len(certificates) == 0:
            return True, None
        return True, Certificate.from_der(certificates[0].chosen.dump())
    except (ValueError, TypeError, KeyError, SealgateError):
        return True, None
