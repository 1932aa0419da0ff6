"""The signature algorithms of vbmeta images (AvbAlgorithmType in libavb/avb_crypto.h, avbtool.py ALGORITHMS).

Every signed algorithm is RSA PKCS#1 v1.5 over the SHA-256 or SHA-512 digest of the header and auxiliary block, with
the standard DigestInfo prefix (the padding tables of libavb/avb_crypto.c are 0x00 0x01 0xff.. 0x00 followed by the
DER DigestInfo header of sha256 or sha512), so `SigningAlgorithm.RSA_PKCS1_SHA256` / `RSA_PKCS1_SHA512` of a
`Signer` produce exactly the signature libavb checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealgate.errors import UsageError
from sealgate.signing import SigningAlgorithm


@dataclass(frozen=True)
class AvbAlgorithm:
    name: str
    type: int
    hash_name: str | None
    key_bits: int | None

    @property
    def hash_size(self) -> int:
        return {None: 0, "sha256": 32, "sha512": 64}[self.hash_name]

    @property
    def signature_size(self) -> int:
        return (self.key_bits or 0) // 8

    @property
    def public_key_size(self) -> int:
        """Size of the AvbRSAPublicKeyHeader-format key (0 for NONE)."""
        return 8 + 2 * self.signature_size if self.key_bits else 0

    @property
    def signing_algorithm(self) -> SigningAlgorithm:
        if self.hash_name == "sha256":
            return SigningAlgorithm.RSA_PKCS1_SHA256
        if self.hash_name == "sha512":
            return SigningAlgorithm.RSA_PKCS1_SHA512
        raise UsageError("algorithm NONE does not sign")


NONE = AvbAlgorithm("NONE", 0, None, None)
ALGORITHMS: dict[str, AvbAlgorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        NONE,
        AvbAlgorithm("SHA256_RSA2048", 1, "sha256", 2048),
        AvbAlgorithm("SHA256_RSA4096", 2, "sha256", 4096),
        AvbAlgorithm("SHA256_RSA8192", 3, "sha256", 8192),
        AvbAlgorithm("SHA512_RSA2048", 4, "sha512", 2048),
        AvbAlgorithm("SHA512_RSA4096", 5, "sha512", 4096),
        AvbAlgorithm("SHA512_RSA8192", 6, "sha512", 8192),
    )
}
_BY_TYPE = {algorithm.type: algorithm for algorithm in ALGORITHMS.values()}


def by_type(algorithm_type: int) -> AvbAlgorithm | None:
    return _BY_TYPE.get(algorithm_type)


def by_name(name: str) -> AvbAlgorithm:
    """The algorithm named as avbtool names it ("SHA256_RSA4096"); UsageError for another name."""
    algorithm = ALGORITHMS.get(name.upper())
    if algorithm is None or algorithm is NONE:
        raise UsageError(f"unknown AVB algorithm {name!r}; expected one of {', '.join(list(ALGORITHMS)[1:])}")
    return algorithm


def for_key_bits(bits: int, *, hash_name: str = "sha256") -> AvbAlgorithm:
    return ALGORITHMS[f"{hash_name.upper()}_RSA{bits}"]
