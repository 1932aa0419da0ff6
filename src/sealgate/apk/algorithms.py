"""Signature algorithms of APK Signature Schemes v2, v3, v3.1, v4 and proof-of-rotation lineages.

The IDs, content-digest algorithms and minimum SDK levels are those of AOSP's apksig `SignatureAlgorithm` and the
platform verifier; primitives come from `cryptography`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

ANDROID_N = 24
ANDROID_P = 28


class ContentDigest(IntEnum):
    """How the APK's contents are digested; the value orders them as apksig prefers them (higher is better)."""

    CHUNKED_SHA256 = 1
    VERITY_CHUNKED_SHA256 = 2
    CHUNKED_SHA512 = 3

    @property
    def hash_name(self) -> str:
        return "sha512" if self is ContentDigest.CHUNKED_SHA512 else "sha256"

    @property
    def digest_size(self) -> int:
        return 64 if self is ContentDigest.CHUNKED_SHA512 else 32


@dataclass(frozen=True, slots=True)
class SignatureAlgorithm:
    id: int
    name: str
    key_type: str  # "RSA", "EC" or "DSA"
    hash_name: str
    pss: bool
    content_digest: ContentDigest
    #: First platform level whose APK verifier knows this algorithm.
    min_sdk: int

    def verify(self, public_key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
        """True when `signature` over `data` verifies; False for a wrong signature or a key of the wrong type."""
        # Imported here: the table above is needed before cryptography is (see sealgate.apk.signer_blocks).
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

        hash_algorithm: hashes.HashAlgorithm = hashes.SHA512() if self.hash_name == "sha512" else hashes.SHA256()
        try:
            if self.key_type == "RSA":
                if not isinstance(public_key, rsa.RSAPublicKey):
                    return False
                pad: padding.AsymmetricPadding
                if self.pss:
                    pad = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
                else:
                    pad = padding.PKCS1v15()
                public_key.verify(signature, data, pad, hash_algorithm)
            elif self.key_type == "EC":
                if not isinstance(public_key, ec.EllipticCurvePublicKey):
                    return False
                public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
            elif self.key_type == "DSA":
                if not isinstance(public_key, dsa.DSAPublicKey):
                    return False
                public_key.verify(signature, data, hash_algorithm)
            else:
                return False
        except (InvalidSignature, ValueError):
            return False
        return True


_ALGORITHMS = (
    SignatureAlgorithm(0x0101, "RSASSA-PSS with SHA2-256", "RSA", "sha256", True, ContentDigest.CHUNKED_SHA256, 24),
    SignatureAlgorithm(0x0102, "RSASSA-PSS with SHA2-512", "RSA", "sha512", True, ContentDigest.CHUNKED_SHA512, 24),
    SignatureAlgorithm(
        0x0103, "RSASSA-PKCS1-v1_5 with SHA2-256", "RSA", "sha256", False, ContentDigest.CHUNKED_SHA256, 24
    ),
    SignatureAlgorithm(
        0x0104, "RSASSA-PKCS1-v1_5 with SHA2-512", "RSA", "sha512", False, ContentDigest.CHUNKED_SHA512, 24
    ),
    SignatureAlgorithm(0x0201, "ECDSA with SHA2-256", "EC", "sha256", False, ContentDigest.CHUNKED_SHA256, 24),
    SignatureAlgorithm(0x0202, "ECDSA with SHA2-512", "EC", "sha512", False, ContentDigest.CHUNKED_SHA512, 24),
    SignatureAlgorithm(0x0301, "DSA with SHA2-256", "DSA", "sha256", False, ContentDigest.CHUNKED_SHA256, 24),
    SignatureAlgorithm(
        0x0421,
        "RSASSA-PKCS1-v1_5 with SHA2-256 (verity)",
        "RSA",
        "sha256",
        False,
        ContentDigest.VERITY_CHUNKED_SHA256,
        28,
    ),
    SignatureAlgorithm(
        0x0423, "ECDSA with SHA2-256 (verity)", "EC", "sha256", False, ContentDigest.VERITY_CHUNKED_SHA256, 28
    ),
    SignatureAlgorithm(
        0x0425, "DSA with SHA2-256 (verity)", "DSA", "sha256", False, ContentDigest.VERITY_CHUNKED_SHA256, 28
    ),
)

BY_ID: dict[int, SignatureAlgorithm] = {algorithm.id: algorithm for algorithm in _ALGORITHMS}


def find(algorithm_id: int) -> SignatureAlgorithm | None:
    return BY_ID.get(algorithm_id)


def is_better(candidate: SignatureAlgorithm, current: SignatureAlgorithm) -> bool:
    """apksig's preference: SHA-512 chunked over verity SHA-256 over SHA-256 chunked."""
    return candidate.content_digest > current.content_digest


def key_type_of(public_key: PublicKeyTypes) -> str:
    """ "RSA", "EC", "DSA" or the class name: what `SignatureAlgorithm.key_type` is compared against."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA"
    return type(public_key).__name__
