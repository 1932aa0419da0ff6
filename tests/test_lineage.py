"""Proof-of-rotation lineages: apksig's lineage files and the lineages inside real v3/v3.1 signers."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import read_tsv
from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import (
    PROOF_OF_ROTATION_ATTR_ID,
    Capability,
    Lineage,
    parse_lineage_attribute,
    read_lineage_file,
)
from sealgate.errors import LineageFormatError
from signing_tools import apk_layout

V3_BLOCK_ID = 0xF05368C0
V31_BLOCK_ID = 0x1B93AD61
RSA_PKCS1_SHA256 = 0x0103
#: apksig's notation in expected.tsv: one letter per capability bit, "-" when unset.
_FLAG_LETTERS = (
    ("I", Capability.INSTALLED_DATA),
    ("S", Capability.SHARED_USER_ID),
    ("P", Capability.PERMISSION),
    ("R", Capability.ROLLBACK),
    ("A", Capability.AUTH),
)


def _rows(vectors: Path, prefix: str) -> list[dict[str, str]]:
    return [row for row in read_tsv(vectors / "expected.tsv") if row["expected"].startswith(prefix)]


def _vector_cert(vectors: Path, name: str) -> Certificate:
    pem = (vectors / "files" / f"{name}.x509.pem").read_bytes()
    return Certificate.from_der(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))


def _expected_chain(note: str) -> list[tuple[str, Capability]]:
    """Parse a note such as 'CN=rsa-2048[ISP-A] -> CN=rsa-2048_2[ISP-A] ->'."""
    chain = []
    for subject, letters in re.findall(r"(CN=[^\[]+)\[([A-Z-]{5})\]", note):
        flags = Capability(0)
        for (letter, capability), given in zip(_FLAG_LETTERS, letters, strict=True):
            if given == letter:
                flags |= capability
        chain.append((subject, flags))
    return chain


# -- standalone lineage files -------------------------------------------------------------------------------------


def test_every_valid_lineage_file_parses_with_the_expected_chain(apksig_vectors: Path) -> None:
    rows = _rows(apksig_vectors, "lineage-ok")
    assert len(rows) >= 8
    for row in rows:
        data = (apksig_vectors / "files" / row["file"]).read_bytes()
        lineage = read_lineage_file(data)
        chain = [(node.certificate.subject, node.capabilities) for node in lineage.nodes]
        assert chain == _expected_chain(row["note"]), row["file"]
        assert lineage.to_file_bytes() == data, f"{row['file']} does not re-encode byte for byte"


def test_every_refused_lineage_file_raises_lineage_format_error(apksig_vectors: Path) -> None:
    rows = _rows(apksig_vectors, "parse-fail")
    assert {row["file"] for row in rows} >= {"rsa-2048-lineage-invalid-magic", "rsa-2048-lineage-invalid-version"}
    for row in rows:
        with pytest.raises(LineageFormatError):
            read_lineage_file((apksig_vectors / "files" / row["file"]).read_bytes())


def test_lineage_nodes_are_the_vector_certificates_and_algorithms(apksig_vectors: Path) -> None:
    lineage = read_lineage_file((apksig_vectors / "files" / "rsa-2048-lineage-3-signers").read_bytes())
    names = ("rsa-2048", "rsa-2048_2", "rsa-2048_3")
    assert lineage.certificates == tuple(_vector_cert(apksig_vectors, name) for name in names)
    first, middle, last = lineage.nodes
    assert (first.parent_signature_algorithm, first.signature_algorithm, first.signature) == (None, 0x0103, b"")
    assert (middle.parent_signature_algorithm, middle.signature_algorithm) == (0x0103, 0x0103)
    assert (last.parent_signature_algorithm, last.signature_algorithm) == (0x0103, None)
    assert len(last.signature) == 256  # RSA-2048 signature by rsa-2048_2's key


def test_contains_node_for_and_json(apksig_vectors: Path) -> None:
    lineage = read_lineage_file(
        (apksig_vectors / "files" / "rsa-2048-lineage-no-capabilities-first-signer").read_bytes()
    )
    oldest, newest = _vector_cert(apksig_vectors, "rsa-2048"), _vector_cert(apksig_vectors, "rsa-2048_2")
    stranger = _vector_cert(apksig_vectors, "rsa-2048_3")
    assert lineage.contains(oldest) and lineage.contains(newest) and not lineage.contains(stranger)
    node = lineage.node_for(oldest)
    assert node is not None and node.capabilities == Capability(0)
    assert lineage.node_for(stranger) is None
    assert lineage.to_json() == [
        {"sha256": oldest.sha256, "subject": "CN=rsa-2048", "capabilities": []},
        {
            "sha256": newest.sha256,
            "subject": "CN=rsa-2048_2",
            "capabilities": ["INSTALLED_DATA", "SHARED_USER_ID", "PERMISSION", "AUTH"],
        },
    ]


def test_capability_values_are_androids() -> None:
    assert [int(c) for c in Capability] == [1, 2, 4, 8, 16]
    assert Capability(0x41).names == ["INSTALLED_DATA", "0x40"]


def test_every_truncation_of_a_lineage_file_is_a_clean_error(apksig_vectors: Path) -> None:
    data = (apksig_vectors / "files" / "rsa-2048-lineage-2-signers").read_bytes()
    for end in range(len(data)):
        with pytest.raises(LineageFormatError):
            read_lineage_file(data[:end])
    with pytest.raises(LineageFormatError, match="unexpected bytes"):
        read_lineage_file(data + b"\0")


def test_a_flipped_byte_never_escapes_as_another_exception(apksig_vectors: Path) -> None:
    data = (apksig_vectors / "files" / "ec-p256-lineage-2-signers").read_bytes()
    # magic, version, attribute length, attribute version, then the first (unsigned, self-standing) node.
    (first_node_length,) = struct.unpack_from("<I", data, 16)
    second_node_start = 20 + first_node_length
    accepted_after_first = []
    for offset in range(len(data)):
        changed = bytearray(data)
        changed[offset] ^= 0x80
        try:
            read_lineage_file(bytes(changed))
        except LineageFormatError:
            continue
        if offset >= second_node_start:
            accepted_after_first.append(offset)
    # Past the first node, only the last node's flags and (unused) next-algorithm field are neither signed nor
    # checked: every other byte is in its length prefixes, its parent-signed data or its signature.
    (signed_length,) = struct.unpack_from("<I", data, second_node_start + 4)
    flags_at = second_node_start + 8 + signed_length
    assert accepted_after_first == list(range(flags_at, flags_at + 8))


# -- the attribute inside real APKs -------------------------------------------------------------------------------


def _lp(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("<I", data, offset)
    return data[offset + 4 : offset + 4 + length], offset + 4 + length


def _sequence(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        item, offset = _lp(data, offset)
        yield item


def _por_attributes(apk: Path, block_id: int) -> list[bytes]:
    """The proof-of-rotation attribute of each signer in the APK's v3 or v3.1 block (test-side parser)."""
    data = apk.read_bytes()
    found = []
    for pair_id, offset, length in apk_layout(data).signing_block_pairs:
        if pair_id != block_id:
            continue
        signers, _ = _lp(data[offset : offset + length], 0)
        for signer in _sequence(signers):
            signed_data, _ = _lp(signer, 0)
            _, position = _lp(signed_data, 0)  # digests
            _, position = _lp(signed_data, position)  # certificates
            attributes, _ = _lp(signed_data, position + 8)  # after min/max SDK
            found += [
                a[4:] for a in _sequence(attributes) if struct.unpack_from("<I", a)[0] == PROOF_OF_ROTATION_ATTR_ID
            ]
    return found


def test_lineage_attribute_of_a_v3_signer_matches_the_lineage_file(apksig_vectors: Path) -> None:
    files = apksig_vectors / "files"
    (attribute,) = _por_attributes(files / "v1v2v3-with-rsa-2048-lineage-3-signers.apk", V3_BLOCK_ID)
    from_apk = parse_lineage_attribute(attribute)
    from_file = read_lineage_file((files / "rsa-2048-lineage-3-signers").read_bytes())
    assert from_apk.certificates == from_file.certificates
    assert [n.capabilities for n in from_apk.nodes] == [n.capabilities for n in from_file.nodes]
    assert from_apk.to_attribute_bytes() == attribute


def test_v31_lineage_attribute_parses(apksig_vectors: Path) -> None:
    apk = apksig_vectors / "files" / "v41-digest-mismatched-with-v31.apk"
    (attribute,) = _por_attributes(apk, V31_BLOCK_ID)
    lineage = parse_lineage_attribute(attribute)
    assert [node.certificate.subject for node in lineage.nodes] == ["CN=rsa-2048", "CN=rsa-4096"]


@pytest.mark.parametrize("block_id", [V3_BLOCK_ID, V31_BLOCK_ID])
def test_incorrect_lineage_in_an_apk_does_not_verify(apksig_vectors: Path, block_id: int) -> None:
    """apksig reports V3_SIG_POR_DID_NOT_VERIFY for this APK; the parser must refuse its lineage."""
    (attribute,) = _por_attributes(apksig_vectors / "files" / "v31-2elem-incorrect-lineage.apk", block_id)
    with pytest.raises(LineageFormatError, match="not signed by the previous certificate"):
        parse_lineage_attribute(attribute)


# -- hand-built lineages: what the platform refuses ---------------------------------------------------------------


def _key(vectors: Path, name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_der_private_key((vectors / "files" / f"{name}.pk8").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _build(vectors: Path, names: list[str], *, announced: int = RSA_PKCS1_SHA256, version: int = 1) -> bytes:
    """A lineage attribute in which each key signs the next (RSA PKCS#1 SHA-256), as apksigner writes one."""
    nodes = []
    for index, name in enumerate(names):
        cert = _vector_cert(vectors, name).der
        signed = struct.pack("<I", len(cert)) + cert + struct.pack("<I", announced if index else 0)
        signature = b""
        if index:
            signature = _key(vectors, names[index - 1]).sign(signed, padding.PKCS1v15(), hashes.SHA256())
        next_algorithm = RSA_PKCS1_SHA256 if index < len(names) - 1 else 0
        node = (
            struct.pack("<I", len(signed))
            + signed
            + struct.pack("<II", int(Capability.INSTALLED_DATA), next_algorithm)
            + struct.pack("<I", len(signature))
            + signature
        )
        nodes.append(struct.pack("<I", len(node)) + node)
    return struct.pack("<I", version) + b"".join(nodes)


def test_a_freshly_built_lineage_verifies(apksig_vectors: Path) -> None:
    lineage = parse_lineage_attribute(_build(apksig_vectors, ["rsa-2048", "rsa-2048_2", "rsa-2048_3"]))
    assert [node.certificate.subject for node in lineage.nodes] == ["CN=rsa-2048", "CN=rsa-2048_2", "CN=rsa-2048_3"]


def test_duplicate_certificates_are_refused(apksig_vectors: Path) -> None:
    with pytest.raises(LineageFormatError, match="repeats an earlier certificate"):
        parse_lineage_attribute(_build(apksig_vectors, ["rsa-2048", "rsa-2048_2", "rsa-2048"]))


def test_algorithm_that_disagrees_with_the_parent_is_refused(apksig_vectors: Path) -> None:
    with pytest.raises(LineageFormatError, match="parent declares 0x0103"):
        parse_lineage_attribute(_build(apksig_vectors, ["rsa-2048", "rsa-2048_2"], announced=0x0104))


def test_unknown_attribute_version_and_empty_attribute_are_refused(apksig_vectors: Path) -> None:
    with pytest.raises(LineageFormatError, match="version 2"):
        parse_lineage_attribute(_build(apksig_vectors, ["rsa-2048", "rsa-2048_2"], version=2))
    with pytest.raises(LineageFormatError):
        parse_lineage_attribute(b"")
    assert parse_lineage_attribute(struct.pack("<I", 1)) == Lineage(())


def test_a_node_signed_by_the_wrong_key_is_refused(apksig_vectors: Path) -> None:
    good = _build(apksig_vectors, ["rsa-2048", "rsa-2048_2"])
    forged = _build(apksig_vectors, ["rsa-2048_3", "rsa-2048_2"])
    # Splice the first node of the genuine lineage in front of the node rsa-2048_3 signed.
    (first_length,) = struct.unpack_from("<I", good, 4)
    (forged_first_length,) = struct.unpack_from("<I", forged, 4)
    spliced = good[: 8 + first_length] + forged[8 + forged_first_length :]
    with pytest.raises(LineageFormatError, match="not signed by the previous certificate"):
        parse_lineage_attribute(spliced)
