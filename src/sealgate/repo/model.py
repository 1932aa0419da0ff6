"""What one section of a repository (repo/ or archive/) indexes: its apps, their versions, and their dates.

Both index formats (v1 and v2) are written from this one model, so they cannot disagree about what is indexed.
Versions are ordered as fdroidserver orders them (`sort_package_versions`): by package name, then by signer
fingerprint, then newest version first; an app's preferred signer is the signer of its first version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sealgate.repo.metadata import AppMetadata
from sealgate.repo.scan import ScannedApk

#: The index format version fdroidserver 2.4.5 writes (update.METADATA_VERSION).
INDEX_VERSION = 20002
#: The locale of texts from config.yml and metadata files, fdroidserver's DEFAULT_LOCALE.
DEFAULT_LOCALE = "en-US"


@dataclass(frozen=True)
class FileEntry:
    """A published file as index-v2 names it: path from the section's root (with a leading /), hash and size."""

    name: str
    sha256: str
    size: int

    @classmethod
    def of_bytes(cls, name: str, data: bytes) -> FileEntry:
        return cls(name, hashlib.sha256(data).hexdigest(), len(data))

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class IndexedVersion:
    scan: ScannedApk
    #: When the file first appeared in the repository, in milliseconds since the epoch (whole seconds).
    added: int

    @property
    def signer(self) -> str:
        return self.scan.signers[0] if self.scan.signers else ""


@dataclass(frozen=True)
class IndexedApp:
    metadata: AppMetadata
    versions: tuple[IndexedVersion, ...]
    #: First and latest `added` over the app's files in both sections, as fdroidserver computes them.
    added: int
    last_updated: int
    #: The version code the store suggests; versions above it are offered on the Beta channel.
    current_version_code: int
    #: The newest version's launcher icon under icons/, if it has a PNG one.
    icon: FileEntry | None = None

    @property
    def package(self) -> str:
        return self.metadata.package

    @property
    def preferred_signer(self) -> str:
        return self.versions[0].signer if self.versions else ""


@dataclass(frozen=True)
class Section:
    """repo/ or archive/: its texts, address, mirrors and apps, and the moment the index is made."""

    kind: str
    name: str
    description: str
    address: str
    icon: FileEntry | None
    icon_name: str
    mirrors: tuple[str, ...]
    timestamp: int
    apps: tuple[IndexedApp, ...]


def sort_versions(versions: list[IndexedVersion], developer_signer: str | None = None) -> list[IndexedVersion]:
    """fdroidserver's order: versions signed by the developer whose build was reproduced first, then by signer
    fingerprint, then newest version code first (then file name, for stability)."""
    return sorted(versions, key=lambda v: (v.signer != developer_signer, v.signer, -v.scan.version_code, v.scan.name))
