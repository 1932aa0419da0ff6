"""APK Signature Scheme v4 (.idsig) and the fs-verity Merkle tree, against apksig's vectors and Debian's apksigner."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import read_tsv, require_tool
from sealgate.apk.certificate import Certificate
from sealgate.apk.report import SchemeResult
from sealgate.apk.v4 import V31_BLOCK_ID, V4ReferenceSigner, parse_idsig, pick_best_digest_for_v4, verify_v4
from sealgate.apk.verity import (
    CONTENT_DIGEST_SALT,
    fd_reader,
    merkle_root,
    merkle_tree,
    segment_reader,
    verity_content_digest,
)
from sealgate.errors import IdsigFormatError
from signing_tools import apk_layout, apksigner_sign, flip, make_key, unsigned_apk

V2_BLOCK_ID = 0x7109871A
V3_BLOCK_ID = 0xF05368C0
VERITY_ALGORITHMS = (0x0421, 0x0423, 0x0425)


# -- test-side reading of v2/v3/v3.1 signers (independent of sealgate's signing-block code) -------------------------


def _lp(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("<I", data, offset)
    return data[offset + 4 : offset + 4 + length], offset + 4 + length


def _sequence(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        item, offset = _lp(data, offset)
        yield item


def _signers(apk: Path, block_id: int) -> list[V4ReferenceSigner]:
    """Certificate and signed content digests of each signer in one scheme block, without verifying anything."""
    data = apk.read_bytes()
    found = []
    for pair_id, offset, length in apk_layout(data).signing_block_pairs:
        if pair_id != block_id:
            continue
        signers, _ = _lp(data[offset : offset + length], 0)
        for signer in _sequence(signers):
            signed_data, _ = _lp(signer, 0)
            digests, position = _lp(signed_data, 0)
            certificates, _ = _lp(signed_data, position)
            content = {struct.unpack_from("<I", d)[0]: _lp(d, 4)[0] for d in _sequence(digests)}
            found.append(V4ReferenceSigner(Certificate.from_der(next(_sequence(certificates))), content))
    return found


def _verify(apk: Path, idsig: bytes, references: list[V4ReferenceSigner]) -> SchemeResult:
    fd = os.open(apk, os.O_RDONLY)
    try:
        return verify_v4(idsig, fd, os.fstat(fd).st_size, references)
    finally:
        os.close(fd)


def _codes(result: SchemeResult) -> list[str]:
    return [issue.code for issue in result.all_errors()]


# -- apksig's .idsig vectors --------------------------------------------------------------------------------------


def _idsig_files(vectors: Path) -> list[Path]:
    files = sorted((vectors / "files").glob("*.idsig"))
    assert len(files) >= 2
    return files


def test_vector_idsig_files_parse(apksig_vectors: Path) -> None:
    for path in _idsig_files(apksig_vectors):
        idsig = parse_idsig(path.read_bytes())
        hashing = idsig.hashing_info
        assert (idsig.version, hashing.hash_algorithm, hashing.log2_block_size, hashing.salt) == (2, 1, 12, b"")
        assert len(hashing.raw_root_hash) == 32
        # apksig writes the v3 signer's info, then a block for the v3.1 signer, then the tree.
        assert [info.block_id for info in idsig.signing_infos] == [None, V31_BLOCK_ID]
        assert idsig.tree is not None and len(idsig.tree) == 4096


def test_merkle_tree_of_vector_apks_matches_their_idsig(apksig_vectors: Path) -> None:
    for path in _idsig_files(apksig_vectors):
        apk = path.with_suffix("")
        idsig = parse_idsig(path.read_bytes())
        fd = os.open(apk, os.O_RDONLY)
        try:
            root, tree = merkle_tree(fd_reader(fd), os.fstat(fd).st_size)
        finally:
            os.close(fd)
        assert root == idsig.hashing_info.raw_root_hash, apk.name
        assert tree == idsig.tree, apk.name


def test_expected_tsv_v4_rows(apksig_vectors: Path) -> None:
    """Each row naming a .idsig: our verdict and key issue are apksig's (v4 compared with v3, then v3.1)."""
    rows = [row for row in read_tsv(apksig_vectors / "expected.tsv") if row["v4_sig_file"]]
    assert rows
    for row in rows:
        apk = apksig_vectors / "files" / row["file"]
        references = _signers(apk, V3_BLOCK_ID) + _signers(apk, V31_BLOCK_ID)
        result = _verify(apk, (apksig_vectors / "files" / row["v4_sig_file"]).read_bytes(), references)
        assert result.verified == (row["expected"] == "ok"), row["file"]
        if row["key_issue"]:
            assert row["key_issue"] in _codes(result), row["file"]


def test_v41_digest_mismatch_is_the_v31_signer(apksig_vectors: Path) -> None:
    apk = apksig_vectors / "files" / "v41-digest-mismatched-with-v31.apk"
    references = _signers(apk, V3_BLOCK_ID) + _signers(apk, V31_BLOCK_ID)
    result = _verify(apk, apk.with_name(apk.name + ".idsig").read_bytes(), references)
    assert _codes(result) == ["V4_SIG_V2_V3_DIGESTS_MISMATCH"]
    assert not result.signers[0].errors and result.signers[1].errors
    assert [s.certificate.subject for s in result.signers if s.certificate] == ["CN=rsa-2048", "CN=rsa-4096"]


def test_v31_dev_release_idsig_verifies_against_both_signers(apksig_vectors: Path) -> None:
    apk = apksig_vectors / "files" / "v31-rsa-2048_2-tgt-10000-dev-release.apk"
    idsig = apk.with_name(apk.name + ".idsig").read_bytes()
    v3, v31 = _signers(apk, V3_BLOCK_ID), _signers(apk, V31_BLOCK_ID)
    result = _verify(apk, idsig, v3 + v31)
    assert result.verified, _codes(result)
    assert len(result.content_digests) == 1
    # One reference for a two-signer .idsig, none, or swapped signers: each is refused with apksig's issue.
    assert _codes(_verify(apk, idsig, v3)) == ["V4_SIG_MULTIPLE_SIGNERS"]
    assert _codes(_verify(apk, idsig, [])) == ["V4_SIG_NO_V2_V3_SIGNATURE"]
    swapped = _codes(_verify(apk, idsig, v31 + v3))
    assert "V4_SIG_V2_V3_SIGNERS_MISMATCH" in swapped


def test_every_truncation_of_an_idsig_is_a_clean_error(apksig_vectors: Path) -> None:
    data = (apksig_vectors / "files" / "v41-digest-mismatched-with-v31.apk.idsig").read_bytes()
    without_tree = len(data) - 4 - 4096
    for end in range(len(data)):
        if end == without_tree:
            assert parse_idsig(data[:end]).tree is None  # the tree is optional
            continue
        with pytest.raises(IdsigFormatError):
            parse_idsig(data[:end])
    with pytest.raises(IdsigFormatError, match="unexpected bytes"):
        parse_idsig(data + b"\0")


def test_unsupported_versions_and_oversized_fields_are_refused(apksig_vectors: Path) -> None:
    data = (apksig_vectors / "files" / "v41-digest-mismatched-with-v31.apk.idsig").read_bytes()
    for version in (1, 3):
        with pytest.raises(IdsigFormatError, match="version"):
            parse_idsig(struct.pack("<i", version) + data[4:])
    # The platform reads at most 8096 bytes of hashing info and signing infos together.
    oversized = data[:4] + struct.pack("<i", 9000) + data[8:]
    with pytest.raises(IdsigFormatError, match="at most 8096"):
        parse_idsig(oversized)


def test_pick_best_digest_prefers_sha512_then_verity_then_sha256() -> None:
    assert pick_best_digest_for_v4({0x0103: b"256", 0x0421: b"verity", 0x0104: b"512"}) == b"512"
    assert pick_best_digest_for_v4({0x0103: b"256", 0x0421: b"verity"}) == b"verity"
    assert pick_best_digest_for_v4({0x0201: b"ec256"}) == b"ec256"
    assert pick_best_digest_for_v4({0x9999: b"unknown"}) is None


# -- the Merkle tree ----------------------------------------------------------------------------------------------


def _naive_root(data: bytes, salt: bytes) -> bytes:
    """The tree as VerityTreeBuilder describes it, written as plainly as possible."""

    def pages(level: bytes) -> bytes:
        level += bytes(-len(level) % 4096)
        return b"".join(hashlib.sha256(salt + level[i : i + 4096]).digest() for i in range(0, len(level), 4096))

    level = pages(data)
    while len(level) > 4096:
        level = pages(level)
    return hashlib.sha256(salt + level + bytes(4096 - len(level))).digest()


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 3 * 1024 * 1024 + 123])
@pytest.mark.parametrize("salt", [b"", CONTENT_DIGEST_SALT, b"salty"])
def test_merkle_root_matches_the_plain_definition(size: int, salt: bytes) -> None:
    data = hashlib.shake_256(f"{size}".encode()).digest(size)
    assert merkle_root(lambda offset, length: data[offset : offset + length], size, salt) == _naive_root(data, salt)


def test_empty_input_has_the_fs_verity_zero_root() -> None:
    assert merkle_tree(lambda offset, length: b"", 0) == (bytes(32), b"")


def test_segments_read_as_one_stream(tmp_path: Path) -> None:
    data = hashlib.shake_256(b"segments").digest(2 * 1024 * 1024 + 77)
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        cut1, cut2 = 4096 * 300 + 5, 2 * 1024 * 1024 + 3
        segments: list[bytes | tuple[int, int, int]] = [
            (fd, 0, cut1),
            b"",
            data[cut1:cut2],
            (fd, cut2, len(data) - cut2),
        ]
        read, size = segment_reader(segments)
        assert size == len(data)
        assert read(cut1 - 3, 10) == data[cut1 - 3 : cut1 + 7]
        expected = _naive_root(data, CONTENT_DIGEST_SALT) + struct.pack("<Q", len(data))
        assert verity_content_digest(segments) == expected
    finally:
        os.close(fd)


def _verity_vectors(vectors: Path) -> list[tuple[Path, int, bytes]]:
    """(APK, block, signed verity digest) for each signer that signed a VERITY_CHUNKED_SHA256 digest, in the vector
    APKs apksig verifies with v2 or v3 (so their contents are intact)."""
    intact = {
        row["file"]
        for row in read_tsv(vectors / "expected.tsv")
        if row["expected"] in ("ok", "ok+warning", "observed:ok")
        and {"v2", "v3"} & set(row["schemes_verified"].split("+"))
    }
    found = []
    for name in sorted(intact):
        apk = vectors / "files" / name
        for block in (V2_BLOCK_ID, V3_BLOCK_ID):
            for signer in _signers(apk, block):
                found += [(apk, block, d) for a, d in signer.content_digests.items() if a in VERITY_ALGORITHMS]
    return found


def test_verity_content_digest_matches_what_v2_and_v3_signers_signed(apksig_vectors: Path) -> None:
    cases = _verity_vectors(apksig_vectors)
    assert {"golden-rsa-verity-out.apk", "golden-pinsapp-signed.apk"} <= {apk.name for apk, _, _ in cases}
    assert len(cases) >= 6
    for apk, _, signed in cases:
        data = apk.read_bytes()
        layout = apk_layout(data)
        assert layout.signing_block_offset is not None and layout.signing_block_offset % 4096 == 0
        eocd = bytearray(data[layout.eocd_offset :])
        struct.pack_into("<I", eocd, 16, layout.signing_block_offset)
        fd = os.open(apk, os.O_RDONLY)
        try:
            segments = [(fd, 0, layout.signing_block_offset), (fd, layout.cd_offset, layout.cd_size), bytes(eocd)]
            assert verity_content_digest(segments) == signed, apk.name
        finally:
            os.close(fd)


# -- .idsig files made by Debian's apksigner ----------------------------------------------------------------------


@dataclass(frozen=True)
class SignedApk:
    apk: Path
    idsig: bytes
    references: list[V4ReferenceSigner]
    unsigned: Path


@pytest.fixture(scope="session", params=["rsa-2048", "ec-p256"])
def apksigner_v4(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SignedApk:
    require_tool("apksigner")
    vectors: Path = request.getfixturevalue("apksig_vectors")
    directory = tmp_path_factory.mktemp(f"v4-{request.param}")
    key = make_key(directory, request.param)
    unsigned = unsigned_apk(vectors, directory)
    apk = apksigner_sign(unsigned, directory / "signed.apk", [key], v4=True)
    references = _signers(apk, V3_BLOCK_ID) or _signers(apk, V2_BLOCK_ID)
    assert [r.certificate.der for r in references] == [key.cert_der]
    return SignedApk(apk, apk.with_name(apk.name + ".idsig").read_bytes(), references, unsigned)


def test_apksigner_idsig_verifies(apksigner_v4: SignedApk) -> None:
    result = _verify(apksigner_v4.apk, apksigner_v4.idsig, apksigner_v4.references)
    assert result.verified, _codes(result)
    assert result.signers[0].certificate == apksigner_v4.references[0].certificate
    assert parse_idsig(apksigner_v4.idsig).signing_infos[0].apk_digest == pick_best_digest_for_v4(
        apksigner_v4.references[0].content_digests
    )


def test_a_changed_apk_byte_fails_the_root_check(apksigner_v4: SignedApk, tmp_path: Path) -> None:
    data = apksigner_v4.apk.read_bytes()
    changed = tmp_path / "changed.apk"
    changed.write_bytes(flip(data, apk_layout(data).entries[0].data_offset + 3))
    assert _codes(_verify(changed, apksigner_v4.idsig, apksigner_v4.references)) == ["V4_SIG_APK_ROOT_DID_NOT_VERIFY"]


def test_an_idsig_for_another_apk_does_not_verify(apksigner_v4: SignedApk) -> None:
    codes = _codes(_verify(apksigner_v4.unsigned, apksigner_v4.idsig, apksigner_v4.references))
    assert "V4_SIG_DID_NOT_VERIFY" in codes  # the signed data names the APK's size


def test_tampered_idsig_signature_and_tree_are_caught(apksigner_v4: SignedApk) -> None:
    idsig = apksigner_v4.idsig
    assert _codes(_verify(apksigner_v4.apk, flip(idsig, len(idsig) - 4096 - 4 - 10), apksigner_v4.references)) == [
        "V4_SIG_DID_NOT_VERIFY"
    ]
    assert _codes(_verify(apksigner_v4.apk, flip(idsig, len(idsig) - 1), apksigner_v4.references)) == [
        "V4_SIG_APK_TREE_DID_NOT_VERIFY"
    ]
    assert _verify(apksigner_v4.apk, idsig[: len(idsig) - 4 - 4096], apksigner_v4.references).verified


def test_v4_signer_must_be_the_v2_v3_signer(apksigner_v4: SignedApk, apksig_vectors: Path) -> None:
    other = _signers(apksig_vectors / "files" / "golden-rsa-verity-out.apk", V3_BLOCK_ID)[0]
    wrong_cert = V4ReferenceSigner(other.certificate, apksigner_v4.references[0].content_digests)
    assert _codes(_verify(apksigner_v4.apk, apksigner_v4.idsig, [wrong_cert])) == ["V4_SIG_V2_V3_SIGNERS_MISMATCH"]
    wrong_digest = V4ReferenceSigner(apksigner_v4.references[0].certificate, {0x0103: bytes(32)})
    assert _codes(_verify(apksigner_v4.apk, apksigner_v4.idsig, [wrong_digest])) == ["V4_SIG_V2_V3_DIGESTS_MISMATCH"]
