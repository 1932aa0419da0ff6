"""Signing OTA packages: our whole-file signature verifies with recovery's rules (our verifier), with OpenSSL's CMS
verifier over the signed range, and Debian signapk's output verifies with our verifier."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from ota_device_tools import make_ota_key, openssl_cms_verify, require_signapk
from sealgate.ota.signer import OTACERT, sign_package, signed_range
from sealgate.ota.whole_file import load_trusted_keys, verify_package
from sealgate.signing import PrivateKeySigner


def _signer(kind: str, tmp_path: Path) -> tuple[PrivateKeySigner, Path, Path]:
    key = make_ota_key(tmp_path, kind, kind)
    return key.signer, key.cert_path, key.pk8_path


def _package(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/com/android/metadata", "ota-type=BLOCK\npost-timestamp=1700000000\n")
        archive.writestr("payload.bin", b"CrAU" + bytes(4096))
        archive.writestr(zipfile.ZipInfo("care_map.pb"), b"\x01" * 100, compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/CERT.SF", "an old JAR signature file, dropped when re-signing")
    return path


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_signed_package_verifies_with_recovery_rules_and_openssl(tmp_path: Path, kind: str) -> None:
    signer, pem, _ = _signer(kind, tmp_path)
    unsigned = _package(tmp_path / "unsigned.zip")
    signed = tmp_path / "signed.zip"
    result = sign_package(unsigned, signed, signer)
    assert result.verified and result.signer == signer.certificate
    with zipfile.ZipFile(signed) as archive:
        names = archive.namelist()
        assert names[-1] == OTACERT and "META-INF/CERT.SF" not in names
        assert archive.read(OTACERT).startswith(b"-----BEGIN CERTIFICATE-----")
        assert archive.read("payload.bin") == b"CrAU" + bytes(4096)
    assert verify_package(signed, load_trusted_keys([pem])).verified
    data = signed.read_bytes()
    comment_size = data[-2] | data[-1] << 8
    signature_start = data[-6] | data[-5] << 8
    assert data[len(data) - comment_size : len(data) - signature_start] == b"signed by SignApk\x00"
    check = openssl_cms_verify(signed, pem, tmp_path)
    assert check.returncode == 0, check.stderr
    # One changed byte anywhere in the signed range, and recovery's rules refuse it.
    damaged = bytearray(data)
    damaged[100] ^= 0x01
    (tmp_path / "damaged.zip").write_bytes(bytes(damaged))
    assert not verify_package(tmp_path / "damaged.zip", load_trusted_keys([pem])).verified


def test_signapk_signed_package_verifies_with_our_verifier(tmp_path: Path) -> None:
    signapk = require_signapk()
    _, pem, pk8 = _signer("rsa", tmp_path)
    unsigned = _package(tmp_path / "unsigned.zip")
    signed = tmp_path / "by-signapk.zip"
    subprocess.run([*signapk, "-w", str(pem), str(pk8), str(unsigned), str(signed)], check=True,
                   capture_output=True)  # fmt: skip
    result = verify_package(signed, load_trusted_keys([pem]))
    assert result.verified, [issue.message for issue in result.errors]


def test_cli_sign_with_a_keystore_key_then_verify(tmp_path: Path) -> None:
    import json
    import os
    import sys

    env = {**os.environ, "SEALGATE_PASSPHRASE": "ota test passphrase"}
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    subprocess.run([*sealgate, "keys", "init", str(tmp_path / "ks"), "--roles", "ota", "--key-type", "rsa-2048"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    unsigned = _package(tmp_path / "unsigned.zip")
    signed = subprocess.run([*sealgate, "ota", "sign", str(unsigned), str(tmp_path / "out.zip"), "--keystore",
                             str(tmp_path / "ks"), "--json"], env=env, capture_output=True, text=True)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["verified"] is True
    certificate = tmp_path / "ks" / "public" / "ota.x509.pem"
    verified = subprocess.run([*sealgate, "ota", "verify", str(tmp_path / "out.zip"), "--certs", str(certificate)],
                              capture_output=True, text=True)  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    refused = subprocess.run([*sealgate, "ota", "sign", str(tmp_path / "missing.zip"), str(tmp_path / "o.zip"),
                              "--keystore", str(tmp_path / "ks")], env=env, capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_info_reads_metadata_checks_property_files_and_names_the_claimed_signer(tmp_path: Path) -> None:
    from sealgate.ota.info import read_info
    from sealgate.ziparchive import ZipArchive

    first = tmp_path / "first.zip"
    with zipfile.ZipFile(first, "w") as archive:
        archive.writestr("payload.bin", b"CrAU" + bytes(500))
        archive.writestr("payload_properties.txt", "FILE_HASH=x\n")
    with ZipArchive.open(first) as opened:
        payload, properties = opened.entry("payload.bin"), opened.entry("payload_properties.txt")
        assert payload is not None and properties is not None
        good = f"payload.bin:{payload.data_offset}:{payload.uncompressed_size}"
        bad = f"payload_properties.txt:{properties.data_offset + 1}:{properties.uncompressed_size}"
    package = tmp_path / "package.zip"
    with zipfile.ZipFile(first) as source, zipfile.ZipFile(package, "w") as out:
        for item in source.infolist():
            out.writestr(item, source.read(item))
        tokens = f"{good},{bad}"
        out.writestr("META-INF/com/android/metadata",
                     f"ota-type=AB\npost-timestamp=1700000000\nota-streaming-property-files={tokens}\n")  # fmt: skip
    signer, _, _ = _signer("rsa", tmp_path)
    sign_package(package, tmp_path / "signed.zip", signer)
    info = read_info(tmp_path / "signed.zip")
    assert info.metadata["ota-type"] == "AB" and info.metadata["post-timestamp"] == "1700000000"
    tokens = info.property_files["ota-streaming-property-files"]
    assert [(token.name, token.matches) for token in tokens] == [
        ("payload.bin", True),
        ("payload_properties.txt", False),
    ]
    assert info.whole_file_signed and info.claimed_signer == signer.certificate


def test_large_package_is_hashed_while_copied_and_verifies_with_openssl(tmp_path: Path) -> None:
    """A payload of several copy steps (1 MiB each) that does not end on a step: the digest taken while copying must
    be the one OpenSSL computes over the signed range, and the verifier must not take a digest that is wrong."""
    import os

    from sealgate.ota.whole_file import RangeDigest

    signer, pem, _ = _signer("rsa", tmp_path)
    unsigned = tmp_path / "unsigned.zip"
    with zipfile.ZipFile(unsigned, "w") as archive:
        archive.writestr(zipfile.ZipInfo("payload.bin"), os.urandom(5 * 1024 * 1024 + 12345))
        archive.writestr("payload_properties.txt", "FILE_SIZE=5255225\n")
    signed = tmp_path / "signed.zip"
    assert sign_package(unsigned, signed, signer).verified
    check = openssl_cms_verify(signed, pem, tmp_path)
    assert check.returncode == 0, check.stderr
    keys = load_trusted_keys([pem])
    length = len(signed_range(signed))
    wrong = RangeDigest(length, "sha256", bytes(32))
    assert not verify_package(signed, keys, written=wrong).verified
    # A digest of some other range is not used at all: the verifier hashes the file itself.
    assert verify_package(signed, keys, written=RangeDigest(length - 1, "sha256", bytes(32))).verified
