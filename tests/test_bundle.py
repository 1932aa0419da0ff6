"""Offline signing end to end: two directories stand for the online and the offline machine.

The online side makes a request bundle, the offline side signs it with the real keystore (appending to the signing
record), and the online side applies the response against the exported public keys. Each kind of attack on the
removable medium (a tampered request, a wrong key, a swapped artifact, a replayed response, record entries that do
not match) must be refused with a message that names it, and leave nothing written.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from conftest import require_tool, vectors_path
from sealgate.apk.verifier import verify_apk
from sealgate.cli.main import main
from sealgate.custody import bundle as bundle_module
from sealgate.custody import record as signing_record
from sealgate.custody.bundle import (
    ItemSpec,
    ResponseItem,
    SigningResponse,
    create_request,
    open_request,
    open_response,
    write_request,
    write_response,
)
from sealgate.custody.keystore import Keystore
from sealgate.custody.record import RecordEntry
from sealgate.custody.roles import KeySpec
from sealgate.custody.signing_session import PublicKeys, SigningSession, apply_response
from sealgate.errors import BundleError
from sealgate.signing import SigningAlgorithm
from sealgate.ziparchive import ZipArchive
from signing_tools import apksigner_verify

PASSPHRASE = "correct horse battery staple"
ROLES = {"releasekey": "rsa-2048", "ota": "rsa-2048", "repo": "ec-p256", "targets": "ed25519"}


@dataclass(frozen=True)
class Machines:
    online: Path
    offline: Path
    keystore: Path
    other_keystore: Path
    public: Path
    apk: Path
    other_apk: Path
    ota: Path
    index: Path
    targets: Path

    @property
    def record(self) -> Path:
        return self.offline / "record.jsonl"


def _keystore(path: Path) -> Keystore:
    overrides = {role: KeySpec.parse(spec) for role, spec in ROLES.items()}
    return Keystore.create(path, PASSPHRASE, roles=list(ROLES), key_overrides=overrides, distribution="Test OS")


@pytest.fixture(scope="module")
def keystores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("keys")
    keystore = _keystore(base / "keystore")
    _keystore(base / "other-keystore")
    keystore.export_public(base / "public")
    return base / "keystore", base / "other-keystore", base / "public"


def _two_machines(tmp_path: Path, keystores: tuple[Path, Path, Path]) -> tuple[Path, Path]:
    """The online and offline machines' folders: both keystores on the offline one, the public certificates online."""
    online, offline = tmp_path / "online", tmp_path / "offline"
    online.mkdir()
    offline.mkdir()
    keystore, other, public = keystores
    shutil.copytree(keystore, offline / "keystore")
    shutil.copytree(other, offline / "other-keystore")
    shutil.copytree(public, online / "public")
    return online, offline


@pytest.fixture
def machines(tmp_path: Path, keystores: tuple[Path, Path, Path]) -> Machines:
    vectors = vectors_path("apksig", "files")
    online, offline = _two_machines(tmp_path, keystores)
    apk = online / "App.apk"
    shutil.copyfile(vectors / "golden-aligned-in.apk", apk)
    other_apk = online / "Other.apk"
    shutil.copyfile(vectors / "pinsapp-unsigned.apk", other_apk)
    ota = online / "ota.zip"
    ota.write_bytes(hashlib.sha256(b"ota").digest() * 5000)
    index = online / "index-v2.json"
    index.write_text('{"repo": {"name": "test"}}\n')
    targets = online / "targets.json"
    targets.write_text('{"signed": {"_type": "targets"}}\n')
    return Machines(
        online,
        offline,
        offline / "keystore",
        offline / "other-keystore",
        online / "public",
        apk,
        other_apk,
        ota,
        index,
        targets,
    )


@pytest.fixture(autouse=True)
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)


def _create(m: Machines, name: str = "request.zip", *extra: str) -> Path:
    out = m.online / name
    digest = hashlib.sha256(m.index.read_bytes()).hexdigest()
    args = ["bundle", "create", str(out), "--requester", "release-bot@build"]
    args += ["--apk", str(m.apk), "releasekey", "--file", str(m.ota), "ota", "rsa-pss-sha256"]
    args += ["--file", str(m.targets), "targets", "ed25519"]
    args += ["--digest", "index-v2.json", digest, "repo", "ecdsa-sha256"]
    args += ["--meta", "version=2025.06", "--meta", "device=generic", *extra]
    assert main(args) == 0
    return out


def _carry(source: Path, machine: Path) -> Path:
    """Copy a bundle to the other machine (the removable medium)."""
    target = machine / source.name
    shutil.copyfile(source, target)
    return target


def _sign(m: Machines, request: Path, out: str = "response.zip", *extra: str, keystore: Path | None = None) -> int:
    args = ["sign", str(request), "--keystore", str(keystore or m.keystore), "--record", str(m.record)]
    return main([*args, "--out", str(m.offline / out), "--yes", "--allow-online", *extra])


def _apply(m: Machines, response: Path, request: Path, out: str = "signed") -> int:
    return main(
        [
            "bundle",
            "apply",
            str(response),
            "--request",
            str(request),
            "--public",
            str(m.public),
            "--out",
            str(m.online / out),
        ]
    )


def _round(m: Machines, name: str = "request.zip", response: str = "response.zip") -> tuple[Path, Path]:
    """Create on the online machine, sign offline; returns (request kept online, response carried online)."""
    request = _create(m, name)
    assert _sign(m, _carry(request, m.offline), response) == 0
    return request, _carry(m.offline / response, m.online)


def _certificate_sha256(m: Machines, role: str) -> str:
    return Keystore.open(m.keystore).certificate(role).sha256


def _public_key_pem(m: Machines, role: str, directory: Path) -> Path:
    out = directory / f"{role}.pub.pem"
    subprocess.run(
        ["openssl", "x509", "-in", str(m.public / f"{role}.x509.pem"), "-pubkey", "-noout", "-out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


# -- the round trip --------------------------------------------------------------------------------------------------


def test_round_trip_signs_every_kind(machines: Machines, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request = _create(m)
    created = capsys.readouterr().out
    with open_request(request) as bundle:
        request_id, digest = bundle.request.bundle_id, bundle.sha256
    assert digest in created
    offline_request = _carry(request, m.offline)
    assert _sign(m, offline_request, "response.zip", "--expect-digest", digest) == 0
    signed_out = capsys.readouterr().out
    # The summary shows what is signed, by which key, and what the APK itself declares.
    for text in (request_id, digest, "App.apk", "ota.zip", _certificate_sha256(m, "releasekey"), "version    2025.06"):
        assert text in signed_out
    assert "package android.appsecurity.cts.tinyapp, version 10" in signed_out
    head = signed_out.split("record head")[1].split()[0]
    response = _carry(m.offline / "response.zip", m.online)
    assert _apply(m, response, request) == 0
    signed = m.online / "signed"
    assert sorted(p.name for p in signed.iterdir()) == [
        "App.apk",
        "index-v2.json.sig",
        "ota.zip.sig",
        "targets.json.sig",
    ]

    # The signed APK verifies with our verifier and with apksigner, signed by the role's certificate.
    release = _certificate_sha256(m, "releasekey")
    report = verify_apk(signed / "App.apk")
    assert report.verified and [c.sha256 for c in report.signers] == [release]
    require_tool("apksigner")
    verdict = apksigner_verify(signed / "App.apk")
    assert verdict.verified, verdict.output
    assert verdict.signers == [release]

    # Detached signatures verify with openssl against the exported certificates.
    require_tool("openssl")
    keys = tmp_path / "keys"
    keys.mkdir()
    checks = [
        [
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-verify",
            str(_public_key_pem(m, "ota", keys)),
            "-signature",
            str(signed / "ota.zip.sig"),
            str(m.ota),
        ],
        [
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(_public_key_pem(m, "targets", keys)),
            "-rawin",
            "-in",
            str(m.targets),
            "-sigfile",
            str(signed / "targets.json.sig"),
        ],
        [
            "dgst",
            "-sha256",
            "-verify",
            str(_public_key_pem(m, "repo", keys)),
            "-signature",
            str(signed / "index-v2.json.sig"),
            str(m.index),
        ],
    ]
    for args in checks:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and "Verified" in result.stdout + result.stderr, result

    # The record holds one entry per signature, chained, and the printed head checks out.
    report_record = signing_record.verify(m.record, head=head)
    assert report_record.ok and report_record.entries == 4 and report_record.entries_after_head == 0
    entries = [json.loads(line) for line in m.record.read_text().splitlines()]
    assert [e["artifact"] for e in entries] == ["App.apk", "ota.zip", "targets.json", "index-v2.json"]
    assert entries[0]["output_sha256"] == hashlib.sha256((signed / "App.apk").read_bytes()).hexdigest()
    assert entries[0]["algorithm"] == "apk-v1+v2+v3"  # minSdkVersion 23 < 24: v1 too, as apksigner decides
    assert {e["bundle_id"] for e in entries} == {request_id}
    assert entries[3]["artifact_sha256"] == hashlib.sha256(m.index.read_bytes()).hexdigest()


def test_items_from_json_and_apk_options(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    items = m.online / "items.json"
    items.write_text(
        json.dumps(
            [
                {
                    "kind": "apk",
                    "role": "releasekey",
                    "path": "App.apk",
                    "name": "Settings.apk",
                    "apk_options": {"v1": True, "min_sdk": 21},
                    "metadata": {"description": "Settings app", "previous_release": "2025.05", "changes": "a\nb"},
                },
                {"kind": "file", "role": "ota", "path": "ota.zip", "algorithm": "rsa-pkcs1-sha512", "purpose": "ota"},
            ]
        )
    )
    request = m.online / "request.zip"
    assert main(["bundle", "create", str(request), "--from", str(items), "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in created["items"]] == ["Settings.apk", "ota.zip"]
    assert main(["bundle", "show", str(request)]) == 0
    assert "previous_release: 2025.05" in capsys.readouterr().out
    assert _sign(m, _carry(request, m.offline), "response.zip", "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["summary"]["items"][0]["apk"]["package"] == "android.appsecurity.cts.tinyapp"
    assert lines[1]["outcome"]["items"][0]["algorithm"] == "apk-v1+v2+v3"
    assert _apply(m, _carry(m.offline / "response.zip", m.online), request) == 0
    report = verify_apk(m.online / "signed" / "Settings.apk", min_sdk=21)
    assert report.verified and report.schemes == [1, 2, 3]


# -- refusals: nothing written ---------------------------------------------------------------------------------------


def _nothing_signed(m: Machines, response: str = "response.zip") -> None:
    assert not (m.offline / response).exists()
    assert not m.record.exists()
    assert not [p for p in m.offline.iterdir() if p.name.startswith(".")]


def _nothing_applied(m: Machines, out: str = "signed") -> None:
    assert not (m.online / out).exists()


def _flip_payload_byte(bundle: Path, entry_name: str) -> None:
    with ZipArchive.open(bundle) as archive:
        entry = archive.entry(entry_name)
        assert entry is not None
        offset = entry.data_offset + entry.compressed_size // 2
    data = bytearray(bundle.read_bytes())
    data[offset] ^= 0x01
    bundle.write_bytes(bytes(data))


def test_tampered_request_payload_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    offline_request = _carry(_create(m), m.offline)
    _flip_payload_byte(offline_request, "payload/1")
    capsys.readouterr()
    assert _sign(m, offline_request) == 1
    err = capsys.readouterr().err
    assert "payload of item 1 (App.apk)" in err and "tampered" in err
    _nothing_signed(m)
    assert main(["bundle", "show", str(offline_request)]) == 1


def test_request_manifest_edited_in_place_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    offline_request = _carry(_create(m), m.offline)
    data = offline_request.read_bytes()
    assert data.count(b"2025.06") >= 1
    offline_request.write_bytes(data.replace(b"2025.06", b"2025.07"))
    capsys.readouterr()
    assert _sign(m, offline_request) == 1
    assert "CRC" in capsys.readouterr().err
    _nothing_signed(m)


def _rewrite_request(source: Path, target: Path, mutate: Callable[[dict[str, object]], None]) -> None:
    """Rebuild a request with an edited manifest, as an attacker with the medium would (a consistent ZIP)."""
    work = target.parent / "rewrite"
    work.mkdir()
    with open_request(source) as bundle:
        payloads = {}
        for item in bundle.request.items:
            if item.payload_name is not None:
                payloads[item.id] = work / item.id
                with open(payloads[item.id], "wb") as handle:
                    bundle.copy_payload(item, handle)
        obj = bundle.request.to_json()
    mutate(obj)
    from sealgate.custody.bundle import SigningRequest

    edited = SigningRequest.from_json(obj)
    target.unlink(missing_ok=True)
    write_request(target, edited, payloads)
    shutil.rmtree(work)


def test_request_manifest_rebuilt_with_other_content_is_refused(
    machines: Machines, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    request = _create(m)
    with open_request(request) as bundle:
        digest = bundle.sha256

    def edit(obj: dict[str, object]) -> None:
        items = obj["items"]
        assert isinstance(items, list)
        items[3]["sha256"] = "ab" * 32  # sign another digest than the one asked for

    offline_request = m.offline / "request.zip"
    _rewrite_request(request, offline_request, edit)
    # The custodian who compares digests catches it before signing...
    capsys.readouterr()
    assert _sign(m, offline_request, "response.zip", "--expect-digest", digest) == 1
    assert "altered or is not the one the requester made" in capsys.readouterr().err
    _nothing_signed(m)
    # ...and if they did not, apply refuses the response made for the altered request.
    assert _sign(m, offline_request) == 0
    capsys.readouterr()
    assert _apply(m, _carry(m.offline / "response.zip", m.online), request) == 1
    assert "the request was altered on its way to the custodian" in capsys.readouterr().err
    _nothing_applied(m)


def _rewrite_response(
    source: Path,
    target: Path,
    mutate: Callable[[SigningResponse, dict[str, Path]], SigningResponse],
) -> None:
    work = target.parent / "rewrite-response"
    work.mkdir()
    with open_response(source) as bundle:
        outputs = {}
        for item in bundle.response.items:
            outputs[item.id] = work / item.id
            with open(outputs[item.id], "wb") as handle:
                bundle.copy_output(item, handle)
        response = bundle.response
    edited = mutate(response, outputs)
    target.unlink(missing_ok=True)
    write_response(target, edited, outputs)
    shutil.rmtree(work)


def _rechain(entries: tuple[RecordEntry, ...], changes: dict[int, dict[str, str]]) -> tuple[RecordEntry, ...]:
    """Entries with fields changed and every hash recomputed, as anyone without a secret can do."""
    out: list[RecordEntry] = []
    previous = entries[0].prev
    for index, entry in enumerate(entries):
        body = {**entry.body(), **changes.get(index, {}), "prev": previous}
        new = RecordEntry.create(**body)
        out.append(new)
        previous = new.hash
    return tuple(out)


def _point_at(response: SigningResponse, outputs: dict[str, Path], item_id: str, new_output: Path) -> SigningResponse:
    """Swap one output file and make the manifest and record entries agree with the swap."""
    data = new_output.read_bytes()
    outputs[item_id].write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    items = tuple(
        replace(item, output_sha256=sha, output_size=len(data)) if item.id == item_id else item
        for item in response.items
    )
    index = [item.id for item in response.items].index(item_id)
    return replace(response, items=items, record=_rechain(response.record, {index: {"output_sha256": sha}}))


def test_response_signed_with_a_wrong_key_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request = _create(m)
    assert _sign(m, _carry(request, m.offline), keystore=m.other_keystore) == 0
    response = _carry(m.offline / "response.zip", m.online)
    capsys.readouterr()
    assert _apply(m, response, request) == 1
    err = capsys.readouterr().err
    assert "not the releasekey certificate" in err and "nothing was written" in err
    _nothing_applied(m)

    # The same response, rewritten to claim the right certificates everywhere: the signatures give it away.
    right = {role: _certificate_sha256(m, role) for role in ROLES}

    def claim(response: SigningResponse, outputs: dict[str, Path]) -> SigningResponse:
        items = tuple(replace(item, certificate_sha256=right[item.role]) for item in response.items)
        changes = {i: {"certificate_sha256": right[item.role]} for i, item in enumerate(response.items)}
        return replace(response, items=items, record=_rechain(response.record, changes))

    forged = m.online / "forged.zip"
    _rewrite_response(response, forged, claim)
    assert _apply(m, forged, request) == 1
    err = capsys.readouterr().err
    assert "the signed APK of item 1 (App.apk) is signed by" in err and "not the releasekey certificate" in err
    _nothing_applied(m)

    def claim_without_apk(response: SigningResponse, outputs: dict[str, Path]) -> SigningResponse:
        # Put back the genuine APK so that the first failure is a detached signature made by the wrong key.
        genuine = m.online / "genuine"
        request_copy = _carry(request, m.offline)
        (m.offline / "genuine.zip").unlink(missing_ok=True)
        assert _sign(m, request_copy, "genuine.zip") == 0
        with open_response(m.offline / "genuine.zip") as bundle, open(genuine, "wb") as handle:
            bundle.copy_output(bundle.response.items[0], handle)
        return _point_at(claim(response, outputs), outputs, "1", genuine)

    forged2 = m.online / "forged2.zip"
    _rewrite_response(response, forged2, claim_without_apk)
    capsys.readouterr()
    assert _apply(m, forged2, request) == 1
    assert "does not verify with the ota public key" in capsys.readouterr().err
    _nothing_applied(m)


def test_swapped_artifact_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request, response = _round(m)
    # Another APK, genuinely signed by the same releasekey in another request.
    other_request = m.online / "other-request.zip"
    create_request(other_request, [ItemSpec("apk", "releasekey", path=m.other_apk)], requester="someone")
    assert _sign(m, _carry(other_request, m.offline), "other-response.zip") == 0
    other_apk = m.online / "other-signed.apk"
    with open_response(m.offline / "other-response.zip") as bundle, open(other_apk, "wb") as handle:
        bundle.copy_output(bundle.response.items[0], handle)

    # Swapped inside the ZIP only: the response's own manifest no longer matches.
    crude = m.online / "crude.zip"
    shutil.copyfile(response, crude)
    _flip_payload_byte(crude, "output/2")
    capsys.readouterr()
    assert _apply(m, crude, request) == 1
    assert "the output of item 2 in" in capsys.readouterr().err
    _nothing_applied(m)

    # Swapped with the manifest and record entries made to agree: the APK is not the one sent for signing.
    swapped = m.online / "swapped.zip"
    _rewrite_response(response, swapped, lambda r, outputs: _point_at(r, outputs, "1", other_apk))
    assert _apply(m, swapped, request) == 1
    err = capsys.readouterr().err
    assert "is not the APK that was sent for signing" in err and "an artifact was swapped" in err
    _nothing_applied(m)

    # Two detached signatures by the same kind of key exchanged: each is over other data.
    exchanged = m.online / "exchanged.zip"

    def exchange(r: SigningResponse, outputs: dict[str, Path]) -> SigningResponse:
        fake = m.online / "fake-sig"
        fake.write_bytes(bytes(256))
        return _point_at(r, outputs, "2", fake)

    _rewrite_response(response, exchanged, exchange)
    assert _apply(m, exchanged, request) == 1
    assert "item 2 (ota.zip) does not verify with the ota public key" in capsys.readouterr().err
    _nothing_applied(m)
    # The untouched response still applies.
    assert _apply(m, response, request) == 0


def test_replayed_response_is_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    _, old_response = _round(m, "old-request.zip", "old-response.zip")
    new_request, new_response = _round(m, "new-request.zip", "new-response.zip")
    capsys.readouterr()
    # The old response, offered for the new request with the same content: refused by id.
    assert _apply(m, old_response, new_request) == 1
    err = capsys.readouterr().err
    assert "answers request" in err and "replayed" in err
    _nothing_applied(m)
    # A response rewritten to name the new request's id: its digest still gives it away.
    with open_request(new_request) as bundle:
        new_id = bundle.request.bundle_id
    relabelled = m.online / "relabelled.zip"
    _rewrite_response(old_response, relabelled, lambda r, outputs: replace(r, request_id=new_id))
    assert _apply(m, relabelled, new_request) == 1
    assert "whose digest is" in capsys.readouterr().err
    _nothing_applied(m)
    assert _apply(m, new_response, new_request) == 0


def test_record_entries_that_do_not_match_are_refused(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request, response = _round(m)
    cases: dict[str, tuple[Callable[[SigningResponse, dict[str, Path]], SigningResponse], str]] = {
        "dropped": (lambda r, o: replace(r, record=r.record[:-1]), "3 signing-record entries for 4 signatures"),
        "edited": (
            lambda r, o: replace(r, record=(replace(r.record[0], artifact="Evil.apk"), *r.record[1:])),
            "were tampered with",
        ),
        "rechained": (
            lambda r, o: replace(r, record=_rechain(r.record, {1: {"artifact_sha256": "cd" * 32}})),
            "does not describe item 2 (ota.zip): its artifact_sha256 differ",
        ),
        "reordered": (
            lambda r, o: replace(r, record=_rechain((r.record[1], r.record[0], *r.record[2:]), {})),
            "does not follow",
        ),
        "other bundle": (
            lambda r, o: replace(r, record=_rechain(r.record, {0: {"bundle_id": "ef" * 16}})),
            "its bundle_id differ",
        ),
    }
    for name, (mutate, message) in cases.items():
        forged = m.online / f"forged-{name.replace(' ', '-')}.zip"
        _rewrite_response(response, forged, mutate)
        capsys.readouterr()
        assert _apply(m, forged, request) == 1, name
        assert message in capsys.readouterr().err, name
        _nothing_applied(m)


def test_apply_never_overwrites(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request, response = _round(m)
    signed = m.online / "signed"
    signed.mkdir()
    (signed / "ota.zip.sig").write_bytes(b"earlier")
    capsys.readouterr()
    assert _apply(m, response, request) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in signed.iterdir()) == ["ota.zip.sig"]
    assert (signed / "ota.zip.sig").read_bytes() == b"earlier"


# -- the custodian's errors through the CLI --------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealgate.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        input=stdin,
        env={**os.environ, **(env or {})},
    )


def test_wrong_passphrase_is_a_clear_error(machines: Machines) -> None:
    m = machines
    offline_request = _carry(_create(m), m.offline)
    args = ["sign", str(offline_request), "--keystore", str(m.keystore), "--record", str(m.record)]
    result = _cli(
        *args,
        "--out",
        str(m.offline / "response.zip"),
        "--yes",
        "--allow-online",
        env={"SEALGATE_PASSPHRASE": "not the passphrase"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "passphrase" in result.stderr.lower()
    _nothing_signed(m)


def test_passphrase_from_a_file_descriptor(machines: Machines, monkeypatch: pytest.MonkeyPatch) -> None:
    m = machines
    monkeypatch.delenv("SEALGATE_PASSPHRASE")
    offline_request = _carry(_create(m), m.offline)
    read_end, write_end = os.pipe()
    os.write(write_end, PASSPHRASE.encode() + b"\n")
    os.close(write_end)
    try:
        assert _sign(m, offline_request, "response.zip", "--passphrase-fd", str(read_end)) == 0
    finally:
        os.close(read_end)
    assert signing_record.verify(m.record).entries == 4


def test_locked_keystore_is_a_clear_error(machines: Machines) -> None:
    m = machines
    offline_request = _carry(_create(m), m.offline)
    fd = os.open(m.keystore / "keystore.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        args = ["sign", str(offline_request), "--keystore", str(m.keystore), "--record", str(m.record)]
        result = _cli(*args, "--out", str(m.offline / "response.zip"), "--yes", "--allow-online")
    finally:
        os.close(fd)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "locked by another process" in result.stderr
    _nothing_signed(m)


def test_confirmation_is_needed_without_yes(machines: Machines) -> None:
    m = machines
    offline_request = _carry(_create(m), m.offline)
    args = ["sign", str(offline_request), "--keystore", str(m.keystore), "--record", str(m.record)]
    result = _cli(*args, "--out", str(m.offline / "response.zip"), "--allow-online", stdin="yes\n")
    assert result.returncode == 2
    assert "pass --yes" in result.stderr and "Traceback" not in result.stderr
    assert "4 item(s) will be signed" in result.stdout  # the summary was shown
    _nothing_signed(m)


def test_items_the_keys_cannot_sign_are_refused_before_any_signature(
    machines: Machines, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    wrong_algorithm = m.online / "wrong-algorithm.zip"
    create_request(
        wrong_algorithm,
        [
            ItemSpec("apk", "releasekey", path=m.apk),
            ItemSpec("file", "ota", path=m.ota, algorithm=SigningAlgorithm.ECDSA_SHA256),
        ],
        requester="x",
    )
    capsys.readouterr()
    assert _sign(m, _carry(wrong_algorithm, m.offline)) == 1
    assert "role ota holds a RSA key" in capsys.readouterr().err
    _nothing_signed(m)
    bad_options = m.online / "bad-options.zip"
    create_request(
        bad_options,
        [ItemSpec("apk", "releasekey", path=m.apk, apk_options={"v1": False, "min_sdk": 21})],
        requester="x",
    )
    assert _sign(m, _carry(bad_options, m.offline)) == 1
    assert "cannot be signed with its APK options" in capsys.readouterr().err
    _nothing_signed(m)


# -- bundle strictness -----------------------------------------------------------------------------------------------


def test_create_refuses_bad_items(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    out = m.online / "request.zip"
    cases = [
        (["--digest", "x", "00" * 32, "repo", "ed25519"], "can only be signed with a SHA-256 algorithm"),
        (["--file", str(m.ota), "ota", "rsa-pss-sha999"], "must be one of"),
        (["--apk", str(m.ota), "releasekey"], "is not an APK"),
        (["--apk", str(m.apk), "releasekey", "--apk-option", "v4=on"], "unknown APK signing option 'v4'"),
        (["--apk", str(m.apk), "releasekey", "--apk", str(m.apk), "releasekey"], "would both be written"),
        (["--apk", str(m.apk), "releasekey", "--meta", "colour=blue"], "unknown fields: colour"),
    ]
    for args, message in cases:
        assert main(["bundle", "create", str(out), *args]) in (1, 2), args
        assert message in capsys.readouterr().err, args
        assert not out.exists()
    assert main(["bundle", "create", str(out)]) == 2
    assert "nothing to sign" in capsys.readouterr().err


def _rezip(source: Path, target: Path, edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> None:
    import zipfile

    with zipfile.ZipFile(source) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in edit(members):
            archive.writestr(name, data)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ms: [*ms, ("payload/9", b"extra")], "unexpected entries payload/9"),
        (lambda ms: [ms[0], *ms[2:]], "missing payload/1"),
        (lambda ms: [ms[1], ms[0], *ms[2:]], "first entry is not manifest.json"),
        (
            lambda ms: [("manifest.json", ms[0][1].replace(b'"requester"', b'"extra": 1, "requester"')), *ms[1:]],
            "unknown fields: extra",
        ),
        (
            lambda ms: [("manifest.json", ms[0][1].replace(b'"requester"', b'"bundle_id": "0", "requester"')), *ms[1:]],
            "twice",
        ),
        (
            lambda ms: [("manifest.json", ms[0][1].replace(b'"name": "ota.zip"', b'"name": "../ota.zip"')), *ms[1:]],
            "cannot be used as a file name",
        ),
    ],
)
def test_request_bundles_are_parsed_strictly(
    machines: Machines,
    edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]],
    message: str,
) -> None:
    m = machines
    request = _create(m)
    edited = m.offline / "edited.zip"
    _rezip(request, edited, edit)
    with pytest.raises(BundleError, match=message.replace("(", r"\(")):
        open_request(edited)


def test_sign_and_create_never_overwrite(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    m = machines
    request = _create(m)
    capsys.readouterr()
    assert _create_again(m, request) == 1
    assert "already exists" in capsys.readouterr().err
    (m.offline / "response.zip").write_bytes(b"keep me")
    assert _sign(m, _carry(request, m.offline)) == 2
    assert (m.offline / "response.zip").read_bytes() == b"keep me"
    assert not m.record.exists()


def _create_again(m: Machines, out: Path) -> int:
    return main(["bundle", "create", str(out), "--apk", str(m.apk), "releasekey"])


def test_session_service_reports_without_signing(machines: Machines) -> None:
    """The service layer: prepare shows the summary and signs nothing until `sign` is called."""
    m = machines
    request = _carry(_create(m), m.offline)
    with SigningSession.prepare(request, Keystore.open(m.keystore), m.record, allow_online=True) as session:
        summary = session.summary.to_json()
        assert [item["role"] for item in summary["items"]] == ["releasekey", "ota", "targets", "repo"]
        assert summary["items"][0]["certificate_sha256"] == _certificate_sha256(m, "releasekey")
    _nothing_signed(m)
    public = PublicKeys.load(m.public)
    assert set(public.current) == set(ROLES)
    with pytest.raises(BundleError, match=r"no keys\.json"):
        PublicKeys.load(m.online)
    # A certificate swapped in the public export is caught by the fingerprints of keys.json.
    altered = m.online / "altered-public"
    shutil.copytree(m.public, altered)
    shutil.copyfile(altered / "ota.x509.pem", altered / "releasekey.x509.pem")
    with pytest.raises(BundleError, match="public export was altered"):
        PublicKeys.load(altered)
    with pytest.raises(BundleError, match="answers request"):
        other = _create(m, "other.zip")
        apply_response(_round(m, "third.zip", "third-response.zip")[1], other, public, m.online / "signed")
    _nothing_applied(m)


def test_response_item_objects_round_trip() -> None:
    item = ResponseItem("1", "file", "ota", "a" * 64, "rsa-pss-sha256", "b" * 64, 256)
    assert ResponseItem.from_json(item.to_json(), "item") == item


def test_a_full_disk_leaves_no_half_written_response(
    machines: Machines, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    offline_request = _carry(_create(m), m.offline)
    real_add = bundle_module._add_member
    calls = []

    def fill_up(archive: object, member: object) -> None:
        calls.append(member)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(archive, member)  # type: ignore[arg-type]

    monkeypatch.setattr(bundle_module, "_add_member", fill_up)
    capsys.readouterr()
    assert _sign(m, offline_request) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "no response was written" in err
    assert "4 signature(s) made before this are in the signing record" in err
    assert not (m.offline / "response.zip").exists()
    assert not [p for p in m.offline.iterdir() if p.name.startswith(".")]
    # The signatures that were made are recorded, and the record is intact.
    assert signing_record.verify(m.record).entries == 4
