"""Proof-of-rotation lineages: how an app's signing key hands its identity to a newer key.

A lineage is a chain of signing certificates, oldest first. Each node after the first is signed by the key of the
node before it, so the chain proves that every older key agreed to the rotation, and each node carries the
capabilities the app still grants to that (older) certificate. Two encodings exist and share the node list:

* the value of the APK Signature Scheme v3 signer attribute 0x3ba06f8c (proof-of-rotation), which the platform
  verifies at install time;
* apksigner's standalone lineage file (magic 0x3eff39d1), which carries the same structure between signing runs.

Layout (little-endian, as in AOSP's V3SigningCertificateLineage and the platform's verifyProofOfRotationStruct)::

    uint32 version (1)
    repeated, each uint32-length-prefixed: node
        length-prefixed signed data
            length-prefixed certificate (DER)
            uint32 id of the algorithm the PREVIOUS node used to sign this signed data (0 for the first node)
        uint32 flags (capabilities granted to this node's certificate)
        uint32 id of the algorithm THIS node uses to sign the NEXT node's signed data (0 for the last node)
        length-prefixed signature by the previous node's key over the signed data (empty for the first node)

Parsing verifies every signature and refuses what the platform refuses (an algorithm id that disagrees with the
one the parent announced, duplicate certificates, an unknown algorithm where one is needed), so a `Lineage` value
always stands for a chain that Android would accept. `create_lineage` and `rotate_lineage` make new links with any
`Signer` (apksig's node layout and algorithm choice) and put the result through the same parser before returning it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntFlag

from sealgate.apk import algorithms
from sealgate.apk.binary_reader import BinaryReader
from sealgate.apk.certificate import Certificate, CertificateError
from sealgate.errors import LineageFormatError, UsageError
from sealgate.signing import Signer

#: ID of the v3 signer additional attribute that holds the proof-of-rotation structure.
PROOF_OF_ROTATION_ATTR_ID = 0x3BA06F8C
#: First four bytes of apksigner's standalone lineage file.
LINEAGE_FILE_MAGIC = 0x3EFF39D1
LINEAGE_VERSION = 1

_U32 = struct.Struct("<I")


class Capability(IntFlag):
    """What an app grants to an older certificate in its lineage (SigningDetails.CertCapabilities)."""

    INSTALLED_DATA = 1  # an app installed with this certificate may be updated by the new signer
    SHARED_USER_ID = 2  # packages signed by this certificate may share the app's user ID
    PERMISSION = 4  # signature permissions are granted to packages signed by this certificate
    ROLLBACK = 8  # the app may be replaced by a version signed by this (older) certificate
    AUTH = 16  # authentication gated on this certificate keeps working

    @property
    def names(self) -> list[str]:
        """Names of the set capabilities, lowest bit first; unknown bits as hex, so nothing is hidden."""
        known = [member.name for member in Capability if member.name is not None and member in self]
        unknown = int(self) & ~_ALL_KNOWN
        return known if not unknown else [*known, f"0x{unknown:x}"]


_ALL_KNOWN = 0x1F
#: Capabilities apksigner gives a node when none are specified (everything but ROLLBACK).
DEFAULT_CAPABILITIES = Capability.INSTALLED_DATA | Capability.SHARED_USER_ID | Capability.PERMISSION | Capability.AUTH


@dataclass(frozen=True)
class LineageNode:
    """One certificate in the chain, with the flags and algorithms its encoding carries."""

    certificate: Certificate
    capabilities: Capability
    #: Algorithm the previous node used to sign this node (None for the first node).
    parent_signature_algorithm: int | None
    #: Algorithm this node uses to sign the next node (None for the last node).
    signature_algorithm: int | None
    #: The previous node's signature over this node's signed data (empty for the first node).
    signature: bytes = b""


@dataclass(frozen=True)
class Lineage:
    """A verified chain of signing certificates, oldest first; the last node is the current signer."""

    nodes: tuple[LineageNode, ...]

    @property
    def certificates(self) -> tuple[Certificate, ...]:
        return tuple(node.certificate for node in self.nodes)

    def contains(self, certificate: Certificate) -> bool:
        return self.node_for(certificate) is not None

    def node_for(self, certificate: Certificate) -> LineageNode | None:
        for node in self.nodes:
            if node.certificate == certificate:
                return node
        return None

    def to_json(self) -> list[dict[str, object]]:
        return [
            {
                "sha256": node.certificate.sha256,
                "subject": node.certificate.subject,
                "capabilities": node.capabilities.names,
            }
            for node in self.nodes
        ]

    def to_attribute_bytes(self) -> bytes:
        """The proof-of-rotation attribute value (byte-identical to a parsed one that had no stray bytes)."""
        return _U32.pack(LINEAGE_VERSION) + b"".join(_length_prefixed(_encode_node(node)) for node in self.nodes)

    def to_file_bytes(self) -> bytes:
        """apksigner's standalone lineage file."""
        return struct.pack("<II", LINEAGE_FILE_MAGIC, LINEAGE_VERSION) + _length_prefixed(self.to_attribute_bytes())


def parse_lineage_attribute(data: bytes) -> Lineage:
    """Parse and verify the proof-of-rotation attribute of a v3/v3.1 signer."""
    reader = BinaryReader(data, "proof-of-rotation record", LineageFormatError)
    version = reader.u32("version")
    if version != LINEAGE_VERSION:
        raise LineageFormatError(f"proof-of-rotation record has version {version}; only version 1 exists")
    nodes: list[LineageNode] = []
    while reader.remaining:
        node_bytes = reader.length_prefixed(f"node #{len(nodes) + 1}")
        nodes.append(_parse_node(node_bytes, len(nodes) + 1, nodes[-1] if nodes else None))
    _check_unique(nodes)
    return Lineage(tuple(nodes))


def read_lineage_file(data: bytes) -> Lineage:
    """Parse and verify apksigner's standalone lineage file (what `apksigner rotate` writes)."""
    reader = BinaryReader(data, "lineage file", LineageFormatError)
    if len(data) < 8:
        raise LineageFormatError(f"lineage file too short for its header: {len(data)} bytes")
    magic = reader.u32("magic")
    if magic != LINEAGE_FILE_MAGIC:
        raise LineageFormatError(f"not a signing-certificate lineage file: magic 0x{magic:08x}, expected 0x3eff39d1")
    version = reader.u32("version")
    if version != LINEAGE_VERSION:
        raise LineageFormatError(f"lineage file has version {version}; only version 1 exists")
    attribute = reader.length_prefixed("node list")
    if reader.remaining:
        raise LineageFormatError(f"lineage file has {reader.remaining} unexpected bytes after the node list")
    return parse_lineage_attribute(attribute)


# -- parsing ------------------------------------------------------------------------------------------------------


def _parse_node(node_bytes: bytes, number: int, parent: LineageNode | None) -> LineageNode:
    reader = BinaryReader(node_bytes, f"proof-of-rotation node #{number}", LineageFormatError)
    signed_data = reader.length_prefixed("signed data")
    flags = reader.u32("flags")
    signature_algorithm = reader.u32("signature algorithm")
    signature = reader.length_prefixed("signature")
    # Trailing bytes inside a node are ignored, as the platform and apksig ignore them.

    signed = BinaryReader(signed_data, f"signed data of proof-of-rotation node #{number}", LineageFormatError)
    certificate_der = signed.length_prefixed("certificate")
    parent_algorithm = signed.u32("signature algorithm")
    try:
        certificate = Certificate.from_der(certificate_der)
    except CertificateError as exc:
        raise LineageFormatError(f"proof-of-rotation node #{number} has a malformed certificate: {exc}") from exc

    if parent is not None:
        _verify_link(parent, certificate, number, signed_data, parent_algorithm, signature)
    return LineageNode(
        certificate=certificate,
        capabilities=Capability(flags),
        parent_signature_algorithm=parent_algorithm if parent is not None else None,
        signature_algorithm=signature_algorithm or None,
        signature=signature,
    )


def _verify_link(
    parent: LineageNode, child: Certificate, number: int, signed_data: bytes, announced: int, signature: bytes
) -> None:
    """Check that the parent's key signed this node, with the algorithm both sides name."""
    algorithm_id = parent.signature_algorithm or 0
    algorithm = algorithms.find(algorithm_id)
    if algorithm is None:
        raise LineageFormatError(
            f"proof-of-rotation node #{number - 1} signs the next node with unknown algorithm 0x{algorithm_id:04x}"
        )
    if announced != algorithm_id:
        raise LineageFormatError(
            f"proof-of-rotation node #{number} says it was signed with algorithm 0x{announced:04x}, but its parent "
            f"declares 0x{algorithm_id:04x}"
        )
    try:
        public_key = parent.certificate.public_key()
    except CertificateError as exc:
        raise LineageFormatError(f"proof-of-rotation node #{number - 1} has an unusable public key: {exc}") from exc
    if not algorithm.verify(public_key, signature, signed_data):
        raise LineageFormatError(
            f"proof-of-rotation node #{number} ({child.subject}) is not signed by the previous certificate "
            f"({parent.certificate.subject}): its {algorithm.name} signature does not verify"
        )


def _check_unique(nodes: list[LineageNode]) -> None:
    seen: set[Certificate] = set()
    for number, node in enumerate(nodes, start=1):
        if node.certificate in seen:
            raise LineageFormatError(
                f"proof-of-rotation node #{number} repeats an earlier certificate ({node.certificate.subject}); "
                "all certificates in a lineage must be unique"
            )
        seen.add(node.certificate)


# -- encoding -----------------------------------------------------------------------------------------------------


def _length_prefixed(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _encode_node(node: LineageNode) -> bytes:
    signed_data = _length_prefixed(node.certificate.der) + _U32.pack(node.parent_signature_algorithm or 0)
    return (
        _length_prefixed(signed_data)
        + _U32.pack(int(node.capabilities))
        + _U32.pack(node.signature_algorithm or 0)
        + _length_prefixed(node.signature)
    )


# -- making lineages ------------------------------------------------------------------------------------------------


def create_lineage(
    old: Signer,
    new: Signer,
    capabilities: Capability = DEFAULT_CAPABILITIES,
    *,
    new_capabilities: Capability = DEFAULT_CAPABILITIES,
) -> Lineage:
    """A two-node lineage in which `old` vouches for `new` (apksigner rotate without --in).

    `capabilities` are what the app keeps granting to the OLD certificate (those are the flags Android reads:
    INSTALLED_DATA lets the new key update apps installed under the old one); `new_capabilities` go on the new
    node, where they only matter once it is rotated away from in turn.
    """
    first = LineageNode(old.certificate, capabilities, None, None, b"")
    return _verified(_spawn(Lineage((first,)), old, new, new_capabilities))


def rotate_lineage(
    lineage: Lineage,
    current: Signer,
    new: Signer,
    capabilities: Capability | None = None,
    *,
    new_capabilities: Capability = DEFAULT_CAPABILITIES,
) -> Lineage:
    """`lineage` extended by `new`, signed by `current` (its newest certificate); apksigner rotate --in.

    `capabilities`, when given, replace the flags of `current`'s node (the one being rotated away from); node flags
    are not signed, so this needs no older key.
    """
    if not lineage.nodes:
        raise LineageFormatError("cannot rotate an empty lineage")
    if capabilities is not None:
        last = lineage.nodes[-1]
        lineage = Lineage(
            (
                *lineage.nodes[:-1],
                LineageNode(
                    last.certificate, capabilities, last.parent_signature_algorithm, last.signature_algorithm,
                    last.signature,
                ),
            )
        )  # fmt: skip
    return _verified(_spawn(lineage, current, new, new_capabilities))


def write_lineage_file(lineage: Lineage, path: str | os.PathLike[str]) -> None:
    """Write apksigner's standalone lineage file atomically (a reader sees the old file or the whole new one)."""
    from sealgate.apk.signing.output import write_atomically

    write_atomically(path, lineage.to_file_bytes())


def _spawn(lineage: Lineage, parent: Signer, child: Signer, child_capabilities: Capability) -> Lineage:
    """apksig's spawnDescendant: the parent's key signs (child certificate, algorithm id) with its v3 algorithm."""
    from sealgate.apk.signing.key_algorithms import block_algorithm

    last = lineage.nodes[-1]
    if last.certificate != parent.certificate:
        raise UsageError(
            f"key {parent.name!r} ({parent.certificate.subject}) is not the newest certificate of the lineage "
            f"({last.certificate.subject}); only the current key can sign a rotation"
        )
    if lineage.contains(child.certificate):
        raise UsageError(f"key {child.name!r} ({child.certificate.subject}) is already in the lineage")
    algorithm = block_algorithm(parent)
    signed_data = _length_prefixed(child.certificate.der) + _U32.pack(algorithm.apk.id)
    signature = parent.sign(signed_data, algorithm.signing)
    parent_node = LineageNode(
        last.certificate, last.capabilities, last.parent_signature_algorithm, algorithm.apk.id, last.signature
    )
    child_node = LineageNode(child.certificate, child_capabilities, algorithm.apk.id, None, signature)
    return Lineage((*lineage.nodes[:-1], parent_node, child_node))


def _verified(lineage: Lineage) -> Lineage:
    """Parse what was built, so a key that does not match its certificate fails here, not on a device."""
    try:
        return parse_lineage_attribute(lineage.to_attribute_bytes())
    except LineageFormatError as exc:
        raise UsageError(f"the new lineage does not verify (does each key match its certificate?): {exc}") from exc
