"""APK Signature Scheme v2, v3 and v3.1 blocks, and the APK Signing Block that holds them, as apksig encodes them.

Every integer is little-endian and every variable-length field is prefixed by its uint32 length. A v2 signer is

    signed data: digests (algorithm id, content digest)*, certificates*, additional attributes (id, value)*
    signatures (algorithm id, signature over the signed data)*
    public key (SubjectPublicKeyInfo)

and a v3/v3.1 signer adds its SDK range, both inside the signed data (after the certificates) and after it. The
additional attributes are the stripping protections: a v2 signer of an APK that is also v3-signed says so
(0xbeeff00d = 3), a v3 signer next to a v3.1 block names the SDK level where the v3.1 block takes over
(0x559f8b02), and a rotated v3/v3.1 signer carries its proof-of-rotation lineage (0x3ba06f8c).

The APK Signing Block is ``size | (uint64 length, uint32 id, value)* | size | magic``; like apksigner, the pairs are
v2, then v3.1, then v3, and a verity padding pair (0x42726577) makes the block a whole number of 4096-byte pages.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sealgate.apk.algorithms import ContentDigest
from sealgate.apk.lineage import Lineage
from sealgate.apk.signing.key_algorithms import BlockAlgorithm
from sealgate.apk.signing_block import MAGIC, V2_BLOCK_ID, V3_BLOCK_ID, V31_BLOCK_ID, VERITY_PADDING_BLOCK_ID
from sealgate.signing import Signer

STRIPPING_PROTECTION_ATTR_ID = 0xBEEFF00D
PROOF_OF_ROTATION_ATTR_ID = 0x3BA06F8C
ROTATION_MIN_SDK_VERSION_ATTR_ID = 0x559F8B02
PAGE_SIZE = 4096
_MIN_PAIR_SIZE = 12

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


@dataclass(frozen=True)
class BlockSigner:
    """One signer of a v2, v3 or v3.1 block; the SDK range and lineage only apply to v3 and v3.1."""

    signer: Signer
    algorithm: BlockAlgorithm
    min_sdk: int = 0
    max_sdk: int = 0
    lineage: Lineage | None = None
    rotation_min_sdk: int | None = None


def v2_block(signers: Sequence[BlockSigner], digests: Mapping[ContentDigest, bytes], *, v3_signed: bool) -> bytes:
    """The value of the v2 pair; `v3_signed` adds the attribute that makes stripping the v3 block detectable."""
    attributes = [_attribute(STRIPPING_PROTECTION_ATTR_ID, _U32.pack(3))] if v3_signed else []
    records = []
    for block_signer in signers:
        signed_data = (
            _prefixed(_digests(block_signer, digests))
            + _prefixed(_prefixed(block_signer.signer.certificate.der))
            + _prefixed(b"".join(attributes))
            + _prefixed(b"")  # apksig ends v2 signed data with an empty element
        )
        records.append(_signer_record(block_signer, signed_data, sdk_range=b""))
    return _prefixed(b"".join(_prefixed(record) for record in records))


def v3_block(signers: Sequence[BlockSigner], digests: Mapping[ContentDigest, bytes]) -> bytes:
    """The value of a v3 or v3.1 pair (the same layout; the pair ID tells them apart)."""
    records = []
    for block_signer in signers:
        sdk_range = _I32.pack(block_signer.min_sdk) + _I32.pack(block_signer.max_sdk)
        attributes: list[bytes] = []
        if block_signer.lineage is not None:
            attributes.append(_attribute(PROOF_OF_ROTATION_ATTR_ID, block_signer.lineage.to_attribute_bytes()))
        if block_signer.rotation_min_sdk is not None:
            attributes.append(_attribute(ROTATION_MIN_SDK_VERSION_ATTR_ID, _I32.pack(block_signer.rotation_min_sdk)))
        signed_data = (
            _prefixed(_digests(block_signer, digests))
            + _prefixed(_prefixed(block_signer.signer.certificate.der))
            + sdk_range
            + _prefixed(b"".join(attributes))
        )
        records.append(_signer_record(block_signer, signed_data, sdk_range=sdk_range))
    return _prefixed(b"".join(_prefixed(record) for record in records))


def signing_block(pairs: Sequence[tuple[int, bytes]]) -> bytes:
    """The APK Signing Block for (id, value) pairs, padded to whole 4096-byte pages as apksigner pads it."""
    body = b"".join(struct.pack("<QI", 4 + len(value), pair_id) + value for pair_id, value in pairs)
    size = 8 + len(body) + 8 + len(MAGIC)
    padding = b""
    if size % PAGE_SIZE:
        pad = PAGE_SIZE - size % PAGE_SIZE
        if pad < _MIN_PAIR_SIZE:
            pad += PAGE_SIZE
        padding = struct.pack("<QI", pad - 8, VERITY_PADDING_BLOCK_ID) + bytes(pad - _MIN_PAIR_SIZE)
        size += pad
    size_field = struct.pack("<Q", size - 8)
    return size_field + body + padding + size_field + MAGIC


def scheme_pairs(v2: bytes | None, v31: bytes | None, v3: bytes | None) -> list[tuple[int, bytes]]:
    """apksigner's order of the pairs: v2, v3.1, v3."""
    pairs = [(V2_BLOCK_ID, v2), (V31_BLOCK_ID, v31), (V3_BLOCK_ID, v3)]
    return [(pair_id, value) for pair_id, value in pairs if value is not None]


def _signer_record(block_signer: BlockSigner, signed_data: bytes, *, sdk_range: bytes) -> bytes:
    algorithm = block_signer.algorithm
    signature = block_signer.signer.sign(signed_data, algorithm.signing)
    signatures = _prefixed(_prefixed(_U32.pack(algorithm.apk.id) + _prefixed(signature)))
    public_key = _prefixed(block_signer.signer.certificate.public_key_der)
    return _prefixed(signed_data) + sdk_range + signatures + public_key


def _digests(block_signer: BlockSigner, digests: Mapping[ContentDigest, bytes]) -> bytes:
    algorithm = block_signer.algorithm.apk
    return _prefixed(_U32.pack(algorithm.id) + _prefixed(digests[algorithm.content_digest]))


def _attribute(attribute_id: int, value: bytes) -> bytes:
    return _prefixed(_U32.pack(attribute_id) + value)


def _prefixed(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data
