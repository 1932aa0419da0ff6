"""Signing a payload exactly as update_engine's tools do, in one step or in the custodian's two.

brillo_update_payload and payload_generator/payload_signer.cc sign in three moves: fix the signature sizes (an RSA
key's modulus size, or the largest DER ECDSA signature of the curve: 72 bytes for P-256, the real one zero-padded
with unpadded_signature_size recording its length), rewrite the payload with those sizes in place (header
metadata_signature_size; manifest signatures_offset = the end of the data, signatures_size = the size of the
Signatures blob), hash it (`verify` says which bytes), then sign the two hashes and put the blobs in. Because
the sizes are fixed before hashing, the hashes can travel to an offline signer (`payload_hashes`) and the
signatures come back to be inserted (`insert_signatures`) without changing a signed byte. Every Signature carries
unpadded_signature_size and no version, as ConvertSignaturesToProtobuf writes it.

An already signed payload can be re-signed: its old signatures are dropped. Everything is streamed; the output is
checked against the signing keys before it replaces anything, and its payload_properties.txt is returned.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealgate.apk.signing.output import AtomicOutput
from sealgate.errors import PayloadError, UsageError
from sealgate.ota.payload import schema
from sealgate.ota.payload.header import HEADER_SIZE, MAJOR_VERSION, PayloadHeader
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.payload.reader import check_manifest, open_range, parse_manifest, read_metadata
from sealgate.ota.payload.verify import check_payload_signatures
from sealgate.signing import Signer, SigningAlgorithm

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

_STEP = 8 * 1024 * 1024
#: ECDSA_size(): the longest DER signature of a P-256 key.
_P256_SIGNATURE_SIZE = 72


@dataclass(frozen=True)
class PayloadHashes:
    """What an offline signer signs: SHA-256 of the metadata and of the signed payload, for these signature sizes."""

    metadata_hash: bytes
    payload_hash: bytes
    signature_sizes: tuple[int, ...]


def signature_size(public_key: PublicKeyTypes) -> int:
    """The padded size update_engine reserves for a signature by this key (EVP_PKEY_size)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size not in (2048, 4096):
            raise UsageError(f"update_engine verifies only 2048- and 4096-bit RSA keys, not {public_key.key_size}")
        return public_key.key_size // 8
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return _P256_SIGNATURE_SIZE
    raise UsageError("payloads are signed with RSA 2048/4096 or EC P-256 keys")


def sign_payload(
    unsigned: Path, out: Path, signer: Signer, *, extra_signers: Sequence[Signer] = ()
) -> PayloadProperties:
    """Sign `unsigned` (or re-sign a signed payload) into `out`; the properties of the result."""
    signers = [signer, *extra_signers]
    sizes = tuple(signature_size(each.public_key) for each in signers)
    hashes = payload_hashes(unsigned, sizes)
    return insert_signatures(
        unsigned,
        out,
        metadata_signatures=[_sign(each, hashes.metadata_hash) for each in signers],
        payload_signatures=[_sign(each, hashes.payload_hash) for each in signers],
        signature_sizes=sizes,
        public_keys=[each.public_key for each in signers],
    )


def payload_hashes(unsigned: Path, signature_sizes: Sequence[int]) -> PayloadHashes:
    """The two hashes to sign for a payload that will carry signatures of `signature_sizes` (one per key)."""
    sizes = _check_sizes(signature_sizes)
    layout = _Layout.of(Path(unsigned), sizes)
    payload_hasher = hashlib.sha256(layout.metadata)
    with open_range(Path(unsigned), 0, None) as (fd, _):
        for chunk in _data_chunks(fd, layout):
            payload_hasher.update(chunk)
    return PayloadHashes(hashlib.sha256(layout.metadata).digest(), payload_hasher.digest(), sizes)


def insert_signatures(
    unsigned: Path,
    out: Path,
    *,
    metadata_signatures: Sequence[bytes],
    payload_signatures: Sequence[bytes],
    signature_sizes: Sequence[int],
    public_keys: Sequence[PublicKeyTypes] = (),
) -> PayloadProperties:
    """Write `unsigned` with the signatures made over `payload_hashes(unsigned, signature_sizes)` into `out`.

    With `public_keys`, the result must verify with them before it replaces `out`.
    """
    sizes = _check_sizes(signature_sizes)
    if len(metadata_signatures) != len(sizes) or len(payload_signatures) != len(sizes):
        raise UsageError("give one metadata and one payload signature per signature size")
    layout = _Layout.of(Path(unsigned), sizes)
    metadata_blob = _signatures_blob(metadata_signatures, sizes)
    payload_blob = _signatures_blob(payload_signatures, sizes)
    if len(metadata_blob) != layout.blob_size or len(payload_blob) != layout.blob_size:
        raise PayloadError("a signature is larger than the size reserved for it")
    with AtomicOutput(Path(out)) as output, open_range(Path(unsigned), 0, None) as (fd, _):
        file_hasher = hashlib.sha256()
        for piece in (layout.metadata, metadata_blob):
            file_hasher.update(piece)
            _write_all(output.fd, piece)
        for chunk in _data_chunks(fd, layout):
            file_hasher.update(chunk)
            _write_all(output.fd, chunk)
        file_hasher.update(payload_blob)
        _write_all(output.fd, payload_blob)
        properties = PayloadProperties(
            file_hasher.digest(),
            len(layout.metadata) + len(metadata_blob) + layout.data_size + len(payload_blob),
            hashlib.sha256(layout.metadata).digest(),
            len(layout.metadata),
        )
        if public_keys:
            check_payload_signatures(output.temp_path, public_keys, properties=properties)
        output.commit()
    return properties


@dataclass(frozen=True)
class _Layout:
    """The signed form of an input payload: its new metadata, and where its data lies in the input."""

    metadata: bytes
    data_start: int
    data_size: int
    blob_size: int

    @classmethod
    def of(cls, path: Path, sizes: tuple[int, ...]) -> _Layout:
        with open_range(path, 0, None) as (fd, size):
            header, metadata = read_metadata(fd, 0, size)
        manifest: Any = parse_manifest(metadata[HEADER_SIZE:])
        check_manifest(manifest, size - header.data_offset)
        data_size = (
            int(manifest.signatures_offset) if manifest.HasField("signatures_offset") else size - header.data_offset
        )
        blob_size = len(_signatures_blob([b""] * len(sizes), sizes))
        manifest.signatures_offset = data_size
        manifest.signatures_size = blob_size
        serialized = manifest.SerializeToString()
        new_header = PayloadHeader(MAJOR_VERSION, len(serialized), blob_size)
        return cls(new_header.pack() + serialized, header.data_offset, data_size, blob_size)


def _data_chunks(fd: int, layout: _Layout) -> Any:
    end = layout.data_start + layout.data_size
    for position in range(layout.data_start, end, _STEP):
        length = min(_STEP, end - position)
        chunk = os.pread(fd, length, position)
        if len(chunk) != length:
            raise PayloadError("the payload changed while it was being signed")
        yield chunk


def _signatures_blob(signatures: Sequence[bytes], sizes: tuple[int, ...]) -> bytes:
    message = schema.Signatures()
    for signature, size in zip(signatures, sizes, strict=True):
        if len(signature) > size:
            raise PayloadError(f"a {len(signature)}-byte signature does not fit the {size} bytes reserved for it")
        message.signatures.add(data=signature + bytes(size - len(signature)), unpadded_signature_size=len(signature))
    return bytes(message.SerializeToString())


def _sign(signer: Signer, digest: bytes) -> bytes:
    if isinstance(signer.public_key, rsa.RSAPublicKey):
        return signer.sign_digest(digest, SigningAlgorithm.RSA_PKCS1_SHA256)
    return signer.sign_digest(digest, SigningAlgorithm.ECDSA_SHA256)


def _check_sizes(signature_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(signature_sizes)
    if not sizes or any(size not in (256, 512, _P256_SIGNATURE_SIZE) for size in sizes):
        raise UsageError("signature sizes must be 256 or 512 (RSA 2048/4096) or 72 (EC P-256), at least one")
    return sizes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
