"""vbmeta images: read every field, verify as libavb does, build and re-sign as avbtool does.

Layout (libavb/avb_vbmeta_image.h): a 256-byte big-endian header ('AVB0', required libavb version, the sizes of the
authentication and auxiliary blocks, the algorithm, offset/size pairs for the hash and signature inside the
authentication block and for the public key, public key metadata and descriptors inside the auxiliary block, the
rollback index, flags, rollback index location and a NUL-terminated 48-byte release string), then the
authentication block, then the auxiliary block, both multiples of 64 bytes. The hash covers the header and the
auxiliary block (not the authentication block); the signature is RSA PKCS#1 v1.5 with a DigestInfo over that hash.

`read_vbmeta` applies every structural check of avb_vbmeta_image_verify (libavb/avb_vbmeta_image.c) and refuses
what fails with AvbFormatError: magic, the libavb version (major 1, minor up to `LIBAVB_VERSION_MINOR`), the NUL
at the end of the release string, block sizes divisible by 64 that fit the data, hash, signature, public key and
metadata inside their blocks, a known algorithm with the hash size it needs. It also parses the descriptors (which
libavb does later, in avb_slot_verify). `verify_vbmeta` then gives the verdict: hash, signature with the embedded
key, and whether that key is one the caller trusts, the check a bootloader makes against its built-in or
avb_custom_key. One check goes further than libavb: the bytes of the authentication block outside the hash and
the signature are covered by nothing and avbtool writes zeros there, so anything else is reported
(unauthenticated-data) rather than silently carried along.

`build_vbmeta` lays an image out as avbtool's _generate_vbmeta_blob does (hash then signature in the authentication
block; descriptors, public key, public key metadata in the auxiliary block; both zero-padded to 64), and
`resign_vbmeta` rebuilds an image with the same descriptors under a new key. The standalone vbmeta.img is padded
to a multiple of 4096 bytes, as build/make/core/Makefile asks avbtool make_vbmeta_image to (--padding_size 4096).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sealgate.apk.report import Issue
from sealgate.avb import algorithms
from sealgate.avb.algorithms import AvbAlgorithm
from sealgate.avb.descriptors import (
    ChainPartitionDescriptor,
    Descriptor,
    HashtreeDescriptor,
    encode_descriptors,
    parse_descriptors,
)
from sealgate.avb.keys import decode_public_key, encoded_key_digest, key_bits, public_key_metadata
from sealgate.errors import AvbFormatError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from sealgate.signing import Signer

MAGIC = b"AVB0"
HEADER_SIZE = 256
RELEASE_STRING_SIZE = 48
#: The libavb version this reader understands (external/avb's AVB_VERSION_MAJOR / AVB_VERSION_MINOR).
LIBAVB_VERSION_MAJOR = 1
LIBAVB_VERSION_MINOR = 3
#: What avbtool writes as the release string (avbtool.py get_release_string), used when building from scratch.
DEFAULT_RELEASE_STRING = "avbtool 1.3.0"
#: build/make/core/Makefile: BOARD_AVB_MAKE_VBMETA_IMAGE_ARGS += --padding_size 4096.
VBMETA_IMAGE_PADDING = 4096
FLAG_HASHTREE_DISABLED = 1 << 0
FLAG_VERIFICATION_DISABLED = 1 << 1

_HEADER = struct.Struct(">4sLLQQLQQQQQQQQQQQLL48s80s")
assert _HEADER.size == HEADER_SIZE


@dataclass(frozen=True)
class VbmetaHeader:
    """The 256-byte header, field by field (names as in AvbVBMetaImageHeader)."""

    required_libavb_version_major: int
    required_libavb_version_minor: int
    authentication_data_block_size: int
    auxiliary_data_block_size: int
    algorithm_type: int
    hash_offset: int
    hash_size: int
    signature_offset: int
    signature_size: int
    public_key_offset: int
    public_key_size: int
    public_key_metadata_offset: int
    public_key_metadata_size: int
    descriptors_offset: int
    descriptors_size: int
    rollback_index: int
    flags: int
    rollback_index_location: int
    release_string: bytes  # the 48-byte field, NUL-terminated
    reserved: bytes = bytes(80)

    @classmethod
    def parse(cls, data: bytes) -> VbmetaHeader:
        fields = _HEADER.unpack_from(data)
        return cls(*fields[1:])

    def encode(self) -> bytes:
        return _HEADER.pack(
            MAGIC, self.required_libavb_version_major, self.required_libavb_version_minor,
            self.authentication_data_block_size, self.auxiliary_data_block_size, self.algorithm_type,
            self.hash_offset, self.hash_size, self.signature_offset, self.signature_size, self.public_key_offset,
            self.public_key_size, self.public_key_metadata_offset, self.public_key_metadata_size,
            self.descriptors_offset, self.descriptors_size, self.rollback_index, self.flags,
            self.rollback_index_location, self.release_string, self.reserved,
        )  # fmt: skip

    @property
    def release(self) -> str:
        return self.release_string.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class VbmetaImage:
    """A structurally valid vbmeta image. Its signature is not checked yet: ask `verify_vbmeta`."""

    header: VbmetaHeader
    algorithm: AvbAlgorithm
    descriptors: tuple[Descriptor, ...]
    public_key: bytes  # AvbRSAPublicKeyHeader format, empty when unsigned
    public_key_metadata: bytes
    hash: bytes
    signature: bytes
    header_block: bytes
    authentication_block: bytes
    auxiliary_block: bytes

    @property
    def size(self) -> int:
        """Header plus both blocks: what the footer's vbmeta_size counts (padding excluded)."""
        return HEADER_SIZE + self.header.authentication_data_block_size + self.header.auxiliary_data_block_size

    @property
    def rollback_index(self) -> int:
        return self.header.rollback_index

    @property
    def rollback_index_location(self) -> int:
        return self.header.rollback_index_location

    @property
    def flags(self) -> int:
        return self.header.flags

    @property
    def release_string(self) -> str:
        return self.header.release

    @property
    def public_key_digest(self) -> str | None:
        """Hex SHA-256 of the embedded key (androidboot.vbmeta.public_key_digest), None when unsigned."""
        return encoded_key_digest(self.public_key) if self.public_key else None

    def chain_partitions(self) -> dict[str, ChainPartitionDescriptor]:
        return {d.partition_name: d for d in self.descriptors if isinstance(d, ChainPartitionDescriptor)}

    def to_json(self) -> dict[str, Any]:
        h = self.header
        return {
            "required_libavb_version": f"{h.required_libavb_version_major}.{h.required_libavb_version_minor}",
            "size": self.size,
            "authentication_block_size": h.authentication_data_block_size,
            "auxiliary_block_size": h.auxiliary_data_block_size,
            "algorithm": self.algorithm.name,
            "rollback_index": h.rollback_index,
            "rollback_index_location": h.rollback_index_location,
            "flags": h.flags,
            "release_string": h.release,
            "public_key_digest": self.public_key_digest,
            "public_key_metadata_size": len(self.public_key_metadata),
            "descriptors": [descriptor.to_json() for descriptor in self.descriptors],
        }


@dataclass
class VbmetaVerdict:
    """Whether a vbmeta image verifies with its embedded key, and with a key the caller trusts.

    `status` is libavb's word for the signature check (OK, OK_NOT_SIGNED, HASH_MISMATCH, SIGNATURE_MISMATCH);
    `key_trusted` is None when the caller named no trusted key. `verified` needs a valid signature and, when trusted
    keys were given, the embedded key being one of them.
    """

    status: str
    key_trusted: bool | None = None
    public_key_digest: str | None = None
    errors: list[Issue] = field(default_factory=list)

    @property
    def signature_valid(self) -> bool:
        return self.status == "OK"

    @property
    def verified(self) -> bool:
        return self.signature_valid and self.key_trusted is not False and not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "status": self.status,
            "signature_valid": self.signature_valid,
            "key_trusted": self.key_trusted,
            "public_key_digest": self.public_key_digest,
            "errors": [issue.to_json() for issue in self.errors],
        }


def read_vbmeta(data: bytes) -> VbmetaImage:
    """Parse a vbmeta image (trailing padding allowed, as in a vbmeta partition), checking it as libavb does."""
    if len(data) < HEADER_SIZE:
        raise AvbFormatError(f"vbmeta image is {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header")
    if data[:4] != MAGIC:
        raise AvbFormatError(f"not a vbmeta image: magic is {data[:4]!r}, expected {MAGIC!r}")
    h = VbmetaHeader.parse(data)
    if (
        h.required_libavb_version_major != LIBAVB_VERSION_MAJOR
        or h.required_libavb_version_minor > LIBAVB_VERSION_MINOR
    ):
        raise AvbFormatError(
            f"vbmeta image needs libavb {h.required_libavb_version_major}.{h.required_libavb_version_minor}; "
            f"this reader supports {LIBAVB_VERSION_MAJOR}.0 to {LIBAVB_VERSION_MAJOR}.{LIBAVB_VERSION_MINOR}"
        )
    if h.release_string[-1] != 0:
        raise AvbFormatError("vbmeta release string does not end with a NUL byte")
    auth_size, aux_size = h.authentication_data_block_size, h.auxiliary_data_block_size
    if auth_size % 64 or aux_size % 64:
        raise AvbFormatError(f"vbmeta block sizes ({auth_size}, {aux_size}) are not multiples of 64")
    if HEADER_SIZE + auth_size + aux_size > len(data):
        raise AvbFormatError(
            f"vbmeta blocks add up to {HEADER_SIZE + auth_size + aux_size} bytes, more than the {len(data)} given"
        )
    _inside("hash", h.hash_offset, h.hash_size, "authentication", auth_size)
    _inside("signature", h.signature_offset, h.signature_size, "authentication", auth_size)
    _inside("public key", h.public_key_offset, h.public_key_size, "auxiliary", aux_size)
    if h.public_key_metadata_size:
        _inside("public key metadata", h.public_key_metadata_offset, h.public_key_metadata_size, "auxiliary", aux_size)
    _inside("descriptors", h.descriptors_offset, h.descriptors_size, "auxiliary", aux_size)
    algorithm = algorithms.by_type(h.algorithm_type)
    if algorithm is None:
        raise AvbFormatError(f"vbmeta algorithm type {h.algorithm_type} is unknown")
    if algorithm is not algorithms.NONE and h.hash_size != algorithm.hash_size:
        raise AvbFormatError(f"{algorithm.name} needs a {algorithm.hash_size}-byte hash; the header says {h.hash_size}")
    auth = data[HEADER_SIZE : HEADER_SIZE + auth_size]
    aux = data[HEADER_SIZE + auth_size : HEADER_SIZE + auth_size + aux_size]
    descriptors = parse_descriptors(aux[h.descriptors_offset : h.descriptors_offset + h.descriptors_size])
    return VbmetaImage(
        header=h,
        algorithm=algorithm,
        descriptors=tuple(descriptors),
        public_key=aux[h.public_key_offset : h.public_key_offset + h.public_key_size],
        public_key_metadata=aux[
            h.public_key_metadata_offset : h.public_key_metadata_offset + h.public_key_metadata_size
        ]
        if h.public_key_metadata_size
        else b"",
        hash=auth[h.hash_offset : h.hash_offset + h.hash_size],
        signature=auth[h.signature_offset : h.signature_offset + h.signature_size],
        header_block=bytes(data[:HEADER_SIZE]),
        authentication_block=bytes(auth),
        auxiliary_block=bytes(aux),
    )


def verify_vbmeta(image: VbmetaImage | bytes, trusted_keys: Sequence[PublicKeyTypes | bytes] = ()) -> VbmetaVerdict:
    """libavb's verdict on the signature, then whether the embedded key is one of `trusted_keys`.

    Trusted keys are `cryptography` public keys or keys already in AVB format (avb_pkmd.bin); the comparison is on
    the AVB-format bytes, as avb_ops' validate_vbmeta_public_key compares them. Malformed input raises
    AvbFormatError (from `read_vbmeta`).
    """
    vbmeta = image if isinstance(image, VbmetaImage) else read_vbmeta(image)
    verdict = VbmetaVerdict(status="OK", public_key_digest=vbmeta.public_key_digest)
    algorithm = vbmeta.algorithm
    if algorithm is algorithms.NONE:
        verdict.status = "OK_NOT_SIGNED"
        verdict.errors.append(Issue("not-signed", "the vbmeta image is not signed (algorithm NONE)"))
        return verdict
    assert algorithm.hash_name is not None
    computed = hashlib.new(algorithm.hash_name, vbmeta.header_block + vbmeta.auxiliary_block).digest()
    if computed != vbmeta.hash:
        verdict.status = "HASH_MISMATCH"
        verdict.errors.append(
            Issue("hash-mismatch", "the hash of the header and auxiliary block does not match the stored hash")
        )
        return verdict
    problem = _signature_problem(vbmeta)
    if problem is not None:
        verdict.status = "SIGNATURE_MISMATCH"
        verdict.errors.append(Issue("signature-mismatch", problem))
        return verdict
    if _unauthenticated_bytes(vbmeta):
        verdict.errors.append(
            Issue(
                "unauthenticated-data",
                "the authentication block holds non-zero bytes outside the hash and signature, which nothing signs",
            )
        )
    if trusted_keys:
        trusted = {key if isinstance(key, bytes) else public_key_metadata(key) for key in trusted_keys}
        verdict.key_trusted = vbmeta.public_key in trusted
        if not verdict.key_trusted:
            verdict.errors.append(
                Issue("untrusted-key", f"signed by key {vbmeta.public_key_digest}, which is not a trusted key")
            )
    return verdict


def build_vbmeta(
    descriptors: Sequence[Descriptor],
    signer: Signer | None,
    *,
    algorithm: str | None = None,
    rollback_index: int = 0,
    flags: int = 0,
    rollback_index_location: int = 0,
    release_string: str | bytes = DEFAULT_RELEASE_STRING,
    required_libavb_version_minor: int = 0,
    public_key_metadata_blob: bytes = b"",
    padding_size: int = 0,
) -> bytes:
    """A vbmeta image laid out as avbtool make_vbmeta_image lays it out, signed by `signer` (unsigned when None).

    `algorithm` ("SHA256_RSA4096") defaults to SHA256 with the key's size. The result is checked with
    `verify_vbmeta` before it is returned, so a signer that produced a wrong signature never yields an image.
    """
    chosen = _choose_algorithm(signer, algorithm)
    if not 0 <= rollback_index < 1 << 64:
        raise UsageError(f"rollback index {rollback_index} does not fit in 64 bits")
    release = release_string if isinstance(release_string, bytes) else release_string.encode("utf-8")
    release = release.split(b"\0", 1)[0]
    if len(release) > RELEASE_STRING_SIZE - 1:
        raise UsageError(f"release string is longer than {RELEASE_STRING_SIZE - 1} bytes")
    encoded_descriptors = encode_descriptors(tuple(descriptors))
    encoded_key = public_key_metadata(signer.public_key) if signer is not None else b""
    aux_content = encoded_descriptors + encoded_key + public_key_metadata_blob
    auth_size = _round64(chosen.hash_size + chosen.signature_size)
    header = VbmetaHeader(
        required_libavb_version_major=LIBAVB_VERSION_MAJOR,
        required_libavb_version_minor=max(
            required_libavb_version_minor, _minor_version_needed(descriptors, rollback_index_location)
        ),
        authentication_data_block_size=auth_size,
        auxiliary_data_block_size=_round64(len(aux_content)),
        algorithm_type=chosen.type,
        hash_offset=0,
        hash_size=chosen.hash_size,
        signature_offset=chosen.hash_size,
        signature_size=chosen.signature_size,
        public_key_offset=len(encoded_descriptors),
        public_key_size=len(encoded_key),
        public_key_metadata_offset=len(encoded_descriptors) + len(encoded_key),
        public_key_metadata_size=len(public_key_metadata_blob),
        descriptors_offset=0,
        descriptors_size=len(encoded_descriptors),
        rollback_index=rollback_index,
        flags=flags,
        rollback_index_location=rollback_index_location,
        release_string=release.ljust(RELEASE_STRING_SIZE, b"\0"),
    )
    header_block = header.encode()
    aux_block = aux_content.ljust(header.auxiliary_data_block_size, b"\0")
    if signer is None:
        auth_block = b""
    else:
        assert chosen.hash_name is not None
        digest = hashlib.new(chosen.hash_name, header_block + aux_block).digest()
        signature = signer.sign_digest(digest, chosen.signing_algorithm)
        if len(signature) != chosen.signature_size:
            raise AvbFormatError(
                f"signer {signer.name!r} returned a {len(signature)}-byte signature; "
                f"{chosen.name} needs {chosen.signature_size}"
            )
        auth_block = (digest + signature).ljust(auth_size, b"\0")
    blob = header_block + auth_block + aux_block
    if signer is not None:
        verdict = verify_vbmeta(blob)
        if not verdict.signature_valid:
            raise AvbFormatError(
                f"the signature from signer {signer.name!r} does not verify ({verdict.status}); nothing was written"
            )
    if padding_size > 0:
        blob = blob.ljust(-(-len(blob) // padding_size) * padding_size, b"\0")
    return blob


def resign_vbmeta(
    data: bytes,
    signer: Signer,
    *,
    algorithm: str | None = None,
    rollback_index: int | None = None,
    keep_public_key_metadata: bool = False,
    descriptors: Sequence[Descriptor] | None = None,
    padding_size: int = VBMETA_IMAGE_PADDING,
) -> bytes:
    """The same vbmeta image (descriptors, flags, rollback index location, release string) under a new key.

    The rollback index is replaced when given. The old public key metadata describes the old key, so it is dropped,
    as `avbtool make_vbmeta_image` without --public_key_metadata would; `keep_public_key_metadata` keeps it.
    `algorithm` defaults to the image's own when it fits the new key's size, else SHA256 with the key's size.
    `descriptors` replaces the descriptor list (see `replace_chain_partition_key`). The result is padded to a
    multiple of `padding_size` (4096, as for vbmeta.img; 0 for none).
    """
    old = read_vbmeta(data)
    if algorithm is None and old.algorithm.key_bits == key_bits(signer.public_key):
        algorithm = old.algorithm.name
    return build_vbmeta(
        old.descriptors if descriptors is None else descriptors,
        signer,
        algorithm=algorithm,
        rollback_index=old.rollback_index if rollback_index is None else rollback_index,
        flags=old.flags,
        rollback_index_location=old.rollback_index_location,
        release_string=old.header.release_string,
        required_libavb_version_minor=old.header.required_libavb_version_minor,
        public_key_metadata_blob=old.public_key_metadata if keep_public_key_metadata else b"",
        padding_size=padding_size,
    )


def replace_chain_partition_key(
    data: bytes,
    partition: str,
    public_key: PublicKeyTypes,
    signer: Signer,
    **resign_options: Any,
) -> bytes:
    """Re-sign `data` with `partition`'s chain descriptor now naming `public_key` (e.g. the distribution's own
    vbmeta_system key); every other descriptor is kept. UsageError when the image has no such chain descriptor."""
    return replace_chain_partition_keys(data, {partition: public_key}, signer, **resign_options)


def replace_chain_partition_keys(
    data: bytes,
    keys: Mapping[str, PublicKeyTypes],
    signer: Signer,
    **resign_options: Any,
) -> bytes:
    """`replace_chain_partition_key` for several chained partitions at once (one signature)."""
    old = read_vbmeta(data)
    chains = old.chain_partitions()
    missing = sorted(set(keys) - set(chains))
    if missing:
        names = ", ".join(sorted(chains)) or "none"
        raise UsageError(
            f"the vbmeta image has no chain partition descriptor for {', '.join(missing)} (it has: {names})"
        )
    encoded = {partition: public_key_metadata(key) for partition, key in keys.items()}
    descriptors = [
        replace(d, public_key=encoded[d.partition_name])
        if isinstance(d, ChainPartitionDescriptor) and d.partition_name in encoded
        else d
        for d in old.descriptors
    ]
    return resign_vbmeta(data, signer, descriptors=descriptors, **resign_options)


def _minor_version_needed(descriptors: Sequence[Descriptor], rollback_index_location: int) -> int:
    """The oldest libavb 1.x that understands these features, as avbtool bumps the required version: hashtree
    check-at-most-once came with 1.1, a rollback index location in the header with 1.2, chain partition flags
    with 1.3. An older libavb would silently ignore them."""
    minor = 2 if rollback_index_location else 0
    for descriptor in descriptors:
        if isinstance(descriptor, HashtreeDescriptor) and descriptor.flags & HashtreeDescriptor.FLAG_CHECK_AT_MOST_ONCE:
            minor = max(minor, 1)
        if isinstance(descriptor, ChainPartitionDescriptor) and descriptor.flags:
            minor = max(minor, 3)
    return minor


def _choose_algorithm(signer: Signer | None, name: str | None) -> AvbAlgorithm:
    if signer is None:
        if name not in (None, "NONE"):
            raise UsageError(f"algorithm {name} needs a key to sign with")
        return algorithms.NONE
    bits = key_bits(signer.public_key)
    chosen = algorithms.by_name(name) if name is not None else algorithms.for_key_bits(bits)
    if chosen.key_bits != bits:
        raise UsageError(f"{chosen.name} needs a {chosen.key_bits}-bit RSA key; {signer.name!r} is {bits} bits")
    return chosen


def _signature_problem(vbmeta: VbmetaImage) -> str | None:
    """Why the signature does not verify with the embedded key, or None when it does (libavb's avb_rsa_verify)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    algorithm = vbmeta.algorithm
    if len(vbmeta.public_key) != algorithm.public_key_size:
        return f"{algorithm.name} needs a {algorithm.public_key_size}-byte public key; found {len(vbmeta.public_key)}"
    if len(vbmeta.signature) != algorithm.signature_size:
        return f"{algorithm.name} needs a {algorithm.signature_size}-byte signature; found {len(vbmeta.signature)}"
    try:
        key = decode_public_key(vbmeta.public_key)
    except AvbFormatError as exc:
        return f"the embedded public key is unusable: {exc}"
    prehashed = Prehashed(hashes.SHA256() if algorithm.hash_name == "sha256" else hashes.SHA512())
    try:
        key.verify(vbmeta.signature, vbmeta.hash, padding.PKCS1v15(), prehashed)
    except InvalidSignature:
        return "the signature does not verify with the embedded public key"
    return None


def _unauthenticated_bytes(vbmeta: VbmetaImage) -> bool:
    """Whether the authentication block has data besides hash and signature (avbtool writes zeros there)."""
    h = vbmeta.header
    spare = bytearray(vbmeta.authentication_block)
    spare[h.hash_offset : h.hash_offset + h.hash_size] = bytes(h.hash_size)
    spare[h.signature_offset : h.signature_offset + h.signature_size] = bytes(h.signature_size)
    return any(spare)


def _inside(what: str, offset: int, size: int, block: str, block_size: int) -> None:
    if offset + size > block_size:
        raise AvbFormatError(f"vbmeta {what} ({offset}+{size}) is not entirely inside the {block} block ({block_size})")


def _round64(size: int) -> int:
    return (size + 63) & ~63
