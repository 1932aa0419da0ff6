"""APK Signature Scheme v4: the .idsig file that lets Android stream an APK (incremental install) or check it with
fs-verity, and the checks that tie it to the APK's v2/v3/v3.1 signature.

A v4 signature does not sign the APK's bytes directly: it signs the root of the APK's Merkle tree (see `verity`) and
the content digest of the APK's v2/v3 signer. Android therefore accepts it only together with a verified v2/v3
signature from the same certificate over the same digest; `verify_v4` checks all three links (signature, tree root,
agreement with the v2/v3/v3.1 signers the caller verified).

File layout (little-endian; AOSP V4Signature, version 2)::

    int32 version (2)
    length-prefixed hashing info:  int32 hash algorithm (1 = SHA-256), uint8 log2 block size (12),
                                   length-prefixed salt, length-prefixed raw root hash
    length-prefixed signing infos: signing info, then zero or more blocks (int32 block id, length-prefixed signing
                                   info); apksig writes one block with the v3.1 block id for v3.1-signed APKs
        signing info: length-prefixed apk digest, certificate, additional data, public key (SubjectPublicKeyInfo),
                      int32 signature algorithm id, length-prefixed signature
    optional length-prefixed Merkle tree (levels from the top down)

The signed data for each signing info is: int32 its own size, int64 APK size, hash algorithm, log2 block size,
salt, raw root hash, apk digest, certificate, additional data (each byte field length-prefixed).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sealgate.apk import algorithms, verity
from sealgate.apk.algorithms import ContentDigest
from sealgate.apk.binary_reader import BinaryReader
from sealgate.apk.certificate import Certificate, CertificateError, load_public_key
from sealgate.apk.report import Scheme, SchemeResult, SignerResult
from sealgate.errors import IdsigFormatError, UsageError

IDSIG_VERSION = 2
HASHING_ALGORITHM_SHA256 = 1
LOG2_BLOCK_SIZE_4096 = 12
#: The signing-info block apksig adds for the APK Signature Scheme v3.1 signer.
V31_BLOCK_ID = 0x1B93AD61
#: Largest hashing info + signing infos the platform reads (INCFS_MAX_SIGNATURE_SIZE).
MAX_SIGNATURE_SIZE = 8096


@dataclass(frozen=True)
class HashingInfo:
    hash_algorithm: int
    log2_block_size: int
    salt: bytes
    raw_root_hash: bytes


@dataclass(frozen=True)
class SigningInfo:
    apk_digest: bytes
    certificate: bytes
    additional_data: bytes
    public_key: bytes
    signature_algorithm: int
    signature: bytes
    #: None for the main signing info; the block id for one carried in a signing-info block.
    block_id: int | None = None


@dataclass(frozen=True)
class IdsigFile:
    version: int
    hashing_info: HashingInfo
    #: The main signing info first, then one per signing-info block, in file order.
    signing_infos: tuple[SigningInfo, ...]
    #: The Merkle tree stored after the signature, or None when the file stops after the signing infos.
    tree: bytes | None

    def signed_data(self, apk_size: int, signing_info: SigningInfo) -> bytes:
        """The bytes `signing_info.signature` signs, for an APK of `apk_size` bytes."""
        hashing = self.hashing_info
        body = (
            struct.pack("<qiB", apk_size, hashing.hash_algorithm, hashing.log2_block_size)
            + _length_prefixed(hashing.salt)
            + _length_prefixed(hashing.raw_root_hash)
            + _length_prefixed(signing_info.apk_digest)
            + _length_prefixed(signing_info.certificate)
            + _length_prefixed(signing_info.additional_data)
        )
        return struct.pack("<i", 4 + len(body)) + body


@dataclass(frozen=True)
class V4ReferenceSigner:
    """What the v2/v3/v3.1 verification found for one signer, supplied by the orchestrator."""

    certificate: Certificate
    #: Signature algorithm id -> content digest the signer signed (as in its signed data).
    content_digests: dict[int, bytes]


def parse_idsig(data: bytes) -> IdsigFile:
    """Parse a .idsig file; IdsigFormatError when it is not one the platform can read."""
    reader = BinaryReader(data, ".idsig file", IdsigFormatError)
    version = reader.i32("version")
    if version != IDSIG_VERSION:
        raise IdsigFormatError(f".idsig version {version} is not supported; Android reads version {IDSIG_VERSION}")
    hashing_bytes = reader.length_prefixed("hashing info", limit=MAX_SIGNATURE_SIZE)
    signing_bytes = reader.length_prefixed("signing infos", limit=MAX_SIGNATURE_SIZE - len(hashing_bytes))
    tree = reader.length_prefixed("Merkle tree") if reader.remaining else None
    if reader.remaining:
        raise IdsigFormatError(f".idsig file has {reader.remaining} unexpected bytes after the Merkle tree")
    return IdsigFile(version, _parse_hashing_info(hashing_bytes), _parse_signing_infos(signing_bytes), tree)


def verify_v4(idsig: bytes, apk_fd: int, apk_size: int, reference_signers: Sequence[V4ReferenceSigner]) -> SchemeResult:
    """Verify a .idsig against the APK behind `apk_fd` and the signers its v2/v3/v3.1 verification found.

    `reference_signers` lists what each signing info must match, in order: the v3 signer (or, for an APK without
    v3, the v2 signer), then the v3.1 signer when the APK was verified with v3.1. Issue codes are apksig's.
    Raises IdsigFormatError when the file cannot be parsed at all.
    """
    if len(reference_signers) > 2:
        raise UsageError(f"a v4 signature matches at most two v2/v3/v3.1 signers, not {len(reference_signers)}")
    parsed = parse_idsig(idsig)
    result = SchemeResult(Scheme.V4, present=True)
    for index, info in enumerate(parsed.signing_infos):
        result.signers.append(_verify_signing_info(index, info, parsed, apk_size))
    _check_hash_tree(parsed, apk_fd, apk_size, result)
    _check_against_references(parsed, reference_signers, result)
    return result


# -- verification -------------------------------------------------------------------------------------------------


def _verify_signing_info(index: int, info: SigningInfo, parsed: IdsigFile, apk_size: int) -> SignerResult:
    signer = SignerResult(index)
    algorithm = algorithms.find(info.signature_algorithm)
    if algorithm is None:
        signer.error("V4_SIG_UNKNOWN_SIG_ALGORITHM", f"unknown signature algorithm 0x{info.signature_algorithm:04x}")
        return signer
    try:
        public_key = load_public_key(info.public_key)
    except CertificateError as exc:
        signer.error("V4_SIG_MALFORMED_PUBLIC_KEY", f"the v4 signer's public key cannot be read: {exc}")
        return signer
    if not algorithm.verify(public_key, info.signature, parsed.signed_data(apk_size, info)):
        signer.error(
            "V4_SIG_DID_NOT_VERIFY",
            f"the v4 signature ({algorithm.name}) does not verify; the .idsig does not belong to this APK "
            f"({apk_size} bytes) or was altered",
        )
        return signer
    signer.verified_algorithms.append(f"0x{algorithm.id:04x}")
    if not info.certificate:
        signer.error("V4_SIG_NO_CERTIFICATE", "the v4 signing info carries no certificate")
        return signer
    try:
        certificate = Certificate.from_der(info.certificate)
    except CertificateError as exc:
        signer.error("V4_SIG_MALFORMED_CERTIFICATE", f"the v4 signer's certificate is malformed: {exc}")
        return signer
    signer.certificates.append(certificate)
    if certificate.public_key_der != info.public_key:
        signer.error(
            "V4_SIG_PUBLIC_KEY_MISMATCH_BETWEEN_CERTIFICATE_AND_SIGNATURES_RECORD",
            "the public key in the v4 signing info is not the one in its certificate",
        )
    return signer


def _check_hash_tree(parsed: IdsigFile, apk_fd: int, apk_size: int, result: SchemeResult) -> None:
    hashing = parsed.hashing_info
    if hashing.hash_algorithm != HASHING_ALGORITHM_SHA256 or hashing.log2_block_size != LOG2_BLOCK_SIZE_4096:
        result.error(
            "V4_SIG_UNSUPPORTED_HASHING",
            f"the .idsig hash tree uses hash algorithm {hashing.hash_algorithm} with 2^{hashing.log2_block_size}-byte "
            "blocks; Android supports only SHA-256 (1) with 4096-byte blocks (12)",
        )
        return
    root, tree = verity.merkle_tree(verity.fd_reader(apk_fd), apk_size, hashing.salt)
    if root != hashing.raw_root_hash:
        result.error(
            "V4_SIG_APK_ROOT_DID_NOT_VERIFY",
            f"the APK's Merkle tree root {root.hex()} is not the one the .idsig signs ({hashing.raw_root_hash.hex()}); "
            "the APK was changed after it was signed",
        )
        return
    if parsed.tree is not None and parsed.tree != tree:
        result.error(
            "V4_SIG_APK_TREE_DID_NOT_VERIFY", "the Merkle tree stored in the .idsig is not the APK's Merkle tree"
        )
        return
    result.content_digests[int(ContentDigest.VERITY_CHUNKED_SHA256)] = root


def _check_against_references(parsed: IdsigFile, references: Sequence[V4ReferenceSigner], result: SchemeResult) -> None:
    if not references:
        result.error(
            "V4_SIG_NO_V2_V3_SIGNATURE",
            "a v4 signature is only valid together with a verified v2 or v3 signature, and this APK has none",
        )
        return
    if len(parsed.signing_infos) != len(references):
        two = len(references) == 2
        result.error(
            "V41_SIG_NEEDS_TWO_SIGNERS" if two else "V4_SIG_MULTIPLE_SIGNERS",
            f"the .idsig has {len(parsed.signing_infos)} signing infos, but the APK's v2/v3"
            f"{'/v3.1' if two else ''} signature calls for {len(references)}",
        )
        return
    if len(references) == 2 and parsed.signing_infos[1].block_id != V31_BLOCK_ID:
        result.error(
            "V41_SIG_NEEDS_TWO_SIGNERS",
            f"the .idsig has no signing-info block for the v3.1 signer (block id 0x{V31_BLOCK_ID:08x})",
        )
        return
    for info, signer, reference in zip(parsed.signing_infos, result.signers, references, strict=True):
        if not signer.errors and signer.certificate is not None:
            _compare_signer(info, signer, reference)


def _compare_signer(info: SigningInfo, signer: SignerResult, reference: V4ReferenceSigner) -> None:
    if signer.certificate != reference.certificate:
        signer.error(
            "V4_SIG_V2_V3_SIGNERS_MISMATCH",
            f"the v4 signer ({_describe(signer.certificate)}) is not the v2/v3 signer "
            f"({_describe(reference.certificate)})",
        )
    expected = pick_best_digest_for_v4(reference.content_digests)
    if expected != info.apk_digest:
        signer.error(
            "V4_SIG_V2_V3_DIGESTS_MISMATCH",
            f"the APK digest the v4 signature covers ({info.apk_digest.hex()}) is not the v2/v3 signer's content "
            f"digest ({expected.hex() if expected is not None else 'none of a kind v4 can use'})",
        )


def pick_best_digest_for_v4(content_digests: dict[int, bytes]) -> bytes | None:
    """The v2/v3 digest a v4 signature covers: CHUNKED_SHA512, else VERITY_CHUNKED_SHA256, else CHUNKED_SHA256."""
    by_kind: dict[ContentDigest, bytes] = {}
    for algorithm_id, digest in content_digests.items():
        algorithm = algorithms.find(algorithm_id)
        if algorithm is not None:
            by_kind[algorithm.content_digest] = digest
    for kind in (ContentDigest.CHUNKED_SHA512, ContentDigest.VERITY_CHUNKED_SHA256, ContentDigest.CHUNKED_SHA256):
        if kind in by_kind:
            return by_kind[kind]
    return None


def _describe(certificate: Certificate | None) -> str:
    return "none" if certificate is None else f"{certificate.subject}, SHA-256 {certificate.sha256}"


# -- parsing ------------------------------------------------------------------------------------------------------


def _parse_hashing_info(data: bytes) -> HashingInfo:
    reader = BinaryReader(data, ".idsig hashing info", IdsigFormatError)
    hash_algorithm = reader.i32("hash algorithm")
    log2_block_size = reader.u8("log2 block size")
    salt = reader.length_prefixed("salt")
    raw_root_hash = reader.length_prefixed("raw root hash")
    return HashingInfo(hash_algorithm, log2_block_size, salt, raw_root_hash)


def _parse_signing_infos(data: bytes) -> tuple[SigningInfo, ...]:
    reader = BinaryReader(data, ".idsig signing infos", IdsigFormatError)
    infos = [_read_signing_info(reader, None)]
    while reader.remaining:
        block_id = reader.i32("signing-info block id") & 0xFFFFFFFF
        block = BinaryReader(
            reader.length_prefixed("signing-info block"),
            f".idsig signing-info block 0x{block_id:08x}",
            IdsigFormatError,
        )
        infos.append(_read_signing_info(block, block_id))
    return tuple(infos)


def _read_signing_info(reader: BinaryReader, block_id: int | None) -> SigningInfo:
    return SigningInfo(
        apk_digest=reader.length_prefixed("APK digest"),
        certificate=reader.length_prefixed("certificate"),
        additional_data=reader.length_prefixed("additional data"),
        public_key=reader.length_prefixed("public key"),
        signature_algorithm=reader.i32("signature algorithm") & 0xFFFFFFFF,
        signature=reader.length_prefixed("signature"),
        block_id=block_id,
    )


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack("<i", len(data)) + data
