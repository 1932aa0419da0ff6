"""The one interface every signature in sealgate goes through.

APK signatures, OTA packages, verified-boot images, repository indexes, TUF metadata and log checkpoints all sign
through a `Signer`, whatever holds the key: an encrypted keystore file on the custodian's machine or a PKCS#11 token
that never lets the key out. Callers name the exact algorithm (no silent defaults for a security choice), and large
artifacts are hashed by the caller while streaming, then signed as a digest, so a token never has to receive
gigabytes.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from sealgate.apk.certificate import Certificate


class SigningAlgorithm(Enum):
    """Signature algorithms by what the consumer verifies; the value is the stable name used in files and logs."""

    RSA_PKCS1_SHA1 = "rsa-pkcs1-sha1"  # JAR signatures for minSdkVersion < 18 only
    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA512 = "rsa-pkcs1-sha512"
    RSA_PSS_SHA256 = "rsa-pss-sha256"  # MGF1 with the same hash, salt length = digest length
    RSA_PSS_SHA512 = "rsa-pss-sha512"
    ECDSA_SHA1 = "ecdsa-sha1"
    ECDSA_SHA256 = "ecdsa-sha256"  # signature DER-encoded (SEQUENCE of r, s), as Java and apksig expect
    ECDSA_SHA512 = "ecdsa-sha512"
    DSA_SHA1 = "dsa-sha1"
    DSA_SHA256 = "dsa-sha256"  # signature DER-encoded
    ED25519 = "ed25519"  # pure EdDSA: cannot sign a precomputed digest

    @property
    def key_type(self) -> str:
        """ "RSA", "EC", "DSA" or "Ed25519"."""
        prefix = self.value.split("-", 1)[0]
        return {"rsa": "RSA", "ecdsa": "EC", "dsa": "DSA", "ed25519": "Ed25519"}[prefix]

    @property
    def hash_name(self) -> str | None:
        """The hashlib name of the digest signed, or None for Ed25519."""
        return None if self is SigningAlgorithm.ED25519 else self.value.rsplit("-", 1)[1]

    def digest(self, data: bytes) -> bytes:
        """The digest `sign_digest` expects for `data`."""
        if self.hash_name is None:
            raise ValueError(f"{self.value} signs messages, not digests")
        return hashlib.new(self.hash_name, data).digest()


@runtime_checkable
class Signer(Protocol):
    """A private key that can sign, and the public identity that goes with it."""

    @property
    def name(self) -> str:
        """The key's name in its store (a role such as "releasekey", or a token label)."""
        ...

    @property
    def public_key(self) -> PublicKeyTypes: ...

    @property
    def certificate(self) -> Certificate:
        """The key's X.509 certificate (self-signed for the distribution's roles), as its original bytes."""
        ...

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        """The algorithms this key can sign with (by key type and backend)."""
        ...

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        """Sign `data`; raises UsageError when the algorithm does not fit the key."""
        ...

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        """Sign a digest the caller computed with `algorithm.hash_name`, for artifacts streamed from disk.

        The result is byte-for-byte what `sign(data, algorithm)` gives for data with that digest.
        """
        ...
