"""Verification reports: verdicts are results with typed issues, not exceptions.

Modelled on apksig's `ApkVerifier.Result`: every problem found is kept as an `Issue` with a stable code (apksig's
issue names where one exists, so people can look them up) and a sentence a person understands, and the verdict is
simply "no errors". Exceptions are kept for input that is too malformed to report on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sealgate.apk.certificate import Certificate
    from sealgate.apk.lineage import Lineage


class Scheme(IntEnum):
    """APK signature schemes, numbered as the CLI's `schemes` list numbers them."""

    V1 = 1
    V2 = 2
    V3 = 3
    V31 = 31
    V4 = 4

    @property
    def label(self) -> str:
        return "v3.1" if self is Scheme.V31 else f"v{int(self)}"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem: `code` is stable for scripts, `message` is for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(slots=True)
class SignerResult:
    """One signer inside one scheme's block, with what was checked about it."""

    index: int
    #: The signer's certificate first, then any others the block carried, each as its original bytes.
    certificates: list[Certificate] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    #: The SDK range this signer covers (v3 and v3.1 signers declare one; v1/v2 signers cover everything).
    min_sdk: int | None = None
    max_sdk: int | None = None
    #: The proof-of-rotation lineage this signer carries (v3, v3.1), else None.
    lineage: Lineage | None = None
    #: Signature algorithm IDs (v2/v3) or names (v1) actually verified.
    verified_algorithms: list[str] = field(default_factory=list)
    #: Content digests this signer signed and that matched the APK, by signature algorithm id (v2/v3/v3.1).
    content_digests: dict[int, bytes] = field(default_factory=dict)
    #: The signer's name where the scheme gives one (v1: the signature block file, e.g. "CERT.RSA").
    name: str | None = None

    @property
    def certificate(self) -> Certificate | None:
        return self.certificates[0] if self.certificates else None

    def error(self, code: str, message: str) -> None:
        self.errors.append(Issue(code, message))

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(Issue(code, message))


@dataclass(slots=True)
class SchemeResult:
    """What one scheme (v1, v2, v3, v3.1 or v4) found."""

    scheme: Scheme
    #: True when the scheme's block/signature was found in the APK at all.
    present: bool = False
    signers: list[SignerResult] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    #: Content digests computed and checked, keyed by content-digest algorithm id (v2/v3/v3.1; v4 compares them).
    content_digests: dict[int, bytes] = field(default_factory=dict)
    #: v3/v3.1: the signers' lineages consolidated (the longest, which every other must be a prefix of).
    lineage: Lineage | None = None

    @property
    def verified(self) -> bool:
        return self.present and not self.all_errors()

    def all_errors(self) -> list[Issue]:
        return [*self.errors, *(issue for signer in self.signers for issue in signer.errors)]

    def all_warnings(self) -> list[Issue]:
        return [*self.warnings, *(issue for signer in self.signers for issue in signer.warnings)]

    def error(self, code: str, message: str) -> None:
        self.errors.append(Issue(code, message))

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(Issue(code, message))
