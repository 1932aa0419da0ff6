"""OTA packages through the offline custodian: kind "ota" bundles, signed offline into whole-file-signed packages.

Two directories stand for the two machines (the setup of test_bundle.py). The package that comes back must verify
with recovery's rules against the exported OTA certificate and with OpenSSL's CMS verifier over the signed range,
carry exactly the entries that were sent, and every forgery on the medium (a tampered request, a package signed by
another key, a swapped package, a replayed response, a lie about the hash) is refused with nothing written.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from ota_device_tools import openssl_cms_verify
from sealgate.cli.main import main
from sealgate.custody.bundle import ItemSpec, SigningResponse, create_request, open_request, open_response
from sealgate.errors import BundleError
from sealgate.ota.signer import OTACERT
from sealgate.signing import SigningAlgorithm
from test_bundle import (
    PASSPHRASE,
    Machines,
    _apply,
    _carry,
    _certificate_sha256,
    _flip_payload_byte,
    _keystore,
    _nothing_applied,
    _nothing_signed,
    _point_at,
    _rechain,
    _rewrite_response,
    _sign,
    _two_machines,
)

METADATA = "ota-type=AB\npost-build=acme/sargo/sargo:14/R1/42:user/release-keys\npost-security-patch-level=2024-03-05\npost-timestamp=1709600000\npre-device=sargo\n"  # noqa: E501


@pytest.fixture(scope="module")
def keystores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("keys")
    _keystore(base / "keystore").export_public(base / "public")
    _keystore(base / "other-keystore")
    return base / "keystore", base / "other-keystore", base / "public"


@pytest.fixture
def machines(tmp_path: Path, keystores: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> Machines:
    """test_bundle.py's two machines, with an APK stand-in (never signed here) instead of its vectors."""
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
    online, offline = _two_machines(tmp_path, keystores)
    apk = online / "App.apk"
    with zipfile.ZipFile(apk, "w") as archive:
        archive.writestr("AndroidManifest.xml", b"not used")
    return Machines(online, offline, offline / "keystore", offline / "other-keystore", online / "public", apk, apk,
                    online / "unused", online / "unused", online / "unused")  # fmt: skip


def _ota(path: Path, payload: bytes = b"CrAU" + bytes(range(256)) * 40, metadata: str = METADATA) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("payload.bin"), payload, compress_type=zipfile.ZIP_STORED)
        archive.writestr(zipfile.ZipInfo("payload_properties.txt"), "FILE_SIZE=1\n", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/com/android/metadata", metadata, compress_type=zipfile.ZIP_DEFLATED)
    return path


def _create(m: Machines, package: Path, name: str = "request.zip") -> Path:
    out = m.online / name
    args = ["bundle", "create", str(out), "--requester", "release-bot@build", "--ota", str(package), "ota"]
    assert main([*args, "--meta", "version=2025.06", "--meta", "device=sargo"]) == 0
    return out


def _round(m: Machines, package: Path) -> tuple[Path, Path]:
    request = _create(m, package)
    assert _sign(m, _carry(request, m.offline)) == 0
    return request, _carry(m.offline / "response.zip", m.online)


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_ota_round_trip(machines: Machines, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    package = _ota(m.online / "sargo-ota.zip")
    request = _create(m, package)
    capsys.readouterr()
    assert _sign(m, _carry(request, m.offline)) == 0
    summary = capsys.readouterr().out
    assert "sargo-ota.zip (ota" in summary and "whole-file OTA signature (signapk -w, ota-whole-file-sha256)" in summary
    assert "OTA says   device sargo, AB update" in summary and "acme/sargo/sargo:14/R1/42" in summary
    response = _carry(m.offline / "response.zip", m.online)
    assert _apply(m, response, request) == 0
    signed = m.online / "signed" / "sargo-ota.zip"

    # Recovery's rules (our verifier, through the CLI) against the exported OTA certificate.
    certificate = m.public / "ota.x509.pem"
    capsys.readouterr()
    assert main(["ota", "verify", str(signed), "--certs", str(certificate), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["verified"] and verdict["signer"]["sha256"] == _certificate_sha256(m, "ota")
    # OpenSSL's CMS verifier over the signed range, with the certificate as the only trust anchor.
    check = openssl_cms_verify(signed, certificate, tmp_path)
    assert check.returncode == 0, check.stderr
    # The same entries as the package sent, plus the certificate recovery shows.
    sent, back = _entries(package), _entries(signed)
    assert back.pop(OTACERT).startswith(b"-----BEGIN CERTIFICATE-----") and back == sent
    # The record names the signature.
    entries = [json.loads(line) for line in m.record.read_text().splitlines()]
    assert [(e["artifact"], e["role"], e["algorithm"], e["purpose"]) for e in entries] == [
        ("sargo-ota.zip", "ota", "ota-whole-file-sha256", "ota-package")
    ]


def test_items_file_and_request_shape(machines: Machines) -> None:
    m = machines
    package = _ota(m.online / "update.zip")
    (m.online / "items.json").write_text(json.dumps([{"kind": "ota", "role": "ota", "path": "update.zip"}]))
    out = m.online / "request.zip"
    assert main(["bundle", "create", str(out), "--from", str(m.online / "items.json")]) == 0
    with open_request(out) as bundle:
        (item,) = bundle.request.items
        assert (item.kind, item.name, item.algorithm, item.purpose) == ("ota", "update.zip", None, "ota-package")
        assert "algorithm" not in item.to_json() and "apk_options" not in item.to_json()
        assert item.output_name == "update.zip"
    assert package.is_file()


def test_not_an_ota_package_or_an_algorithm_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    with pytest.raises(BundleError, match=r"is not an OTA package: .* has neither META-INF/com/android/metadata\.pb"):
        create_request(m.online / "r1.zip", [ItemSpec("ota", "ota", path=m.apk)], requester="x")
    package = _ota(m.online / "u.zip")
    with pytest.raises(BundleError, match="signed with the hash its certificate names"):
        spec = ItemSpec("ota", "ota", path=package, algorithm=SigningAlgorithm.RSA_PKCS1_SHA256)
        create_request(m.online / "r2.zip", [spec], requester="x")
    assert not (m.online / "r1.zip").exists() and not (m.online / "r2.zip").exists()


def test_a_role_recovery_would_not_trust_is_refused_before_signing(
    machines: Machines, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    package = _ota(m.online / "update.zip")
    request = m.online / "request.zip"
    create_request(request, [ItemSpec("ota", "targets", path=package)], requester="x")  # an Ed25519 key
    capsys.readouterr()
    assert _sign(m, _carry(request, m.offline)) == 1
    assert "cannot sign OTA packages recovery accepts" in capsys.readouterr().err
    _nothing_signed(m)


def test_tampered_ota_payload_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request = _create(m, _ota(m.online / "update.zip"))
    carried = _carry(request, m.offline)
    _flip_payload_byte(carried, "payload/1")
    capsys.readouterr()
    assert _sign(m, carried) == 1
    assert "payload of item 1 (update.zip)" in capsys.readouterr().err
    _nothing_signed(m)


def test_package_signed_by_another_key_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request = _create(m, _ota(m.online / "update.zip"))
    assert _sign(m, _carry(request, m.offline), keystore=m.other_keystore) == 0
    response = _carry(m.offline / "response.zip", m.online)
    capsys.readouterr()
    assert _apply(m, response, request) == 1
    assert "not the ota certificate" in capsys.readouterr().err
    _nothing_applied(m)

    # Rewritten to claim the right certificate everywhere: recovery's verdict with the real certificate refuses it.
    right = _certificate_sha256(m, "ota")

    def claim(response: SigningResponse, outputs: dict[str, Path]) -> SigningResponse:
        items = tuple(replace(item, certificate_sha256=right) for item in response.items)
        return replace(response, items=items, record=_rechain(response.record, {0: {"certificate_sha256": right}}))

    forged = m.online / "forged.zip"
    _rewrite_response(response, forged, claim)
    assert _apply(m, forged, request) == 1
    err = capsys.readouterr().err
    assert "does not verify with the ota certificate" in err and "nothing was written" in err
    _nothing_applied(m)


def test_swapped_package_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request, response = _round(m, _ota(m.online / "update.zip"))
    # Another package (an older build), genuinely signed by the same OTA key in another request.
    (m.online / "older").mkdir()
    older = _ota(m.online / "older" / "update.zip", metadata=METADATA.replace("1709600000", "1700000000"))
    other_request = _create(m, older, "other-request.zip")
    assert _sign(m, _carry(other_request, m.offline), "other-response.zip") == 0
    other_signed = m.online / "other-signed.zip"
    with open_response(m.offline / "other-response.zip") as bundle, open(other_signed, "wb") as handle:
        bundle.copy_output(bundle.response.items[0], handle)

    swapped = m.online / "swapped.zip"
    _rewrite_response(response, swapped, lambda r, outputs: _point_at(r, outputs, "1", other_signed))
    capsys.readouterr()
    assert _apply(m, swapped, request) == 1
    err = capsys.readouterr().err
    assert "is not the package that was sent for signing (entries differ: META-INF/com/android/metadata)" in err
    assert "an artifact was swapped" in err
    _nothing_applied(m)


def test_replayed_response_and_a_lie_about_the_hash_are_refused(
    machines: Machines, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    package = _ota(m.online / "update.zip")
    _, old_response = _round(m, package)
    (m.offline / "response.zip").unlink()
    new_request = _create(m, package, "new-request.zip")
    capsys.readouterr()
    assert _apply(m, old_response, new_request) == 1
    err = capsys.readouterr().err
    assert "answers request" in err and "replayed" in err
    _nothing_applied(m)

    def sha1(response: SigningResponse, outputs: dict[str, Path]) -> SigningResponse:
        items = tuple(replace(item, algorithm="ota-whole-file-sha1") for item in response.items)
        return replace(
            response, items=items, record=_rechain(response.record, {0: {"algorithm": "ota-whole-file-sha1"}})
        )

    old_request = m.online / "request.zip"
    lied = m.online / "lied.zip"
    _rewrite_response(old_response, lied, sha1)
    assert _apply(m, lied, old_request) == 1
    assert "was signed as ota-whole-file-sha1, not the ota-whole-file-sha256" in capsys.readouterr().err
    _nothing_applied(m)
