"""Verifying a payload's two signatures as update_engine does, and the hashes they are made over.

payload_generator/payload_signer.cc (CalculateHashFromPayload) and payload_consumer/payload_verifier.cc define
both: the metadata signature is over SHA-256 of header + manifest; the payload signature is over SHA-256 of
header + manifest followed by the data blobs up to signatures_offset (the metadata signature itself is skipped, the
payload signature blob is not covered). Each is a serialised Signatures message; update_engine tries every
Signature in it, truncated to unpadded_signature_size when that is set, against every trusted key: an RSA key
(2048 or 4096 bits) must match the PKCS#1 v1.5 encoding of the SHA-256 DigestInfo, an EC key must verify the
DER ECDSA signature of the hash. Any one match accepts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from sealgate.apk.certificate import Certificate
from sealgate.apk.report import Issue
from sealgate.errors import PayloadError
from sealgate.ota.payload.header import HEADER_SIZE, PayloadHeader
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.payload.reader import check_manifest, open_range, parse_manifest, parse_signatures, read_metadata

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

_STEP = 8 * 1024 * 1024
TrustedKeyLike = Certificate | Any  # a Certificate, or a `cryptography` public key


def verify_signature_blob(blob: bytes, digest: bytes, keys: Sequence[TrustedKeyLike], what: str) -> TrustedKeyLike:
    """The first of `keys` that verifies one of the signatures in `blob` over `digest`; PayloadError if none."""
    if not blob:
        raise PayloadError(f"the payload has no {what}: it is unsigned")
    signatures = parse_signatures(blob, what)
    if not signatures.signatures:
        raise PayloadError(f"the {what} holds no signature")
    for signature in signatures.signatures:
        data = bytes(signature.data)
        if signature.HasField("unpadded_signature_size"):
            if signature.unpadded_signature_size > len(data):
                raise PayloadError(f"the {what}'s unpadded size exceeds its data")
            # Stricter than update_engine, which ignores the padding: zeros only, so no byte of a payload we
            # accept can change without refusal.
            if data[signature.unpadded_signature_size :].count(0) != len(data) - signature.unpadded_signature_size:
                raise PayloadError(f"the {what} is padded with bytes other than zeros")
            data = data[: signature.unpadded_signature_size]
        for key in keys:
            if signature_verifies(_public_key(key), data, digest):
                return key
    raise PayloadError(f"no trusted key verifies the {what}")


def signature_verifies(public_key: PublicKeyTypes, signature: bytes, digest: bytes) -> bool:
    prehashed = Prehashed(hashes.SHA256())
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size not in (2048, 4096) or len(signature) != public_key.key_size // 8:
                return False
            public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, digest, ec.ECDSA(prehashed))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def _public_key(key: TrustedKeyLike) -> PublicKeyTypes:
    return key.public_key() if isinstance(key, Certificate) else key


@dataclass
class PayloadVerification:
    path: str
    verified: bool = False
    signer: TrustedKeyLike | None = None
    errors: list[Issue] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "verified": self.verified,
            "signer": None if self.signer is None else describe_key(self.signer),
            "errors": [issue.to_json() for issue in self.errors],
        }


def describe_key(key: TrustedKeyLike) -> dict[str, str | None]:
    if isinstance(key, Certificate):
        return {"sha256": key.sha256, "subject": key.subject}
    from cryptography.hazmat.primitives import serialization

    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"sha256": hashlib.sha256(spki).hexdigest(), "subject": None}


def verify_payload(
    path: Path,
    keys: Sequence[TrustedKeyLike],
    *,
    offset: int = 0,
    size: int | None = None,
    properties: PayloadProperties | None = None,
) -> PayloadVerification:
    """Check both signatures (and `properties` when given) of the payload in [offset, offset+size) of `path`."""
    result = PayloadVerification(os.fspath(path))
    try:
        result.signer = check_payload_signatures(path, keys, offset=offset, size=size, properties=properties)
    except PayloadError as exc:
        result.errors.append(Issue(_code(str(exc)), str(exc)))
        return result
    result.verified = True
    return result


def _code(message: str) -> str:
    if "unsigned" in message:
        return "PAYLOAD_UNSIGNED"
    if "metadata signature" in message:
        return "PAYLOAD_METADATA_SIGNATURE"
    if "payload signature" in message:
        return "PAYLOAD_SIGNATURE"
    if "properties" in message:
        return "PAYLOAD_PROPERTIES_MISMATCH"
    return "PAYLOAD_MALFORMED"


def check_payload_signatures(
    path: Path,
    keys: Sequence[TrustedKeyLike],
    *,
    offset: int = 0,
    size: int | None = None,
    properties: PayloadProperties | None = None,
) -> TrustedKeyLike:
    """The key that signed the payload; PayloadError when a signature, the layout or the properties do not hold."""
    with open_range(path, offset, size) as (fd, size):
        signed = read_signed_metadata(fd, offset, size, keys, properties)
        payload_hasher, file_hasher = signed.hashers()
        data_end = offset + signed.header.data_offset + int(signed.manifest.signatures_offset)
        for position in range(offset + signed.header.data_offset, data_end, _STEP):
            chunk = _pread(fd, min(_STEP, data_end - position), position)
            payload_hasher.update(chunk)
            file_hasher.update(chunk)
        check_payload_signature(fd, signed, data_end, payload_hasher, file_hasher, keys, properties)
    return signed.signer


@dataclass(frozen=True)
class SignedMetadata:
    """A payload's metadata once update_engine's first checks hold: the properties' sizes and metadata hash, the
    metadata signature, and a manifest whose layout fits the payload and that carries a payload signature."""

    header: PayloadHeader
    #: Header and manifest, the bytes the metadata signature covers.
    metadata: bytes
    metadata_signature: bytes
    manifest: Any
    signer: TrustedKeyLike

    def hashers(self) -> tuple[hashlib._Hash, hashlib._Hash]:
        """The payload signature's hash and the whole file's (FILE_HASH), each fed what comes before the data."""
        payload_hasher = hashlib.sha256(self.metadata)
        file_hasher = hashlib.sha256(self.metadata)
        file_hasher.update(self.metadata_signature)
        return payload_hasher, file_hasher


def read_signed_metadata(
    fd: int, offset: int, size: int, keys: Sequence[TrustedKeyLike], properties: PayloadProperties | None
) -> SignedMetadata:
    """The metadata of the payload in bytes [offset, offset+size) of `fd`, verified before any manifest field is
    trusted; PayloadError when the properties, the metadata signature or the layout do not hold, or it is unsigned."""
    header, metadata = read_metadata(fd, offset, size)
    metadata_hash = hashlib.sha256(metadata).digest()
    if properties is not None:
        check_properties_metadata(properties, size, header.metadata_size, metadata_hash)
    metadata_signature = os.pread(fd, header.metadata_signature_size, offset + header.metadata_size)
    signer = verify_signature_blob(metadata_signature, metadata_hash, keys, "metadata signature")
    manifest = parse_manifest(metadata[HEADER_SIZE:])
    check_manifest(manifest, size - header.data_offset)
    if not manifest.HasField("signatures_offset"):
        raise PayloadError("the payload has no payload signature: it is unsigned")
    return SignedMetadata(header, metadata, metadata_signature, manifest, signer)


def check_payload_signature(
    fd: int,
    signed: SignedMetadata,
    data_end: int,
    payload_hasher: hashlib._Hash,
    file_hasher: hashlib._Hash,
    keys: Sequence[TrustedKeyLike],
    properties: PayloadProperties | None,
) -> None:
    """The last checks, once the hashers have been fed the whole data area (which ends at `data_end` of `fd`): the
    payload signature that follows it, and the properties' FILE_HASH; PayloadError when either does not hold."""
    signature_blob = _pread(fd, int(signed.manifest.signatures_size), data_end)
    file_hasher.update(signature_blob)
    verify_signature_blob(signature_blob, payload_hasher.digest(), keys, "payload signature")
    if properties is not None and properties.file_hash != file_hasher.digest():
        raise PayloadError("the payload does not match FILE_HASH of its payload properties")


def check_properties_metadata(properties: PayloadProperties, size: int, metadata_size: int, digest: bytes) -> None:
    """update_engine's first checks of an applyPayload request: sizes and metadata hash before anything else."""
    if properties.file_size != size:
        raise PayloadError(f"the payload is {size} bytes, but its properties say FILE_SIZE={properties.file_size}")
    if properties.metadata_size != metadata_size:
        raise PayloadError(
            f"the payload's metadata is {metadata_size} bytes, but its properties say "
            f"METADATA_SIZE={properties.metadata_size}"
        )
    if properties.metadata_hash != digest:
        raise PayloadError("the payload's metadata does not match METADATA_HASH of its payload properties")


def _pread(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise PayloadError(f"the payload ends early: wanted {length} bytes at offset {offset}")
    return data
