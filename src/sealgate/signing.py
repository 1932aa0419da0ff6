"""The one interface every signature in sealgate goes through, and its in-memory implementation.

APK signatures, OTA packages, verified-boot images, repository indexes, TUF metadata and log checkpoints all sign
through a `Signer`, whatever holds the key: an encrypted keystore file on the custodian's machine or a PKCS#11 token
that never lets the key out. Callers name the exact algorithm (no silent defaults for a security choice), and large
artifacts are hashed by the caller while streaming, then signed as a digest, so a token never has to receive
gigabytes.

This module sits at the bottom of the layers (beside `errors`) so that format code (the APK and OTA signers) can
accept any `Signer` without importing custody; `sealgate.custody` provides the backends that hold real keys.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sealgate.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

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


class PrivateKeySigner:
    """A `Signer` over a private key held in this process (a decrypted keystore entry, a test key)."""

    def __init__(self, name: str, private_key: PrivateKeyTypes, certificate: Certificate):
        self._name = name
        self._key = private_key
        self._certificate = certificate
        if _key_type(private_key.public_key()) == "unsupported":
            raise UsageError(f"key {name!r} is of an unsupported type {type(private_key).__name__}")

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> PublicKeyTypes:
        return self._key.public_key()

    @property
    def certificate(self) -> Certificate:
        return self._certificate

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        return key_algorithms(self.public_key)

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        self._check(algorithm)
        if algorithm is SigningAlgorithm.ED25519:
            from cryptography.hazmat.primitives.asymmetric import ed25519

            assert isinstance(self._key, ed25519.Ed25519PrivateKey)
            return self._key.sign(data)
        return self.sign_digest(algorithm.digest(data), algorithm)

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        self._check(algorithm)
        if algorithm.hash_name is None:
            raise UsageError(f"{algorithm.value} signs whole messages; use sign(), not sign_digest()")
        hash_algorithm = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha512": hashes.SHA512()}[
            algorithm.hash_name
        ]
        if len(digest) != hash_algorithm.digest_size:
            raise UsageError(f"{algorithm.value} needs a {hash_algorithm.digest_size}-byte digest, got {len(digest)}")
        prehashed = Prehashed(hash_algorithm)
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
                if algorithm.value.startswith("rsa-pss")
                else padding.PKCS1v15()
            )
            return key.sign(digest, pad, prehashed)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(digest, ec.ECDSA(prehashed))
        if isinstance(key, dsa.DSAPrivateKey):
            return key.sign(digest, prehashed)
        raise UsageError(f"key {self._name!r} cannot sign with {algorithm.value}")

    def _check(self, algorithm: SigningAlgorithm) -> None:
        if algorithm not in self.algorithms():
            raise UsageError(
                f"key {self._name!r} is a {_key_type(self.public_key)} key and cannot sign with {algorithm.value}"
            )


def key_algorithms(public_key: PublicKeyTypes) -> frozenset[SigningAlgorithm]:
    """Every algorithm a key of this type can sign with."""
    key_type = _key_type(public_key)
    return frozenset(algorithm for algorithm in SigningAlgorithm if algorithm.key_type == key_type)


def _key_type(public_key: PublicKeyTypes) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return "unsupported"
