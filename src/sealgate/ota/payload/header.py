"""The fixed header of a major-version-2 payload.bin, and the layout it implies.

update_engine's layout (update_metadata.proto's comment, payload_consumer/payload_metadata.cc): the magic "CrAU",
the major version as a big-endian u64 (2; version 1 was Chrome OS's, long gone), the manifest size (u64) and the
metadata signature size (u32), then the serialised DeltaArchiveManifest, then the metadata signature (a Signatures
message), then the data blobs; the payload signature (another Signatures message) sits at the manifest's
signatures_offset into the blobs. "Metadata" is header + manifest: what the metadata signature and
payload_properties.txt's METADATA_HASH cover.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sealgate.errors import PayloadError

MAGIC = b"CrAU"
MAJOR_VERSION = 2
HEADER_SIZE = 24
_HEADER = struct.Struct(">4sQQI")
#: Far above any real manifest (a few MB for a full Pixel OTA), low enough that a corrupt size field cannot make
#: the reader allocate gigabytes.
MAX_MANIFEST_SIZE = 64 * 1024 * 1024
MAX_METADATA_SIGNATURE_SIZE = 64 * 1024


@dataclass(frozen=True)
class PayloadHeader:
    major_version: int
    manifest_size: int
    metadata_signature_size: int

    @property
    def metadata_size(self) -> int:
        """Header plus manifest: the bytes the metadata signature covers."""
        return HEADER_SIZE + self.manifest_size

    @property
    def data_offset(self) -> int:
        """Where the data blobs start, relative to the payload's first byte."""
        return self.metadata_size + self.metadata_signature_size

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, self.major_version, self.manifest_size, self.metadata_signature_size)

    @classmethod
    def parse(cls, data: bytes, payload_size: int) -> PayloadHeader:
        """The header at the start of `data`, checked against the size of the whole payload."""
        if len(data) < HEADER_SIZE or payload_size < HEADER_SIZE:
            raise PayloadError(f"the payload is {payload_size} bytes, too small for the {HEADER_SIZE}-byte header")
        magic, version, manifest_size, signature_size = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise PayloadError(f"not an A/B payload: magic {magic!r}, expected {MAGIC!r}")
        if version != MAJOR_VERSION:
            raise PayloadError(f"unsupported payload major version {version} (only {MAJOR_VERSION} is supported)")
        if manifest_size == 0 or manifest_size > MAX_MANIFEST_SIZE:
            raise PayloadError(f"implausible manifest size {manifest_size}")
        if signature_size > MAX_METADATA_SIGNATURE_SIZE:
            raise PayloadError(f"implausible metadata signature size {signature_size}")
        header = cls(version, manifest_size, signature_size)
        if header.data_offset > payload_size:
            raise PayloadError(
                f"the header claims {header.data_offset} bytes of metadata, but the payload is {payload_size} bytes"
            )
        return header
