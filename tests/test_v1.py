"""APK Signature Scheme v1 (JAR signing) against apksig's verdicts, plus targeted checks of its rules.

The conformance rows are those of ../shared/vectors/apksig/expected.tsv where the JAR signature decides: files named
v1-*, rows whose verified schemes include v1, and rows whose reference failure is a JAR_SIG_* issue. Each runs at
the row's SDK window (an empty min_sdk is the APK's minSdkVersion, read by sealgate.apk.manifest; an empty max_sdk
is "newest", 10000), with the APK Signature Scheme IDs that apksig would have found in the APK Signing Block for that
window.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7 as pkcs7_builder
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED_VECTORS, read_tsv, vectors_path
from sealgate.apk import jar_manifest, pkcs7, signing_block, v1
from sealgate.apk.certificate import Certificate
from sealgate.apk.manifest import read_manifest
from sealgate.apk.report import Scheme, SchemeResult
from sealgate.apk.v1 import verify_v1
from sealgate.errors import SealgateError, UsageError
from sealgate.ziparchive import ZipArchive

NEWEST = 10000
ANDROID_N = 24
ANDROID_P = 28
ONE_SIGNER_APK = "v1-only-with-rsa-pkcs1-sha256-1.2.840.113549.1.1.11-2048.apk"
SKIPPED_EXPECTATIONS = ("exception:", "observed:exception:", "stamp-fail", "cert", "key", "lineage", "parse-fail")


def _files() -> Path:
    return vectors_path("apksig", "files")


def _selected_rows() -> list[dict[str, str]]:
    tsv = SHARED_VECTORS / "apksig" / "expected.tsv"
    if not tsv.exists():
        return []
    rows = []
    for row in read_tsv(tsv):
        if not row["file"].endswith(".apk") or row["expected"].startswith(SKIPPED_EXPECTATIONS):
            continue
        if row["file"].startswith("v1-") or "v1" in _schemes(row) or _jar_issue(row):
            rows.append(row)
    return rows


def _schemes(row: dict[str, str]) -> list[str]:
    return row["schemes_verified"].split("+") if row["schemes_verified"] else []


def _jar_issue(row: dict[str, str]) -> str:
    """The reference's JAR_SIG_* failure for this row, if the JAR signature is what failed."""
    if row["key_issue"].startswith("JAR_SIG"):
        return row["key_issue"]
    first_error = row["apksig_main_errors"].split(",")[0]
    return first_error if row["expected"].endswith("fail") and first_error.startswith("JAR_SIG") else ""


def _found_scheme_ids(archive: ZipArchive, min_sdk: int, max_sdk: int) -> frozenset[int]:
    """The scheme IDs apksig's ApkVerifier would have found before falling back to JAR verification."""
    if max_sdk < ANDROID_N:
        return frozenset()
    block, _ = signing_block.locate_signing_block(archive)
    if block is None:
        return frozenset()
    found: set[int] = set()
    if max_sdk >= ANDROID_P and block.find(signing_block.V3_BLOCK_ID) is not None:
        found.add(3)
    if (min_sdk < ANDROID_P or not found) and block.find(signing_block.V2_BLOCK_ID) is not None:
        found.add(2)
    return frozenset(found)


def _verify_row(row: dict[str, str]) -> SchemeResult:
    with ZipArchive.open(_files() / row["file"]) as archive:
        min_sdk = int(row["min_sdk"]) if row["min_sdk"] else read_manifest(archive).min_sdk
        max_sdk = int(row["max_sdk"]) if row["max_sdk"] else NEWEST
        found = _found_scheme_ids(archive, min_sdk, max_sdk)
        return verify_v1(archive, min_sdk, max_sdk, found_apk_sig_scheme_ids=found)


def _row_id(row: dict[str, str]) -> str:
    return f"{row['file']}[{row['min_sdk'] or 'apk'}-{row['max_sdk'] or 'newest'}]"


ROWS = _selected_rows()


def _codes(result: SchemeResult) -> list[str]:
    return [issue.code for issue in result.all_errors()]


def _warning_codes(result: SchemeResult) -> list[str]:
    return [issue.code for issue in result.all_warnings()]


# -- conformance -------------------------------------------------------------------------------------------------


def test_enough_rows_selected() -> None:
    """Guards the selection itself: a filter bug must not silently shrink the conformance run."""
    vectors_path("apksig", "expected.tsv")
    assert len(ROWS) >= 250
    assert sum(1 for row in ROWS if _jar_issue(row)) >= 40


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(row) for row in ROWS])
def test_vector_verdict(row: dict[str, str]) -> None:
    result = _verify_row(row)
    assert result.scheme is Scheme.V1
    if row["expected"] == "no-crash":
        return
    if "v1" in _schemes(row):
        assert result.verified, [(issue.code, issue.message) for issue in result.all_errors()]
        assert result.signers and all(signer.certificates for signer in result.signers)
    else:
        issue = _jar_issue(row)
        assert issue, "row selected without a JAR verdict"
        assert not result.verified
        assert issue in _codes(result), [(i.code, i.message) for i in result.all_errors()]


def _expected_certificate(file_name: str) -> Path | None:
    """The test key the file name says signed it (e.g. ...-2048.apk is rsa-2048, ...-p256.apk is ec-p256)."""
    match = re.fullmatch(r"v1-only-with-(rsa|ecdsa|dsa)-(?:pkcs1-)?[a-z0-9]+-[0-9.]+-(p\d+|\d+)\.apk", file_name)
    if match is None:
        match = re.fullmatch(r"v1-only-with-(rsa)-(\d+)\.apk", file_name)
    if match is None:
        return None
    key_type = {"rsa": "rsa", "ecdsa": "ec", "dsa": "dsa"}[match.group(1)]
    return _files() / f"{key_type}-{match.group(2)}.x509.pem"


CERT_ROWS = [row for row in ROWS if row["expected"].endswith("ok") and _expected_certificate(row["file"])]


@pytest.mark.parametrize("row", CERT_ROWS, ids=[_row_id(row) for row in CERT_ROWS])
def test_signer_certificate_is_the_named_key(row: dict[str, str]) -> None:
    pem_path = _expected_certificate(row["file"])
    assert pem_path is not None
    expected = x509.load_pem_x509_certificate(pem_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    result = _verify_row(row)
    assert [signer.certificate.sha256 for signer in result.signers if signer.certificate] == [
        hashlib.sha256(expected).hexdigest()
    ]


def test_certificate_rows_cover_every_key_family() -> None:
    vectors_path("apksig", "expected.tsv")
    names = {str(_expected_certificate(row["file"]).name) for row in CERT_ROWS}  # type: ignore[union-attr]
    assert {"rsa-16384.x509.pem", "ec-p521.x509.pem", "dsa-3072.x509.pem"} <= names
    assert len(CERT_ROWS) >= 90


# -- identity: original bytes, the right certificate, names and order ------------------------------------------


def _verify_file(
    name: str, min_sdk: int = 23, max_sdk: int = NEWEST, found: frozenset[int] = frozenset()
) -> SchemeResult:
    with ZipArchive.open(_files() / name) as archive:
        return verify_v1(archive, min_sdk, max_sdk, found_apk_sig_scheme_ids=found)


def test_non_der_certificate_keeps_its_original_bytes() -> None:
    # The SHA-256 that apksig's ApkVerifierTest.testV1SchemeSignatureCertNotReencoded2 asserts.
    result = _verify_file("v1-only-with-rsa-1024-cert-not-der2.apk")
    assert result.verified
    assert (
        result.signers[0].certificates[0].sha256 == "da3da398de674541313deed77218ce94798531ea5131bb9b1bb4063ba4548cfb"
    )


def test_signer_certificate_is_chosen_by_issuer_and_serial_not_position() -> None:
    name = "v1-only-pkcs7-cert-bag-first-cert-not-used.apk"
    with ZipArchive.open(_files() / name) as archive:
        block = archive.entry("META-INF/CERT.RSA")
        assert block is not None
        bag = pkcs7.parse_signed_data(archive.read(block)).certificates
        result = verify_v1(archive, 23, NEWEST, found_apk_sig_scheme_ids=frozenset())
    assert result.verified and len(bag) == 2
    assert result.signers[0].certificates[0].der == bag[1] != bag[0]


def test_signers_are_named_by_their_block_file_in_apksig_order() -> None:
    result = _verify_file("v1-only-two-signers.apk")
    assert [(signer.index, signer.name) for signer in result.signers] == [(0, "CERT0.RSA"), (1, "CERT1.EC")]
    assert [signer.verified_algorithms for signer in result.signers] == [["SHA256withRSA"], ["SHA256withECDSA"]]
    ten = _verify_file("v1-only-10-signers.apk")
    assert len(ten.signers) == 10 and len({signer.certificate for signer in ten.signers}) == 10


def test_eleven_signers_are_too_many() -> None:
    result = _verify_file("v1-only-11-signers.apk")
    assert _codes(result) == ["JAR_SIG_MAX_SIGNATURES_EXCEEDED"] and not result.signers


# -- SDK-dependent rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_sdk", "max_sdk", "verified"),
    [(1, NEWEST, False), (1, 8, True), (9, 20, False), (21, 23, True), (21, NEWEST, True)],
)
def test_md5_with_rsa_oid_support_follows_the_platform_table(min_sdk: int, max_sdk: int, verified: bool) -> None:
    result = _verify_file("v1-only-with-rsa-pkcs1-md5-1.2.840.113549.1.1.4-1024.apk", min_sdk, max_sdk)
    assert result.verified is verified
    if not verified:
        assert _codes(result) == ["JAR_SIG_UNSUPPORTED_SIG_ALG"]


def test_unsupported_dsa_sha384_is_rejected_on_every_level() -> None:
    result = _verify_file("v1-only-with-dsa-sha384-2.16.840.1.101.3.4.3.3-1024.apk", 28, NEWEST)
    assert _codes(result) == ["JAR_SIG_UNSUPPORTED_SIG_ALG"]
    assert result.signers[0].errors[0].message.endswith("API Level(s) 28-10000")


def test_stripping_protection_only_from_android_n() -> None:
    # v2-stripped.apk's .SF says "X-Android-APK-Signed: 2" but the APK has no v2 signature.
    assert _codes(_verify_file("v2-stripped.apk", 23, NEWEST)) == ["JAR_SIG_MISSING_APK_SIG_REFERENCED"]
    assert _verify_file("v2-stripped.apk", 23, 23).verified
    assert _verify_file("v2-stripped.apk", 23, NEWEST, frozenset({2})).verified


def test_stripping_protection_knows_v3_only_from_android_p() -> None:
    name = "v1v2v3-with-rsa-2048-lineage-3-signers.apk"  # X-Android-APK-Signed: 2, 3
    at_o = _verify_file(name, 23, 26, frozenset({2}))
    assert at_o.verified and _warning_codes(at_o) == ["JAR_SIG_UNKNOWN_APK_SIG_SCHEME_ID"]
    assert _codes(_verify_file(name, 23, ANDROID_P, frozenset({2}))) == ["JAR_SIG_MISSING_APK_SIG_REFERENCED"]
    at_p = _verify_file(name, 23, ANDROID_P, frozenset({2, 3}))
    assert at_p.verified and not _warning_codes(at_p)


def test_no_strip_protection_is_a_warning_when_newer_schemes_exist() -> None:
    result = _verify_file(ONE_SIGNER_APK, 23, NEWEST, frozenset({2}))
    assert result.verified and _warning_codes(result) == ["JAR_SIG_NO_APK_SIG_STRIP_PROTECTION"]
    assert not _warning_codes(_verify_file(ONE_SIGNER_APK, 23, NEWEST, frozenset()))


def test_min_sdk_above_max_sdk_is_a_usage_error() -> None:
    with ZipArchive.open(_files() / ONE_SIGNER_APK) as archive, pytest.raises(UsageError):
        verify_v1(archive, 25, 24, found_apk_sig_scheme_ids=frozenset())


@pytest.mark.parametrize("workers", [1, 4])
def test_same_result_with_and_without_threads(workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v1.os, "cpu_count", lambda: workers)
    monkeypatch.setattr(v1, "_BATCH_ENTRIES", 1)
    result = _verify_file("v1-sha1-sha256-manifest-and-sf-with-sha1-wrong-in-manifest.apk", 3, NEWEST)
    assert [i.code for i in result.errors] == ["JAR_SIG_ZIP_ENTRY_DIGEST_DID_NOT_VERIFY"] * 3


# -- rules exercised on modified copies of a signed APK ---------------------------------------------------------


Mutation = Callable[[dict[str, bytes]], None]


def _mutated(tmp_path: Path, mutate: Mutation, source: str = ONE_SIGNER_APK) -> SchemeResult:
    """Rewrite a signed vector with `mutate` applied to its {name: data} map, then verify it at API 23+."""
    with zipfile.ZipFile(_files() / source) as original:
        contents = {info.filename: original.read(info) for info in original.infolist()}
    mutate(contents)
    path = tmp_path / "mutated.apk"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as rewritten:
        for name, data in contents.items():
            rewritten.writestr(name, data)
    with ZipArchive.open(path) as archive:
        return verify_v1(archive, 23, NEWEST, found_apk_sig_scheme_ids=frozenset())


def test_rewritten_copy_still_verifies(tmp_path: Path) -> None:
    assert _mutated(tmp_path, lambda contents: None).verified


def test_changed_entry_fails_its_digest(tmp_path: Path) -> None:
    result = _mutated(tmp_path, lambda contents: contents.update({"classes.dex": contents["classes.dex"] + b"\0"}))
    assert _codes(result) == ["JAR_SIG_ZIP_ENTRY_DIGEST_DID_NOT_VERIFY"]
    assert "classes.dex" in result.errors[0].message


def test_entry_missing_from_manifest_is_rejected(tmp_path: Path) -> None:
    result = _mutated(tmp_path, lambda contents: contents.update({"assets/extra.txt": b"x"}))
    assert _codes(result) == ["JAR_SIG_NO_ZIP_ENTRY_DIGEST_IN_MANIFEST"]


def test_directories_and_meta_inf_files_need_no_digest_but_are_reported(tmp_path: Path) -> None:
    result = _mutated(tmp_path, lambda contents: contents.update({"assets/": b"", "META-INF/extra.txt": b"x"}))
    assert result.verified
    assert _warning_codes(result) == ["JAR_SIG_UNPROTECTED_ZIP_ENTRY"]


def test_manifest_naming_a_missing_entry_is_rejected(tmp_path: Path) -> None:
    result = _mutated(tmp_path, lambda contents: contents.pop("resources.arsc"))
    assert _codes(result) == ["JAR_SIG_MISSING_ZIP_ENTRY_REFERENCED_IN_MANIFEST"]


def test_duplicate_and_unnamed_manifest_sections_are_rejected(tmp_path: Path) -> None:
    def add_sections(contents: dict[str, bytes]) -> None:
        manifest = contents["META-INF/MANIFEST.MF"]
        extra = b"Name: classes.dex\r\nSHA-256-Digest: AAAA\r\n\r\nSHA-256-Digest: AAAA\r\n\r\n"
        contents["META-INF/MANIFEST.MF"] = manifest + extra

    result = _mutated(tmp_path, add_sections)
    assert _codes(result) == ["JAR_SIG_DUPLICATE_MANIFEST_SECTION", "JAR_SIG_UNNNAMED_MANIFEST_SECTION"]


def test_changed_signature_file_does_not_verify(tmp_path: Path) -> None:
    def edit(contents: dict[str, bytes]) -> None:
        contents["META-INF/CERT.SF"] = contents["META-INF/CERT.SF"].replace(b"Signature-Version", b"signature-version")

    result = _mutated(tmp_path, edit)
    assert _codes(result) == ["JAR_SIG_DID_NOT_VERIFY"]
    assert result.signers[0].name == "CERT.RSA" and not result.signers[0].certificates


def test_truncated_signature_block_is_a_parse_error(tmp_path: Path) -> None:
    def cut(contents: dict[str, bytes]) -> None:
        contents["META-INF/CERT.RSA"] = contents["META-INF/CERT.RSA"][:200]

    assert _codes(_mutated(tmp_path, cut)) == ["JAR_SIG_PARSE_EXCEPTION"]


def test_block_without_signature_file(tmp_path: Path) -> None:
    result = _mutated(tmp_path, lambda contents: contents.pop("META-INF/CERT.SF"))
    assert _codes(result) == ["JAR_SIG_NO_SIGNATURES"]
    assert _warning_codes(result) == ["JAR_SIG_MISSING_FILE"]


def test_presence_and_missing_manifest(tmp_path: Path) -> None:
    no_manifest = _mutated(tmp_path, lambda contents: contents.pop("META-INF/MANIFEST.MF"))
    assert no_manifest.present and _codes(no_manifest) == ["JAR_SIG_NO_MANIFEST"]

    def strip(contents: dict[str, bytes]) -> None:
        for name in [name for name in contents if name.startswith("META-INF/")]:
            del contents[name]

    unsigned = _mutated(tmp_path, strip)
    assert not unsigned.present and not unsigned.verified and _codes(unsigned) == ["JAR_SIG_NO_MANIFEST"]


# -- manifest parser and digest selection ------------------------------------------------------------------------


def test_manifest_sections_lines_and_continuations() -> None:
    data = b"Manifest-Version: 1.0\r\nCreated-By: x\r\n\r\nName: a/very/lo\n ng/name\nSHA1-Digest: AA==\r\rName:b\n"
    main, sections = jar_manifest.parse(data)
    assert main is not None and (main.start, main.size) == (0, 40)
    assert [(s.name, s.start, s.size) for s in sections] == [("a/very/long/name", 40, 44), (None, 84, 7)]
    assert sections[0].get("sha1-DIGEST") == "AA==" and sections[1].get("Name:b") == ""


def test_attribute_names_fold_like_java() -> None:
    assert jar_manifest.equals_ignore_case("X-Android-APK-Signed", "x-android-ap\u212a-signed")  # Kelvin sign
    assert jar_manifest.equals_ignore_case("\u017fha1-digest", "SHA1-Digest")  # long s
    assert not jar_manifest.equals_ignore_case("Name", "Names")


def _section(text: str) -> jar_manifest.Section:
    main, _ = jar_manifest.parse(text.encode())
    assert main is not None
    return main


def test_digest_selection_by_platform_range() -> None:
    section = _section("Name: a\nSHA1-Digest: AAAA\nSHA-256-Digest: BBBB\nSHA-384-Digest: CCCC\n")
    assert [d.algorithm for d in jar_manifest.digests_to_verify(section, "-Digest", 18, NEWEST)] == ["SHA-384"]
    # Before API 18 only the Digest-Algorithms list (default "SHA SHA1") is consulted.
    assert [d.algorithm for d in jar_manifest.digests_to_verify(section, "-Digest", 1, 17)] == ["SHA-1"]
    assert [d.algorithm for d in jar_manifest.digests_to_verify(section, "-Digest", 1, NEWEST)] == ["SHA-1", "SHA-384"]
    sha256_only = _section("Name: a\nSHA-256-Digest: BBBB\n")
    assert jar_manifest.digests_to_verify(sha256_only, "-Digest", 1, NEWEST) == []
    listed = _section("Name: a\nDigest-Algorithms: SHA-512 SHA-256\nSHA-512-Digest: AAAA\nSHA-256-Digest: BBBB\n")
    assert [d.algorithm for d in jar_manifest.digests_to_verify(listed, "-Digest", 8, 17)] == ["SHA-256"]
    assert [d.algorithm for d in jar_manifest.digests_to_verify(listed, "-Digest", 9, 17)] == ["SHA-512"]


def test_base64_follows_javas_basic_decoder() -> None:
    assert jar_manifest.decode_base64("AAAA") == b"\0\0\0"
    assert jar_manifest.decode_base64("AAA") == b"\0\0"
    assert jar_manifest.decode_base64("AA==") == b"\0"
    for bad in ("A", "AA=", "AA==AA", "AA AA", "AA\n", "AA-_"):
        assert jar_manifest.decode_base64(bad) is None, bad


def test_unsupported_api_levels_are_the_gaps_of_the_table() -> None:
    assert pkcs7.unsupported_api_levels(pkcs7.SHA256, pkcs7.RSA, 1, 30) == [(9, 17)]
    assert pkcs7.unsupported_api_levels(pkcs7.SHA256, pkcs7.DSA, 21, 30) == [(21, 21)]
    assert pkcs7.unsupported_api_levels(pkcs7.SHA1, pkcs7.SHA256_RSA, 20, 25) == [(20, 20), (24, 25)]
    assert pkcs7.unsupported_api_levels(pkcs7.SHA1, pkcs7.SHA1_RSA, 1, NEWEST) == []
    assert pkcs7.unsupported_api_levels(pkcs7.SHA384, pkcs7.SHA384_DSA, 5, 6) == [(5, 6)]


# -- malformed input ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_manifest_parser_accepts_any_bytes(data: bytes) -> None:
    main, sections = jar_manifest.parse(data)
    ranges = [(s.start, s.size) for s in ([main] if main else []) + sections]
    assert all(start >= 0 and start + size <= len(data) for start, size in ranges)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_signed_data_parser_raises_only_its_error(data: bytes) -> None:
    with contextlib.suppress(pkcs7.Pkcs7FormatError):
        pkcs7.parse_signed_data(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_corrupted_signature_block_gives_a_verdict_or_a_sealgate_error(position: int, value: int) -> None:
    with zipfile.ZipFile(_files() / ONE_SIGNER_APK) as original:
        block = bytearray(original.read("META-INF/CERT.RSA"))
        signature_file = original.read("META-INF/CERT.SF")
    block[position % len(block)] ^= value or 1
    try:
        signed_data = pkcs7.parse_signed_data(bytes(block))
        certificates = pkcs7.parse_certificates(signed_data.certificates)
        for signer_info in signed_data.signer_infos:
            pkcs7.verify_signer_info(signed_data, certificates, signer_info, signature_file, 23, NEWEST)
    except SealgateError:
        pass


# -- rules exercised on APKs JAR-signed here (the .SF contents are ours to choose) -------------------------------

MANIFEST_MAIN = b"Manifest-Version: 1.0\r\nCreated-By: sealgate tests\r\n\r\n"


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass
class _Spec:
    """One signer of a test APK: which .SF it writes and how its block is made."""

    name: str = "CERT"
    main: str = "Signature-Version: 1.0\r\nCreated-By: 1.0 (Android)\r\n"
    #: The whole-manifest digest to write; "" writes the correct one, None writes none.
    manifest_digest: str | None = ""
    #: Entries the .SF lists (None: all); per-entry section digests to falsify.
    names: list[str] | None = None
    wrong_sections: tuple[str, ...] = ()
    signed_attributes: bool = False
    key: CertificateIssuerPrivateKeyTypes | None = None
    cert: x509.Certificate | None = None


def _test_key() -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
    key = serialization.load_der_private_key((_files() / "rsa-2048.pk8").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate((_files() / "rsa-2048.x509.pem").read_bytes())


def _jar_signed(tmp_path: Path, specs: list[_Spec], extra_entries: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(_files() / ONE_SIGNER_APK) as original:
        contents = {i.filename: original.read(i) for i in original.infolist() if not i.filename.startswith("META-INF/")}
    contents.update(extra_entries or {})
    sections = {
        name: f"Name: {name}\r\nSHA-256-Digest: {_b64_sha256(data)}\r\n\r\n".encode() for name, data in contents.items()
    }
    manifest = MANIFEST_MAIN + b"".join(sections.values())
    signed = dict(contents)
    signed["META-INF/MANIFEST.MF"] = manifest
    for spec in specs:
        sf = spec.main
        if spec.manifest_digest is not None:
            sf += f"SHA-256-Digest-Manifest: {spec.manifest_digest or _b64_sha256(manifest)}\r\n"
        sf += "\r\n"
        for name in spec.names if spec.names is not None else list(sections):
            digest = _b64_sha256(sections[name] + (b"x" if name in spec.wrong_sections else b""))
            sf += f"Name: {name}\r\nSHA-256-Digest: {digest}\r\n\r\n"
        key, cert = (spec.key, spec.cert) if spec.key and spec.cert else _test_key()
        options = [pkcs7_builder.PKCS7Options.DetachedSignature, pkcs7_builder.PKCS7Options.Binary]
        if not spec.signed_attributes:
            options.append(pkcs7_builder.PKCS7Options.NoAttributes)
        builder = pkcs7_builder.PKCS7SignatureBuilder().set_data(sf.encode())
        block = builder.add_signer(cert, key, hashes.SHA256()).sign(serialization.Encoding.DER, options)
        extension = "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA"
        signed[f"META-INF/{spec.name}.SF"] = sf.encode()
        signed[f"META-INF/{spec.name}.{extension}"] = block
    path = tmp_path / "signed.apk"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in signed.items():
            archive.writestr(name, data)
    return path


def _verify_path(
    path: Path, min_sdk: int = 23, max_sdk: int = NEWEST, found: frozenset[int] = frozenset()
) -> SchemeResult:
    with ZipArchive.open(path) as archive:
        return verify_v1(archive, min_sdk, max_sdk, found_apk_sig_scheme_ids=found)


def test_own_jar_signature_verifies(tmp_path: Path) -> None:
    result = _verify_path(_jar_signed(tmp_path, [_Spec()]))
    assert result.verified and not result.all_warnings()
    assert result.signers[0].certificate == Certificate.from_der(
        _test_key()[1].public_bytes(serialization.Encoding.DER)
    )
    assert result.signers[0].verified_algorithms == ["SHA256withRSA"]
    # SHA-256 with the bare rsaEncryption OID is unknown to API 9-17.
    assert _codes(_verify_path(_jar_signed(tmp_path, [_Spec()]), 9, NEWEST)) == ["JAR_SIG_UNSUPPORTED_SIG_ALG"]


def test_signer_without_signature_version_is_ignored(tmp_path: Path) -> None:
    broken = _Spec(name="BROKEN", main="Created-By: 1.0 (Android)\r\n")
    both = _verify_path(_jar_signed(tmp_path, [broken, _Spec()]))
    assert both.verified and [signer.name for signer in both.signers] == ["CERT.RSA"]
    assert "JAR_SIG_MISSING_VERSION_ATTR_IN_SIG_FILE" in _warning_codes(both)
    alone = _verify_path(_jar_signed(tmp_path, [broken]))
    assert _codes(alone) == ["JAR_SIG_NO_SIGNATURES"]


def test_sections_are_checked_when_the_manifest_digest_is_absent_or_wrong(tmp_path: Path) -> None:
    absent = _verify_path(_jar_signed(tmp_path, [_Spec(manifest_digest=None)]))
    assert absent.verified and _warning_codes(absent) == ["JAR_SIG_NO_MANIFEST_DIGEST_IN_SIG_FILE"]
    wrong = _verify_path(_jar_signed(tmp_path, [_Spec(manifest_digest=_b64_sha256(b"other"))]))
    assert wrong.verified and _warning_codes(wrong) == ["JAR_SIG_ZIP_ENTRY_DIGEST_DID_NOT_VERIFY"]
    bad_section = _Spec(manifest_digest=None, wrong_sections=("classes.dex",))
    assert _codes(_verify_path(_jar_signed(tmp_path, [bad_section]))) == [
        "JAR_SIG_MANIFEST_SECTION_DIGEST_DID_NOT_VERIFY"
    ]
    # A correct whole-manifest digest makes the per-section digests irrelevant.
    assert _verify_path(_jar_signed(tmp_path, [_Spec(wrong_sections=("classes.dex",))])).verified


def test_main_attributes_digest(tmp_path: Path) -> None:
    main = "Signature-Version: 1.0\r\nSHA-256-Digest-Manifest-Main-Attributes: {}\r\n"
    good = _Spec(main=main.format(_b64_sha256(MANIFEST_MAIN)))
    assert _verify_path(_jar_signed(tmp_path, [good])).verified
    bad = _Spec(main=main.format(_b64_sha256(MANIFEST_MAIN[:-2])))
    assert _codes(_verify_path(_jar_signed(tmp_path, [bad]))) == ["JAR_SIG_MANIFEST_MAIN_SECTION_DIGEST_DID_NOT_VERIFY"]
    # Netscape signtool output is exempt (and names its manifest digest "-Digest").
    signtool = _Spec(main=main.format("AAAA") + "Created-By: signtool\r\n", manifest_digest=None)
    assert _verify_path(_jar_signed(tmp_path, [signtool])).verified


def test_every_entry_needs_the_same_signers(tmp_path: Path) -> None:
    partial = _Spec(name="PARTIAL", names=["AndroidManifest.xml"])
    result = _verify_path(_jar_signed(tmp_path, [_Spec(), partial]))
    assert "JAR_SIG_ZIP_ENTRY_SIGNERS_MISMATCH" in _codes(result)
    unsigned = _verify_path(_jar_signed(tmp_path, [_Spec(names=["AndroidManifest.xml"])]))
    assert set(_codes(unsigned)) == {"JAR_SIG_ZIP_ENTRY_NOT_SIGNED"}


def test_unknown_and_malformed_scheme_ids_in_strip_protection(tmp_path: Path) -> None:
    spec = _Spec(main="Signature-Version: 1.0\r\nX-Android-APK-Signed: 2, 7,, x\r\n")
    path = _jar_signed(tmp_path, [spec])
    result = _verify_path(path, 23, ANDROID_P, frozenset({2}))
    assert result.verified and _warning_codes(result) == ["JAR_SIG_UNKNOWN_APK_SIG_SCHEME_ID"]
    assert _codes(_verify_path(path, 23, ANDROID_P)) == ["JAR_SIG_MISSING_APK_SIG_REFERENCED"]


def test_signed_attributes_need_kitkat(tmp_path: Path) -> None:
    path = _jar_signed(tmp_path, [_Spec(signed_attributes=True)])
    assert _codes(_verify_path(path, 18, NEWEST)) == ["JAR_SIG_VERIFY_EXCEPTION"]
    assert _verify_path(path, 19, NEWEST).verified


def _ec_certificate(
    usage: x509.KeyUsage | None, extra: x509.ExtensionType | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "v1 test")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    return key, builder.sign(key, hashes.SHA256())


def _key_usage(digital_signature: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "crl_sign"), False
    )
    return x509.KeyUsage(
        digital_signature=digital_signature, key_cert_sign=True, encipher_only=False, decipher_only=False, **flags
    )


def test_signer_certificate_must_allow_signing(tmp_path: Path) -> None:
    key, cert = _ec_certificate(_key_usage(True))
    good = _verify_path(_jar_signed(tmp_path, [_Spec(key=key, cert=cert)]), 21, NEWEST)
    assert good.verified and good.signers[0].verified_algorithms == ["SHA256withECDSA"]
    key, cert = _ec_certificate(_key_usage(False))
    assert _codes(_verify_path(_jar_signed(tmp_path, [_Spec(key=key, cert=cert)]), 21, NEWEST)) == [
        "JAR_SIG_VERIFY_EXCEPTION"
    ]
    unknown_critical = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    key, cert = _ec_certificate(None, unknown_critical)
    assert _codes(_verify_path(_jar_signed(tmp_path, [_Spec(key=key, cert=cert)]), 21, NEWEST)) == [
        "JAR_SIG_VERIFY_EXCEPTION"
    ]
