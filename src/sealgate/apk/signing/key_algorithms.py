"""Which signature algorithm each key signs with, as apksig chooses it.

APK Signature Schemes v2 and v3 (and proof-of-rotation lineages) use RSASSA-PKCS1-v1_5, not PSS, so the same key
and input always give the same bytes; the digest is no weaker than the key: SHA-256 up to RSA-3072 and EC P-256,
SHA-512 above. DSA signs with SHA-256. JAR (v1) signatures digest with SHA-256 from Android 4.3 (API 18) on and with
SHA-1 below, where nothing else verifies (DSA needs API 21 for SHA-256; ECDSA is unknown below API 18).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from sealgate.apk import algorithms
from sealgate.apk.algorithms import SignatureAlgorithm
from sealgate.errors import UsageError
from sealgate.signing import Signer, SigningAlgorithm

ANDROID_JELLY_BEAN_MR2 = 18
ANDROID_LOLLIPOP = 21

#: v2/v3 algorithm IDs to the Signer algorithm that produces their signatures.
_BLOCK_SIGNING = {
    0x0103: SigningAlgorithm.RSA_PKCS1_SHA256,
    0x0104: SigningAlgorithm.RSA_PKCS1_SHA512,
    0x0201: SigningAlgorithm.ECDSA_SHA256,
    0x0202: SigningAlgorithm.ECDSA_SHA512,
    0x0301: SigningAlgorithm.DSA_SHA256,
}


@dataclass(frozen=True)
class BlockAlgorithm:
    """A v2/v3/v3.1 (or lineage) signature algorithm and the Signer algorithm that makes it."""

    apk: SignatureAlgorithm
    signing: SigningAlgorithm


@dataclass(frozen=True)
class JarAlgorithm:
    """The digest of a JAR signature ("SHA-1" or "SHA-256") and the Signer algorithm over the .SF file."""

    digest: str
    signing: SigningAlgorithm
    key_type: str


def block_algorithm(signer: Signer) -> BlockAlgorithm:
    """apksig's V3SchemeSigner.getSuggestedSignatureAlgorithms (first entry, verity off)."""
    key = signer.public_key
    if isinstance(key, rsa.RSAPublicKey):
        algorithm_id = 0x0103 if key.key_size <= 3072 else 0x0104
    elif isinstance(key, ec.EllipticCurvePublicKey):
        algorithm_id = 0x0201 if key.curve.key_size <= 256 else 0x0202
    elif isinstance(key, dsa.DSAPublicKey):
        algorithm_id = 0x0301
    else:
        raise UsageError(f"key {signer.name!r} is a {type(key).__name__}; APK signatures need an RSA, EC or DSA key")
    apk_algorithm = algorithms.BY_ID[algorithm_id]
    return BlockAlgorithm(apk_algorithm, _supported(signer, _BLOCK_SIGNING[algorithm_id]))


def jar_algorithm(signer: Signer, min_sdk: int) -> JarAlgorithm:
    """apksig's V1SchemeSigner.getSuggestedSignatureDigestAlgorithm and the matching PKCS #7 signature."""
    key = signer.public_key
    if isinstance(key, rsa.RSAPublicKey):
        sha1 = min_sdk < ANDROID_JELLY_BEAN_MR2
        signing = SigningAlgorithm.RSA_PKCS1_SHA1 if sha1 else SigningAlgorithm.RSA_PKCS1_SHA256
        return JarAlgorithm("SHA-1" if sha1 else "SHA-256", _supported(signer, signing), "RSA")
    if isinstance(key, dsa.DSAPublicKey):
        sha1 = min_sdk < ANDROID_LOLLIPOP
        signing = SigningAlgorithm.DSA_SHA1 if sha1 else SigningAlgorithm.DSA_SHA256
        return JarAlgorithm("SHA-1" if sha1 else "SHA-256", _supported(signer, signing), "DSA")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if min_sdk < ANDROID_JELLY_BEAN_MR2:
            raise UsageError(
                f"key {signer.name!r} is an EC key, and Android verifies ECDSA JAR signatures only from API "
                f"{ANDROID_JELLY_BEAN_MR2}; raise the minimum SDK (now {min_sdk}) or sign with an RSA key"
            )
        return JarAlgorithm("SHA-256", _supported(signer, SigningAlgorithm.ECDSA_SHA256), "EC")
    raise UsageError(f"key {signer.name!r} is a {type(key).__name__}; JAR signatures need an RSA, EC or DSA key")


def _supported(signer: Signer, algorithm: SigningAlgorithm) -> SigningAlgorithm:
    if algorithm not in signer.algorithms():
        raise UsageError(f"key {signer.name!r} cannot sign with {algorithm.value}, which this APK signature needs")
    return algorithm
