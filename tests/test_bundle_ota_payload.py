"""The payload inside an OTA package signed offline: `sealgate sign` signs an unsigned payload.bin with the role's
key before the whole-file signature, and `bundle apply` refuses every package that is not the one sent with its
payload signed by that key.

The two machines of test_bundle.py; the packages are real (`release ota` over small synthetic target files). The
forgeries are what someone holding the medium can make (or a custodian tricked into whole-file signing): the payload
left unsigned, signed by another key, a payload from another build under the right signatures, changed metadata, an
extra entry, and a claim that no payload was signed. A package whose payload is already signed keeps it byte for
byte, as before.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from sealgate.cli.main import main
from sealgate.custody.bundle import SigningResponse
from sealgate.custody.keystore import Keystore
from sealgate.custody.ota_payload import payload_state, sign_package_payload
from sealgate.ota.metadata import read_package_metadata
from sealgate.ota.package import build_ab_package, entry_data_range
from sealgate.ota.signer import OTACERT, sign_package
from test_bundle import (
    PASSPHRASE,
    Machines,
    _apply,
    _carry,
    _keystore,
    _nothing_applied,
    _point_at,
    _rechain,
    _rewrite_response,
    _sign,
)
from test_release_chain import BUILD_N, BUILD_N1, write_target_files


@pytest.fixture(scope="module")
def keystores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("keys")
    _keystore(base / "keystore").export_public(base / "public")
    _keystore(base / "other-keystore")
    return base / "keystore", base / "other-keystore", base / "public"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unsigned full OTAs of builds N and N+1, made with `release ota`."""
    base = tmp_path_factory.mktemp("packages")
    made = {}
    for build in (BUILD_N, BUILD_N1):
        target = write_target_files(base / f"tf-{build.incremental}.zip", build)
        made[build.incremental] = base / f"sargo-ota-{build.incremental}.zip"
        assert main(["release", "ota", str(target), str(made[build.incremental])]) == 0
    return made


@pytest.fixture
def machines(tmp_path: Path, keystores: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> Machines:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
    online, offline = tmp_path / "online", tmp_path / "offline"
    online.mkdir()
    offline.mkdir()
    keystore, other, public = keystores
    shutil.copytree(keystore, offline / "keystore")
    shutil.copytree(other, offline / "other-keystore")
    shutil.copytree(public, online / "public")
    unused = online / "unused"
    return Machines(online, offline, offline / "keystore", offline / "other-keystore", online / "public", unused,
                    unused, unused, unused, unused)  # fmt: skip


def _round(m: Machines, package: Path) -> tuple[Path, Path]:
    request = m.online / "request.zip"
    assert main(["bundle", "create", str(request), "--requester", "bot", "--ota", str(package), "ota"]) == 0
    assert _sign(m, _carry(request, m.offline)) == 0
    return request, _carry(m.offline / "response.zip", m.online)


def _signer(m: Machines, keystore: Path | None = None):  # type: ignore[no-untyped-def]
    return Keystore.open(keystore or m.keystore).signer("ota", PASSPHRASE)


def _payload_key_check(package: Path, certificate: Path) -> bool:
    """update_engine's checks of the payload in the package (signatures, properties), through the CLI."""
    offset, size = entry_data_range(package, "payload.bin")
    properties = package.parent / "payload_properties.txt"
    with zipfile.ZipFile(package) as archive:
        properties.write_bytes(archive.read("payload_properties.txt"))
    args = ["ota", "payload", "verify", str(package), "--certs", str(certificate), "--properties", str(properties)]
    return main([*args, "--offset", str(offset), "--size", str(size)]) == 0


def test_unsigned_payload_is_signed_offline_and_checked_on_apply(
    machines: Machines, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    package = shutil.copy(packages["1002"], m.online / "sargo-ota.zip")
    assert payload_state(Path(package)) == "unsigned"
    request = m.online / "request.zip"
    assert main(["bundle", "create", str(request), "--requester", "bot", "--ota", str(package), "ota"]) == 0
    capsys.readouterr()
    assert _sign(m, _carry(request, m.offline)) == 0
    summary = capsys.readouterr().out
    assert "payload signature (update_engine's) and whole-file OTA signature" in summary
    assert "payload.bin is unsigned: it will be signed with the ota key" in summary
    response = _carry(m.offline / "response.zip", m.online)
    assert _apply(m, response, request) == 0
    signed = m.online / "signed" / "sargo-ota.zip"
    assert _payload_key_check(signed, m.public / "ota.x509.pem")
    # The same metadata, the property files recomputed; the record names both signatures.
    before, after = read_package_metadata(Path(package)), read_package_metadata(signed)
    assert replace(before, property_files={}) == replace(after, property_files={})
    assert before.property_files != after.property_files
    entries = [json.loads(line) for line in m.record.read_text().splitlines()]
    assert [entry["algorithm"] for entry in entries] == ["ota-payload-sha256+whole-file-sha256"]
    with zipfile.ZipFile(signed) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["payload.bin", "payload_properties.txt", "META-INF/com/android/metadata",
             "META-INF/com/android/metadata.pb", OTACERT]
        )  # fmt: skip


def test_already_signed_payload_is_kept(
    machines: Machines, packages: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    prepared = m.online / "sargo-ota.zip"
    sign_package_payload(packages["1002"], prepared, _signer(m), tmp_path / "work")
    assert payload_state(prepared) == "signed"
    capsys.readouterr()
    request, response = _round(m, prepared)
    assert "payload.bin is already signed; it is kept as it is" in capsys.readouterr().out
    assert _apply(m, response, request) == 0
    with zipfile.ZipFile(prepared) as sent, zipfile.ZipFile(m.online / "signed" / "sargo-ota.zip") as back:
        assert {name: back.read(name) for name in back.namelist() if name != OTACERT} == {
            name: sent.read(name) for name in sent.namelist()
        }
    entries = [json.loads(line) for line in m.record.read_text().splitlines()]
    assert [entry["algorithm"] for entry in entries] == ["ota-whole-file-sha256"]


def _forge(m: Machines, response: Path, request: Path, forged_package: Path, algorithm: str | None = None) -> int:
    """The response rewritten to carry `forged_package` (manifest and record made to agree with it)."""

    def swap(bundle: SigningResponse, outputs: dict[str, Path]) -> SigningResponse:
        swapped = _point_at(bundle, outputs, "1", forged_package)
        if algorithm is None:
            return swapped
        items = tuple(replace(item, algorithm=algorithm) for item in swapped.items)
        return replace(swapped, items=items, record=_rechain(swapped.record, {0: {"algorithm": algorithm}}))

    forged = m.online / f"forged-{forged_package.stem}.zip"
    _rewrite_response(response, forged, swap)
    shutil.rmtree(m.online / "signed", ignore_errors=True)
    return _apply(m, forged, request)


def test_forged_payloads_are_refused_on_apply(
    machines: Machines, packages: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    unsigned = shutil.copy(packages["1002"], m.online / "sargo-ota.zip")
    request, response = _round(m, Path(unsigned))
    ota = _signer(m)
    work = tmp_path / "work"

    def whole_file(source: Path, name: str) -> Path:
        out = tmp_path / f"{name}.zip"
        sign_package(source, out, ota)
        return out

    # 1. The payload left unsigned, the whole-file signature genuine.
    cases = {"unsigned payload": (whole_file(Path(unsigned), "unsigned"), "does not verify with the role's key")}
    # 2. The payload signed by another key.
    other_payload = tmp_path / "other-payload.zip"
    sign_package_payload(Path(unsigned), other_payload, _signer(m, m.other_keystore), work / "2")
    cases["other key"] = (whole_file(other_payload, "other"), "does not verify with the role's key")
    # 3. Build N's payload, genuinely signed, in place of build N+1's.
    older = tmp_path / "older-payload.zip"
    sign_package_payload(packages["1001"], older, ota, work / "3")
    cases["older payload"] = (whole_file(older, "older"), "not the payload that was sent")
    # 4. The right payload, but other metadata (a later timestamp).
    right = tmp_path / "right-payload.zip"
    sign_package_payload(Path(unsigned), right, ota, work / "4")
    metadata = read_package_metadata(right)
    lied = tmp_path / "lied.zip"
    payload, properties = tmp_path / "payload.bin", tmp_path / "payload_properties.txt"
    with zipfile.ZipFile(right) as archive:
        payload.write_bytes(archive.read("payload.bin"))
        properties.write_bytes(archive.read("payload_properties.txt"))
    later = replace(metadata, post_timestamp=metadata.post_timestamp + 1, property_files={})
    build_ab_package(lied, payload=payload, payload_properties=properties, metadata=later)
    cases["metadata"] = (whole_file(lied, "lied-signed"), "its metadata is not the metadata that was sent")
    # 5. An entry added.
    (tmp_path / "care_map.pb").write_bytes(b"extra")
    extra = tmp_path / "extra.zip"
    same = replace(metadata, property_files={})
    build_ab_package(extra, payload=payload, payload_properties=properties, metadata=same,
                     extra_entries={"care_map.pb": tmp_path / "care_map.pb"})  # fmt: skip
    cases["extra entry"] = (whole_file(extra, "extra-signed"), "other entries differ")
    # 6. An install option slipped into payload_properties.txt (the device would not switch slots).
    options = tmp_path / "options" / "payload_properties.txt"
    options.parent.mkdir()
    options.write_bytes(properties.read_bytes() + b"SWITCH_SLOT_ON_REBOOT=0\n")
    switched = tmp_path / "switched.zip"
    build_ab_package(switched, payload=payload, payload_properties=options, metadata=same)
    cases["install option"] = (whole_file(switched, "switched-signed"), "carries the install options")
    for label, (forged, reason) in cases.items():
        capsys.readouterr()
        assert _forge(m, response, request, forged) == 1, label
        err = capsys.readouterr().err
        assert reason in err and "nothing was written" in err, (label, err)
        _nothing_applied(m)
    # 7. The genuine package, but the response claims no payload was signed.
    capsys.readouterr()
    genuine = tmp_path / "genuine.zip"
    with zipfile.ZipFile(response) as archive:
        genuine.write_bytes(archive.read("output/1"))
    assert _forge(m, response, request, genuine, algorithm="ota-whole-file-sha256") == 1
    assert (
        "was signed as ota-whole-file-sha256, not the ota-payload-sha256+whole-file-sha256" in capsys.readouterr().err
    )
    _nothing_applied(m)
    # And the genuine response still applies.
    assert _apply(m, response, request) == 0
