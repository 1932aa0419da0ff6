"""OTA whole-file signatures against AOSP recovery's verifier test data (../shared/vectors/ota): every row of
expected.tsv, the mutation cases of its README, otacerts.zip loading and the command's exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import read_tsv, vectors_path
from sealgate.errors import UsageError
from sealgate.ota.whole_file import load_trusted_keys, verify_package


@pytest.fixture(scope="module")
def ota_vectors() -> Path:
    return vectors_path("ota")


def _rows() -> list[dict[str, str]]:
    try:
        return read_tsv(vectors_path("ota") / "expected.tsv")
    except BaseException:  # collected without the vectors: one test that skips (or fails under CI) instead
        return [{"file": "", "certs": "", "expected": "", "source": "vectors missing"}]


@pytest.mark.parametrize("row", _rows(), ids=lambda row: f"{row['file']}-{row['certs']}")
def test_recovery_verdicts(ota_vectors: Path, row: dict[str, str]) -> None:
    files = ota_vectors / "files"
    keys = load_trusted_keys([files / name for name in row["certs"].split(",")])
    result = verify_package(files / row["file"], keys)
    assert result.verified == (row["expected"] == "ok"), (row, [issue.code for issue in result.errors])
    if result.verified:
        assert result.signer is not None and result.signer in {key.certificate for key in keys}
    else:
        assert result.errors and result.signer is None


@pytest.mark.parametrize(
    ("mutation", "code"),
    [
        ("footer", "OTA_NO_SIGNATURE"),
        ("byte50", "OTA_SIGNATURE_MISMATCH"),
        ("byte10", "OTA_SIGNATURE_MISMATCH"),
        ("start", "OTA_BAD_FOOTER"),
    ],
)
def test_readme_mutations_fail(ota_vectors: Path, tmp_path: Path, mutation: str, code: str) -> None:
    files = ota_vectors / "files"
    keys = load_trusted_keys([files / "testkey_v3.x509.pem"])
    data = bytearray((files / "otasigned_v3.zip").read_bytes())
    assert data[-6:] == bytes.fromhex("c006ffffd206")
    if mutation == "footer":
        data[len(data) - 5] = 0x05
    elif mutation == "byte50":
        data[50] = (data[50] + 1) & 0xFF
    elif mutation == "byte10":
        data[10] = (data[10] + 1) & 0xFF
    else:
        data = bytearray(b"PK\x05\x06" + bytes(12) + b"\xff\xff\xff\xff\x00\x00")
    package = tmp_path / "mutated.zip"
    package.write_bytes(bytes(data))
    result = verify_package(package, keys)
    assert not result.verified and [issue.code for issue in result.errors] == [code]


def test_otacerts_zip_is_read_like_recovery(ota_vectors: Path, tmp_path: Path) -> None:
    files = ota_vectors / "files"
    otacerts = tmp_path / "otacerts.zip"
    with zipfile.ZipFile(otacerts, "w") as archive:
        archive.write(files / "testkey_v1.x509.pem", "testkey_v1.x509.pem")
        archive.write(files / "testkey_v5.x509.pem", "releasekey.x509.pem")
        archive.writestr("README", "not a certificate: ignored, as recovery ignores it")
    keys = load_trusted_keys([otacerts])
    assert len(keys) == 2
    assert verify_package(files / "otasigned_v5.zip", keys).verified
    assert not verify_package(files / "otasigned_v2.zip", keys).verified


def test_certificates_recovery_would_not_load_are_usage_errors(ota_vectors: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"not an X\.509 certificate"):
        load_trusted_keys([ota_vectors / "files" / "testkey_v1.txt"])
    with pytest.raises(UsageError, match="no trusted certificate"):
        load_trusted_keys([])


def test_cli_exit_status_and_json(ota_vectors: Path) -> None:
    files = ota_vectors / "files"
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    run = subprocess.run(
        [*sealgate, "ota", "verify", str(files / "otasigned_v5.zip"), str(files / "unsigned.zip"),
         "--certs", str(files / "testkey_v5.x509.pem"), "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    good, bad = (json.loads(line) for line in run.stdout.splitlines())
    assert good["verified"] and good["signer"]["sha256"] and good["errors"] == []
    assert not bad["verified"] and bad["signer"] is None and bad["errors"][0]["code"] == "OTA_NO_SIGNATURE"
    ok = subprocess.run([*sealgate, "ota", "verify", str(files / "otasigned_v1.zip"), "--certs",
                         str(files / "testkey_v1.x509.pem")], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0
    usage = subprocess.run([*sealgate, "ota", "verify", str(files / "otasigned_v1.zip"), "--certs",
                            str(files / "testkey_v1.txt")], capture_output=True, text=True)  # fmt: skip
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
