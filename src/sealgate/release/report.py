"""What signing a target-files package did, as a result object (for people and for `--json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sealgate.apk.report import Issue


@dataclass(frozen=True)
class SignedPackage:
    """One APK or APEX of the package and what happened to it."""

    path: str
    #: The apkcerts certificate name it was built with (".../platform"), or PRESIGNED / EXTERNAL.
    certificate: str
    #: "signed", "presigned" (PRESIGNED or EXTERNAL in apkcerts.txt, copied byte for byte) or "apex-presigned".
    action: str
    role: str | None = None
    signer_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "certificate": self.certificate,
            "action": self.action,
            "role": self.role,
            "signer_sha256": self.signer_sha256,
        }


@dataclass
class SignReport:
    input: str
    output: str
    packages: list[SignedPackage] = field(default_factory=list)
    #: Prop files rewritten from test-keys to release-keys.
    props_rewritten: list[str] = field(default_factory=list)
    #: otacerts.zip copies replaced with the OTA certificate.
    otacerts: list[str] = field(default_factory=list)
    ota_certificate_sha256: str | None = None
    #: {"algorithm", "rollback_index", "signer_sha256", "public_key_digest", "chained"} when vbmeta was re-signed.
    vbmeta: dict[str, Any] | None = None
    #: IMAGES/*.img whose source directory changed: they still hold the old contents until rebuilt.
    images_to_rebuild: list[str] = field(default_factory=list)
    #: IMAGES/*.img rebuilt from the signed directories, and the vbmeta images re-signed to describe them.
    images_rebuilt: list[str] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)

    @property
    def signed(self) -> list[SignedPackage]:
        return [package for package in self.packages if package.action == "signed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "packages": [package.to_json() for package in self.packages],
            "props_rewritten": self.props_rewritten,
            "otacerts": self.otacerts,
            "ota_certificate_sha256": self.ota_certificate_sha256,
            "vbmeta": self.vbmeta,
            "images_to_rebuild": self.images_to_rebuild,
            "images_rebuilt": self.images_rebuilt,
            "notes": [note.to_json() for note in self.notes],
        }
