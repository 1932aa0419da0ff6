"""Reproducible-build checks: an unsigned build plus the developer's signature, as apksigcopier checks it, with
our signer and with Debian's apksigner as the developer."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import require_tool
from repo_tools import throwaway_signer, unsigned_app
from sealgate.apk.signing import sign_apk
from sealgate.repo.config import load_config
from sealgate.repo.init import init_repository
from sealgate.repo.reproducible import developer_signer, record_developer_signature, verify_build
from sealgate.repo.update import UpdateOptions, update_repository
from sealgate.signing import PrivateKeySigner


@pytest.fixture(scope="module")
def developer() -> PrivateKeySigner:
    return throwaway_signer("developer")


def test_the_same_build_is_reproduced(tmp_path: Path, developer: PrivateKeySigner) -> None:
    unsigned = unsigned_app(tmp_path / "build.apk", "org.example.app", 3)
    signed = tmp_path / "signed.apk"
    sign_apk(unsigned, signed, [developer])
    result = verify_build(unsigned, signed)
    assert result.reproducible, result.reason
    assert (result.package, result.version_code) == ("org.example.app", 3)
    assert result.signers == [developer.certificate.sha256]


def test_another_build_is_not_and_the_differing_entry_is_named(tmp_path: Path, developer: PrivateKeySigner) -> None:
    original = unsigned_app(tmp_path / "original.apk", "org.example.app", 3)
    signed = tmp_path / "signed.apk"
    sign_apk(original, signed, [developer])
    rebuilt = tmp_path / "rebuilt.apk"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            data = source.read(info)
            out.writestr(info, data + b"# built elsewhere\n" if info.filename == "assets/version.txt" else data)
    result = verify_build(rebuilt, signed)
    assert not result.reproducible
    assert result.differences == ["assets/version.txt: different content"]
    assert "does not verify over the unsigned build" in result.reason


def test_apksigner_signed_release_is_reproduced_and_recorded(tmp_path: Path, developer: PrivateKeySigner) -> None:
    """The developer signs with Debian's apksigner; our check copies that signature over our own build."""
    apksigner, zipalign = require_tool("apksigner"), require_tool("zipalign")
    raw = unsigned_app(tmp_path / "raw.apk", "org.example.app", 7)
    aligned = tmp_path / "aligned.apk"
    subprocess.run([zipalign, "-f", "-p", "4", str(raw), str(aligned)], check=True)
    key, cert = tmp_path / "key.pk8", tmp_path / "cert.der"
    from cryptography.hazmat.primitives import serialization

    key.write_bytes(
        developer._key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert.write_bytes(developer.certificate.der)
    signed = tmp_path / "org.example.app_7.apk"
    subprocess.run(
        [apksigner, "sign", "--key", str(key), "--cert", str(cert), "--out", str(signed), str(aligned)], check=True
    )
    result = verify_build(aligned, signed)
    assert result.reproducible, (result.reason, result.differences)
    root = tmp_path / "fdroid"
    init_repository(root, url="https://example.org/fdroid/repo", name="t", description="d", archive_older=0)
    recorded = record_developer_signature(root / "metadata", signed, result)
    assert sorted(path.name for path in recorded.iterdir()) == [
        "APKSigningBlock", "APKSigningBlockOffset", "KEY.RSA", "KEY.SF", "MANIFEST.MF",
    ]  # fmt: skip
    assert developer_signer(root / "metadata", "org.example.app") == developer.certificate.sha256


def test_developer_signed_versions_come_first(tmp_path: Path, developer: PrivateKeySigner) -> None:
    """fdroidserver's order: the developer's signer (of a reproduced build) first, whatever its fingerprint."""
    from sealgate.repo.model import IndexedVersion, sort_versions
    from sealgate.repo.scan import ScannedApk

    def version(signer: str, code: int) -> IndexedVersion:
        scan = ScannedApk(name=f"{signer[:4]}_{code}.apk", size=1, sha256=signer + str(code), verified=True,
                          package="org.example.app", version_code=code, signers=(signer,))  # fmt: skip
        return IndexedVersion(scan, 0)

    versions = [version("aaaa", 1), version("ffff", 1), version("ffff", 2), version("aaaa", 2)]
    plain = [(v.signer, v.scan.version_code) for v in sort_versions(versions)]
    assert plain == [("aaaa", 2), ("aaaa", 1), ("ffff", 2), ("ffff", 1)]
    developer_first = [(v.signer, v.scan.version_code) for v in sort_versions(versions, "ffff")]
    assert developer_first == [("ffff", 2), ("ffff", 1), ("aaaa", 2), ("aaaa", 1)]


def test_recorded_signature_reorders_nothing_it_should_not(tmp_path: Path, developer: PrivateKeySigner) -> None:
    """Recording a reproduced build's signature is an input change: the next update sees it, and stays valid."""
    root = tmp_path / "fdroid"
    init_repository(root, url="https://example.org/fdroid/repo", name="t", description="d", archive_older=0)
    (root / "metadata" / "org.example.app.yml").write_text("License: MIT\n")
    unsigned = unsigned_app(tmp_path / "build.apk", "org.example.app", 1)
    sign_apk(unsigned, root / "repo" / "org.example.app_1.apk", [developer])
    options = UpdateOptions(timestamp=1_700_000_000)
    first = update_repository(load_config(root), None, options)
    assert first.scanned == 1
    result = verify_build(unsigned, root / "repo" / "org.example.app_1.apk")
    record_developer_signature(root / "metadata", root / "repo" / "org.example.app_1.apk", result)
    second = update_repository(load_config(root), None, options)
    assert second.cached == 1 and second.sections[0].changed is False  # a full run, the index unchanged
    index = json.loads((root / "repo" / "index-v2.json").read_bytes())
    assert index["packages"]["org.example.app"]["metadata"]["preferredSigner"] == developer.certificate.sha256


def test_cli_verify_build_exit_status_and_record(tmp_path: Path, developer: PrivateKeySigner) -> None:
    import sys

    root = tmp_path / "fdroid"
    init_repository(root, url="https://example.org/fdroid/repo", name="t", description="d", archive_older=0)
    unsigned = unsigned_app(tmp_path / "build.apk", "org.example.app", 4)
    signed = tmp_path / "signed.apk"
    sign_apk(unsigned, signed, [developer])
    other = unsigned_app(tmp_path / "other.apk", "org.example.app", 5)
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    good = subprocess.run([*sealgate, "repo", "verify-build", str(unsigned), str(signed), "--dir", str(root),
                           "--json"], capture_output=True, text=True)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["recorded"] == str(root / "metadata" / "org.example.app" / "signatures" / "4")
    bad = subprocess.run([*sealgate, "repo", "verify-build", str(other), str(signed), "--dir", str(root)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "NOT reproduced" in bad.stdout and "Traceback" not in bad.stderr
