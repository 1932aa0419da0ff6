"""Target files through the offline custodian: the bundle kind "target-files".

The online machine sends a test-keys build (release_tools' synthetic target files, with a vbmeta.img signed by a
test key); the offline machine's `sealgate sign` shows the build and every role that will sign it and runs
sign-target-files there; `bundle apply` online writes the result only after checking it against the exported
public keys. The APKs are checked again with Debian's apksigner, each against the certificate of the role it should
carry. Refused: a build that is not a user build (before any key is used), a response signed by another keystore,
and a response whose package is genuinely signed by the right keystore but with one APK under the wrong role.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import require_tool
from release_tools import (
    EXPECTED_ROLES,
    SYSTEM_BUILD_PROP,
    WIFI_CERT,
    BuildInputs,
    make_inputs,
    role_signer,
    write_target_files,
)
from sealgate.avb.keys import public_key_digest
from sealgate.avb.vbmeta import read_vbmeta
from sealgate.cli.main import main
from sealgate.custody.keystore import Keystore
from sealgate.custody.roles import KeySpec
from sealgate.release.apkcerts import KeyMap
from sealgate.release.target_files import sign_target_files
from signing_tools import apksigner_verify, share_jvm_classes
from test_bundle import Machines, _apply, _carry, _nothing_applied, _nothing_signed, _point_at, _rewrite_response, _sign

PASSPHRASE = "target files bundle test passphrase"
ROLES = ["releasekey", "platform", "shared", "media", "networkstack", "ota", "avb"]


@pytest.fixture(scope="module")
def inputs(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildInputs:
    require_tool("apksigner")
    base = tmp_path_factory.getbasetemp()
    share_jvm_classes((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jvm", apksig_vectors)
    return make_inputs(apksig_vectors, tmp_path_factory.mktemp("release-inputs"))


@pytest.fixture(scope="module")
def keystores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("keys")
    overrides = {role: KeySpec.parse("rsa-2048") for role in ROLES}
    for name in ("keystore", "other-keystore"):
        store = Keystore.create(base / name, PASSPHRASE, roles=ROLES, key_overrides=overrides, distribution="Test OS")
        store.export_public(base / f"{name}-public")
    return base


@pytest.fixture
def machines(tmp_path: Path, keystores: Path, monkeypatch: pytest.MonkeyPatch) -> Machines:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
    online, offline = tmp_path / "online", tmp_path / "offline"
    online.mkdir()
    offline.mkdir()
    shutil.copytree(keystores / "keystore", offline / "keystore")
    shutil.copytree(keystores / "other-keystore", offline / "other-keystore")
    shutil.copytree(keystores / "keystore-public", online / "public")
    unused = online / "unused"
    return Machines(online, offline, offline / "keystore", offline / "other-keystore", online / "public", unused,
                    unused, unused, unused, unused)  # fmt: skip


def _target_files(inputs: BuildInputs, path: Path, system_prop: str = SYSTEM_BUILD_PROP) -> Path:
    """release_tools' build with a vbmeta.img (test key, rollback index 3) holding boot.img's hash."""
    from sealgate.avb.descriptors import HashDescriptor
    from sealgate.avb.vbmeta import build_vbmeta

    boot = b"ANDROID!" + bytes(4088)
    salt = bytes(range(32))
    descriptor = HashDescriptor(len(boot), "sha256", "boot", salt, hashlib.sha256(salt + boot).digest())
    vbmeta = build_vbmeta([descriptor], role_signer("test-avb"), rollback_index=3, padding_size=4096)
    return write_target_files(path, inputs, system_prop=system_prop, extra={"IMAGES/vbmeta.img": vbmeta})


def _create(m: Machines, target_files: Path, *extra: str) -> Path:
    request = m.online / "request.zip"
    args = ["bundle", "create", str(request), "--requester", "release-bot", "--target-files", str(target_files),
            "releasekey", "--key-map", f"{WIFI_CERT}=networkstack", "--rollback-index", "7", *extra]  # fmt: skip
    assert main(args) == 0
    return request


def _certificates(keystore: Path) -> dict[str, str]:
    store = Keystore.open(keystore)
    return {role: store.certificate(role).sha256 for role in ROLES}


def test_target_files_signed_offline_and_checked_online(
    machines: Machines, inputs: BuildInputs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    m = machines
    source = _target_files(inputs, m.online / "target_files.zip")
    request = _create(m, source)
    capsys.readouterr()
    assert _sign(m, _carry(request, m.offline)) == 0
    summary = capsys.readouterr().out
    certificates = _certificates(m.keystore)
    assert "target-files re-signed for release with 7 role(s)" in summary
    assert "build      google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/test-keys" in summary
    assert "1 with platform" in summary and "1 PRESIGNED, kept" in summary
    assert "otacerts   2 replaced by the ota certificate" in summary
    assert "vbmeta     re-signed with avb, rollback index 7" in summary
    for role in ROLES:
        assert certificates[role] in summary, role
    assert _apply(m, _carry(m.offline / "response.zip", m.online), request) == 0
    signed = m.online / "signed" / "target_files.zip"
    # Every APK carries the certificate of its role, as Debian's apksigner sees it.
    with zipfile.ZipFile(signed) as archive:
        for path, role in EXPECTED_ROLES.items():
            apk = tmp_path / Path(path).name
            apk.write_bytes(archive.read(path))
            verdict = apksigner_verify(apk)
            assert verdict.verified and verdict.signers == [certificates[role]], (path, verdict.output)
        assert "release-keys" in archive.read("SYSTEM/build.prop").decode()
        vbmeta = read_vbmeta(archive.read("IMAGES/vbmeta.img"))
    avb = Keystore.open(m.keystore).certificate("avb").public_key()
    assert vbmeta.rollback_index == 7 and vbmeta.public_key_digest == public_key_digest(avb)


def test_a_debug_build_is_refused_before_any_key_is_used(
    machines: Machines, inputs: BuildInputs, capsys: pytest.CaptureFixture[str]
) -> None:
    m = machines
    debug = _target_files(
        inputs, m.online / "debug.zip", SYSTEM_BUILD_PROP.replace("ro.debuggable=0", "ro.debuggable=1")
    )
    request = _create(m, debug)
    capsys.readouterr()
    assert _sign(m, _carry(request, m.offline)) == 1
    assert "not a user build" in capsys.readouterr().err
    _nothing_signed(m)


def test_wrong_keys_are_refused_on_apply(
    machines: Machines, inputs: BuildInputs, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    m = machines
    source = _target_files(inputs, m.online / "target_files.zip")
    request = _create(m, source)
    assert _sign(m, _carry(request, m.offline), keystore=m.other_keystore) == 0
    capsys.readouterr()
    assert _apply(m, _carry(m.offline / "response.zip", m.online), request) == 1
    assert "not the releasekey certificate" in capsys.readouterr().err
    _nothing_applied(m)
    # Signed by the right keystore, but Settings (platform) signed with the releasekey key: refused.
    (m.offline / "response.zip").unlink()
    assert _sign(m, m.offline / "request.zip", "response.zip") == 0
    store = Keystore.open(m.keystore)
    signers = {role: store.signer(role, PASSPHRASE) for role in ROLES}
    swapped = tmp_path / "swapped.zip"
    sign_target_files(source, swapped, KeyMap({**signers, "platform": signers["releasekey"]},
                                              {WIFI_CERT: "networkstack"}), rollback_index=7)  # fmt: skip
    forged = m.online / "forged.zip"
    _rewrite_response(_carry(m.offline / "response.zip", m.online), forged,
                      lambda r, outputs: _point_at(r, outputs, "1", swapped))  # fmt: skip
    capsys.readouterr()
    assert _apply(m, forged, request) == 1
    err = capsys.readouterr().err
    assert "SYSTEM/priv-app/Settings/Settings.apk is signed by" in err and "not the platform certificate" in err
    _nothing_applied(m)
