"""Signing a target-files package for release: every APK re-signed with the role its apkcerts certificate maps to
(checked with Debian's apksigner), PRESIGNED packages untouched, props rewritten as RewriteProps does, otacerts
holding the OTA certificate (loaded by our recovery-rules verifier), and the user-build gate."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from conftest import require_tool
from release_tools import (
    APKS,
    DEV_KEYS,
    EXPECTED_ROLES,
    SYSTEM_BUILD_PROP,
    WIFI_CERT,
    BuildInputs,
    apkcerts_text,
    make_inputs,
    role_signer,
    write_target_files,
)
from sealgate.errors import ReleaseError, UnreleasableBuildError
from sealgate.ota.signer import sign_package
from sealgate.ota.whole_file import load_trusted_keys, verify_package
from sealgate.release.apkcerts import KeyMap, parse_apkcerts
from sealgate.release.build_props import edit_tags, rewrite_props
from sealgate.release.target_files import sign_target_files
from signing_tools import apksigner_verify, share_jvm_classes


@pytest.fixture(scope="module")
def inputs(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildInputs:
    require_tool("apksigner")
    base = tmp_path_factory.getbasetemp()
    share_jvm_classes((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jvm", apksig_vectors)
    return make_inputs(apksig_vectors, tmp_path_factory.mktemp("release-inputs"))


def _keys(inputs: BuildInputs) -> KeyMap:
    return KeyMap(dict(inputs.signers), {WIFI_CERT: "networkstack"})


@pytest.fixture(scope="module")
def signed(inputs: BuildInputs, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    work = tmp_path_factory.mktemp("signed")
    source = write_target_files(work / "target_files.zip", inputs)
    out = work / "signed-target_files.zip"
    report = sign_target_files(source, out, _keys(inputs))
    return source, out, report


def test_every_apk_verifies_with_apksigner_as_its_role(signed: tuple[Path, Path, object], inputs: BuildInputs,
                                                      tmp_path: Path) -> None:  # fmt: skip
    _, out, _ = signed
    with zipfile.ZipFile(out) as archive:
        for path, role in EXPECTED_ROLES.items():
            apk = tmp_path / Path(path).name
            apk.write_bytes(archive.read(path))
            verdict = apksigner_verify(apk)
            assert verdict.verified, (path, verdict.output)
            assert verdict.signers == [inputs.signers[role].certificate.sha256], path


def test_presigned_and_untouched_entries_are_byte_identical(signed: tuple[Path, Path, object]) -> None:
    source, out, report = signed
    with zipfile.ZipFile(source) as before, zipfile.ZipFile(out) as after:
        assert after.testzip() is None  # Python's reader, not ours, checks every CRC
        for name in ("SYSTEM/app/Prebuilt/Prebuilt.apk", "IMAGES/system.img", "SYSTEM/bin/sh", "RADIO/radio.img"):
            assert after.read(name) == before.read(name), name
        assert {info.date_time for info in after.infolist()} == {(2009, 1, 1, 0, 0, 0)}
        assert [info.filename for info in after.infolist()] == [
            name for name in before.namelist() if name != "SYSTEM/etc/selinux/plat_mac_permissions.xml"
        ] + ["SYSTEM/etc/selinux/plat_mac_permissions.xml"]
    actions = {package.path: (package.action, package.role) for package in report.packages}  # type: ignore[attr-defined]
    assert actions["SYSTEM/app/Prebuilt/Prebuilt.apk"] == ("presigned", None)
    assert {path: role for path, (action, role) in actions.items() if action == "signed"} == EXPECTED_ROLES
    assert "IMAGES/system.img" in report.images_to_rebuild  # type: ignore[attr-defined]


def test_build_props_are_rewritten_as_releasetools_does(signed: tuple[Path, Path, object]) -> None:
    _, out, report = signed
    with zipfile.ZipFile(out) as archive:
        system = archive.read("SYSTEM/build.prop").decode()
        vendor = archive.read("VENDOR/build.prop").decode()
        product = archive.read("PRODUCT/etc/build.prop").decode()
        misc_info = archive.read("META/misc_info.txt").decode()
    assert system == (
        "# begin build properties\n"
        "ro.build.id=AP2A.240805.005\n"
        "ro.build.display.id=AP2A.240805.005\n"
        "ro.build.version.incremental=eng.build.20240801\n"
        "ro.build.version.sdk=34\n"
        "ro.build.type=user\n"
        "ro.build.tags=release-keys\n"
        "ro.build.description=oriole-user 14 AP2A.240805.005 eng.build.20240801 release-keys\n"
        "ro.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/release-keys\n"
        "ro.system.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/release-keys\n"
        "ro.system.build.thumbprint=14/AP2A.240805.005/eng.build.20240801:user/release-keys\n"
        "ro.system.build.tags=release-keys\n"
        "ro.product.device=oriole\n"
        "ro.debuggable=0\n"
        "# end build properties\n"
        "\n"  # RewriteProps joins the split lines, the last one empty, and adds "\n"
    )
    assert "ro.vendor.build.tags=release-keys\n" in vendor
    assert (
        "ro.bootimage.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/release-keys"
        in vendor
    )
    assert product.startswith("ro.product.build.fingerprint=google/oriole/oriole:14/AP2A/1:user/release-keys\n")
    assert "com.android.build.system.fingerprint=google/oriole/oriole:14/AP2A/1:user/release-keys" in misc_info
    assert not misc_info.endswith("\n") and misc_info.splitlines() == sorted(misc_info.splitlines())
    assert set(report.props_rewritten) == {"SYSTEM/build.prop", "VENDOR/build.prop", "PRODUCT/etc/build.prop"}  # type: ignore[attr-defined]


def test_rewrite_props_rules() -> None:
    assert edit_tags("test-keys,dev-keys,foo") == "foo,release-keys"
    text = "  ro.build.tags=test-keys  \r\nro.foo.build.fingerprint=a/b:user/dev-keys\n#ro.build.tags=test-keys\nplain"
    assert rewrite_props(text) == (
        "ro.build.tags=release-keys\nro.foo.build.fingerprint=a/b:user/release-keys\n#ro.build.tags=test-keys\nplain\n"
    )
    with pytest.raises(ReleaseError, match="description"):
        rewrite_props("ro.build.description=oriole-user 14 AP2A\n")


def test_otacerts_hold_the_ota_certificate_and_recovery_loads_it(
    signed: tuple[Path, Path, object], inputs: BuildInputs, tmp_path: Path
) -> None:
    _, out, report = signed
    ota = inputs.signers["ota"].certificate
    with zipfile.ZipFile(out) as archive:
        for name in ("SYSTEM/etc/security/otacerts.zip", "RECOVERY/RAMDISK/system/etc/security/otacerts.zip"):
            copy = tmp_path / "otacerts.zip"
            copy.write_bytes(archive.read(name))
            keys = load_trusted_keys([copy])
            assert [key.certificate.der for key in keys] == [ota.der], name
        assert archive.read("META/otakeys.txt") == b"ota.x509.pem\n"
    assert report.ota_certificate_sha256 == ota.sha256  # type: ignore[attr-defined]
    # A package signed with the OTA key verifies against the new otacerts; one signed with another key does not.
    package = tmp_path / "ota.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("payload.bin", b"CrAU" + bytes(64))
    sign_package(package, tmp_path / "signed-ota.zip", inputs.signers["ota"])
    sign_package(package, tmp_path / "other-ota.zip", inputs.signers["releasekey"])
    assert verify_package(tmp_path / "signed-ota.zip", keys).verified
    assert not verify_package(tmp_path / "other-ota.zip", keys).verified


def test_update_engines_payload_key_becomes_the_ota_key(inputs: BuildInputs, tmp_path: Path) -> None:
    """ReplaceOtaKeys: etc/update_engine/update-payload-key.pub.pem is the OTA certificate's public key afterwards
    (as `openssl x509 -pubkey` prints it), and `bundle apply` refuses a response that left the test key there."""
    import subprocess

    from asn1crypto import pem as asn1_pem
    from cryptography.hazmat.primitives import serialization

    from sealgate.release.target_files_bundle import TargetFilesHandler

    name = "SYSTEM/etc/update_engine/update-payload-key.pub.pem"
    test_key = inputs.signers["testkey"].certificate if "testkey" in inputs.signers else None
    old = (
        (test_key or inputs.signers["releasekey"].certificate)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    source = write_target_files(tmp_path / "in.zip", inputs, extra={name: old})
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, _keys(inputs))
    assert name in report.otacerts  # type: ignore[attr-defined]
    ota_pem = tmp_path / "ota.x509.pem"
    ota_pem.write_bytes(bytes(asn1_pem.armor("CERTIFICATE", inputs.signers["ota"].certificate.der)))
    expected = subprocess.run(
        [require_tool("openssl"), "x509", "-pubkey", "-noout", "-in", str(ota_pem)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    with zipfile.ZipFile(out) as archive:
        assert archive.read(name) == expected
    options = {"key_map": {WIFI_CERT: "networkstack"}}
    TargetFilesHandler().check(out, source, lambda role: inputs.signers[role].certificate, options)
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(out) as signed_zip, zipfile.ZipFile(forged, "w") as copy:
        for info in signed_zip.infolist():
            copy.writestr(info, old if info.filename == name else signed_zip.read(info))
    with pytest.raises(ReleaseError, match="not the ota certificate's public key"):
        TargetFilesHandler().check(forged, source, lambda role: inputs.signers[role].certificate, options)


def test_mac_permissions_name_the_release_certificates(signed: tuple[Path, Path, object], inputs: BuildInputs) -> None:
    _, out, _ = signed
    with zipfile.ZipFile(out) as archive:
        policy = archive.read("SYSTEM/etc/selinux/plat_mac_permissions.xml").decode()
    assert inputs.signers["platform"].certificate.der.hex() in policy
    assert inputs.signers["media"].certificate.der.hex() in policy
    assert inputs.test_keys["platform"].cert_der.hex() not in policy


def test_the_output_is_deterministic(signed: tuple[Path, Path, object], inputs: BuildInputs, tmp_path: Path) -> None:
    source, out, _ = signed
    again = tmp_path / "again.zip"
    sign_target_files(source, again, _keys(inputs))
    assert again.read_bytes() == out.read_bytes()


def test_compressed_apks_are_signed_inside_their_gzip(inputs: BuildInputs, tmp_path: Path) -> None:
    apk = inputs.apks["PRODUCT/app/Browser/Browser.apk"].read_bytes()
    apkcerts = apkcerts_text(APKS) + (
        f'name="Gz.apk" certificate="{DEV_KEYS}/testkey.x509.pem" private_key="{DEV_KEYS}/testkey.pk8"'
        ' compressed="gz"\n'
    )
    extra = {"SYSTEM/app/Gz/Gz.apk.gz": gzip.compress(apk, mtime=0)}
    source = write_target_files(tmp_path / "tf.zip", inputs, extra=extra, apkcerts=apkcerts)
    out = tmp_path / "out.zip"
    sign_target_files(source, out, _keys(inputs))
    with zipfile.ZipFile(out) as archive:
        (tmp_path / "gz.apk").write_bytes(gzip.decompress(archive.read("SYSTEM/app/Gz/Gz.apk.gz")))
    verdict = apksigner_verify(tmp_path / "gz.apk")
    assert verdict.verified and verdict.signers == [inputs.signers["releasekey"].certificate.sha256]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"prop": ("ro.build.type=user", "ro.build.type=userdebug")}, "BUILD_TYPE_USERDEBUG"),
        ({"prop": ("ro.build.type=user", "ro.build.type=eng")}, "BUILD_TYPE_ENG"),
        ({"prop": ("ro.debuggable=0", "ro.debuggable=1")}, "DEBUGGABLE"),
        ({"prop": ("ro.debuggable=0", "ro.debuggable=0\nro.secure=0")}, "NOT_SECURE"),
        ({"entry": "SYSTEM/xbin/su"}, "SU_BINARY"),
        ({"entry": "SYSTEM/bin/su"}, "SU_BINARY"),
        ({"entry": "VENDOR/bin/su"}, "SU_BINARY"),
    ],
)
def test_the_user_build_gate_refuses_and_writes_nothing(
    inputs: BuildInputs, tmp_path: Path, change: dict[str, object], code: str
) -> None:
    prop = SYSTEM_BUILD_PROP
    extra: dict[str, bytes] = {}
    if "prop" in change:
        old, new = change["prop"]  # type: ignore[misc]
        prop = prop.replace(old, new)
    else:
        extra[str(change["entry"])] = b"\x7fELF su"
    source = write_target_files(tmp_path / "tf.zip", inputs, system_prop=prop, extra=extra)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UnreleasableBuildError) as raised:
        sign_target_files(source, out_dir / "signed.zip", _keys(inputs))
    codes = [reason_code for reason_code, _ in raised.value.reasons]
    assert codes == [code]
    assert "not a user build" in str(raised.value)
    assert list(out_dir.iterdir()) == []


def test_refusals_before_writing(inputs: BuildInputs, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # An APK apkcerts.txt does not list (sign_target_files_apks refuses it too).
    source = write_target_files(tmp_path / "a.zip", inputs, extra={"SYSTEM/app/New/New.apk": b"PK"})
    with pytest.raises(
        ReleaseError, match=re.escape("no key is listed in META/apkcerts.txt for SYSTEM/app/New/New.apk")
    ):
        sign_target_files(source, out_dir / "x.zip", _keys(inputs))
    # A certificate name no default maps and no --key-map names.
    source = write_target_files(tmp_path / "b.zip", inputs)
    with pytest.raises(ReleaseError, match=f"--key-map {WIFI_CERT}=ROLE"):
        sign_target_files(source, out_dir / "x.zip", KeyMap(dict(inputs.signers)))
    # A role without a signer.
    signers = {role: signer for role, signer in inputs.signers.items() if role != "shared"}
    with pytest.raises(ReleaseError, match="no signer was given for the role shared"):
        sign_target_files(source, out_dir / "x.zip", KeyMap(signers, {WIFI_CERT: "networkstack"}))
    # An APEX that is not PRESIGNED; a PRESIGNED one is carried byte for byte.
    apex = {"SYSTEM/apex/com.android.tzdata.apex": b"an apex"}
    source = write_target_files(tmp_path / "c.zip", inputs, extra=apex)
    with pytest.raises(ReleaseError, match=re.escape("not PRESIGNED: SYSTEM/apex/com.android.tzdata.apex")):
        sign_target_files(source, out_dir / "x.zip", _keys(inputs))
    assert list(out_dir.iterdir()) == []
    keys_line = (
        'name="com.android.tzdata.apex" public_key="PRESIGNED" private_key="PRESIGNED" '
        'container_certificate="PRESIGNED" container_private_key="PRESIGNED" partition="system"\n'
    )
    source = write_target_files(tmp_path / "d.zip", inputs, extra={**apex, "META/apexkeys.txt": keys_line.encode()})
    report = sign_target_files(source, out_dir / "d.zip", _keys(inputs))
    with zipfile.ZipFile(out_dir / "d.zip") as archive:
        assert archive.read("SYSTEM/apex/com.android.tzdata.apex") == b"an apex"
    assert ("SYSTEM/apex/com.android.tzdata.apex", "apex-presigned") in [(p.path, p.action) for p in report.packages]


def test_apkcerts_parsing() -> None:
    certs = parse_apkcerts(
        f'name="A.apk" certificate="{DEV_KEYS}/platform.x509.pem" private_key="{DEV_KEYS}/platform.pk8"\n'
        'name="B.apk" certificate="PRESIGNED" private_key="" compressed="gz" partition="system"\n'
        'name="C.apk" certificate="EXTERNAL" private_key=""\n'
    )
    assert certs["A.apk"].certificate == f"{DEV_KEYS}/platform" and not certs["A.apk"].presigned
    assert certs["B.apk"].presigned and certs["B.apk"].compressed == "gz" and certs["C.apk"].presigned
    with pytest.raises(
        ReleaseError, match=re.escape(":1: the certificate and private key of A.apk do not name one key")
    ):
        parse_apkcerts(f'name="A.apk" certificate="{DEV_KEYS}/platform.x509.pem" private_key="{DEV_KEYS}/media.pk8"')
    keys = KeyMap({}, {"vendor/certs/x": "media"})
    assert keys.role_of(f"{DEV_KEYS}/testkey") == "releasekey"
    assert keys.role_of("build/target/product/security/devkey") == "releasekey"
    assert keys.role_of("vendor/certs/x") == "media" and keys.role_of("vendor/certs/y") is None


def test_cli_signs_with_a_keystore_and_refuses_a_debug_build(
    inputs: BuildInputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sealgate.apk.verifier import verify_apk
    from sealgate.cli.main import main
    from sealgate.custody.keystore import Keystore
    from sealgate.custody.roles import KeySpec

    passphrase = "release test passphrase, never real"
    roles = ["releasekey", "platform", "ota"]  # few roles: each unlock costs a deliberate quarter second of scrypt
    store = Keystore.create(tmp_path / "ks", passphrase, roles=roles,
                            key_overrides={role: KeySpec.parse("ec-p256") for role in roles})  # fmt: skip
    monkeypatch.setenv("SEALGATE_PASSPHRASE", passphrase)
    source = write_target_files(tmp_path / "tf.zip", inputs)
    args = ["release", "sign-target-files", str(source), str(tmp_path / "out.zip"), "--keystore", str(tmp_path / "ks")]
    key_map = ["--key-map", f"{DEV_KEYS}/shared=releasekey", "--key-map", f"{DEV_KEYS}/media=releasekey"]
    assert main([*args, *key_map, "--json"]) == 1  # WifiRes's certificate is still unmapped
    assert "--key-map" in capsys.readouterr().err and not (tmp_path / "out.zip").exists()
    key_map += ["--key-map", f"{WIFI_CERT}=releasekey"]
    assert main([*args, *key_map, "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["refused"] is False
    assert line["ota_certificate_sha256"] == store.certificate("ota").sha256
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        (tmp_path / "s.apk").write_bytes(archive.read("SYSTEM/priv-app/Settings/Settings.apk"))
    report = verify_apk(tmp_path / "s.apk")
    assert report.verified and [c.sha256 for c in report.signers] == [store.certificate("platform").sha256]
    assert main([*args[:3], str(tmp_path / "text.zip"), *args[4:], *key_map]) == 0
    text = capsys.readouterr().out
    assert "5 APKs re-signed" in text and "signed with platform: SYSTEM/priv-app/Settings/Settings.apk" in text
    assert "note IMAGES_NOT_REBUILT" in text
    debug = write_target_files(tmp_path / "debug.zip", inputs,
                               system_prop=SYSTEM_BUILD_PROP.replace("ro.debuggable=0", "ro.debuggable=1"))  # fmt: skip
    assert main(["release", "sign-target-files", str(debug), str(tmp_path / "d.zip"), "--keystore",
                 str(tmp_path / "ks"), "--json"]) == 1  # fmt: skip
    refused = json.loads(capsys.readouterr().out)
    assert refused["refused"] is True and refused["reasons"][0]["code"] == "DEBUGGABLE"
    assert not (tmp_path / "d.zip").exists()
    assert main(["release", "sign-target-files", str(source), str(tmp_path / "e.zip")]) == 2


def test_vbmeta_and_its_chained_partition_are_resigned_with_the_avb_key(inputs: BuildInputs, tmp_path: Path) -> None:
    """A vbmeta.img signed by a test key, with a hash descriptor for boot.img and a chain to vbmeta_system.img
    (signed by another test key): afterwards the set verifies with the release AVB key only, as a locked
    bootloader would check it (sealgate.avb.slot), with the rollback index asked for."""
    from sealgate.avb.descriptors import ChainPartitionDescriptor, HashDescriptor, PropertyDescriptor
    from sealgate.avb.keys import public_key_metadata
    from sealgate.avb.slot import verify_image_set
    from sealgate.avb.vbmeta import build_vbmeta, read_vbmeta

    test_vbmeta_key, test_system_key, avb = role_signer("test-avb"), role_signer("test-system"), role_signer("avb")
    boot = b"ANDROID!" + bytes(4088)  # IMAGES/boot.img of write_target_files
    salt = bytes(range(32))
    descriptors = [
        HashDescriptor(len(boot), "sha256", "boot", salt, hashlib.sha256(salt + boot).digest()),
        ChainPartitionDescriptor(1, "vbmeta_system", public_key_metadata(test_system_key.public_key)),
        PropertyDescriptor("com.android.build.boot.fingerprint", b"google/oriole/oriole:14/AP2A/1:user/test-keys"),
    ]
    vbmeta = build_vbmeta(descriptors, test_vbmeta_key, rollback_index=3, padding_size=4096)
    system = build_vbmeta([PropertyDescriptor("com.android.build.system.os_version", b"14")], test_system_key,
                          rollback_index=5, rollback_index_location=1, padding_size=4096)  # fmt: skip
    extra = {
        "IMAGES/vbmeta.img": vbmeta,
        "IMAGES/vbmeta_system.img": system,
        "META/vbmeta_digest.txt": b"0123",
        "META/misc_info.txt": b"avb_enable=true\navb_vbmeta_algorithm=SHA256_RSA4096\n"
        b"avb_vbmeta_args=--padding_size 4096 --rollback_index 3\n",
    }
    source = write_target_files(tmp_path / "tf.zip", inputs, extra=extra)
    with pytest.raises(ReleaseError, match="a signer for the role avb is needed"):
        sign_target_files(source, tmp_path / "out.zip", _keys(inputs))
    assert not (tmp_path / "out.zip").exists()
    keys = KeyMap({**inputs.signers, "avb": avb}, {WIFI_CERT: "networkstack"})
    report = sign_target_files(source, tmp_path / "out.zip", keys, rollback_index=7)
    images = tmp_path / "images"
    images.mkdir()
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        for name in ("vbmeta.img", "vbmeta_system.img", "boot.img"):
            (images / name).write_bytes(archive.read(f"IMAGES/{name}"))
        assert "META/vbmeta_digest.txt" not in archive.namelist()
        assert archive.read("META/misc_info.txt").decode() == (
            "avb_enable=true\navb_vbmeta_algorithm=SHA256_RSA2048\n"
            "avb_vbmeta_args=--padding_size 4096 --rollback_index 7"
        )
    verdict = verify_image_set(images, [avb.public_key])
    assert verdict.verified, [issue.message for issue in verdict.errors]
    assert verdict.rollback_indexes == {0: 7, 1: 5}
    assert not verify_image_set(images, [test_vbmeta_key.public_key]).verified
    new = read_vbmeta((images / "vbmeta.img").read_bytes())
    assert new.chain_partitions()["vbmeta_system"].public_key == public_key_metadata(avb.public_key)
    assert [d for d in new.descriptors if not isinstance(d, ChainPartitionDescriptor)] == [
        d for d in descriptors if not isinstance(d, ChainPartitionDescriptor)
    ]
    assert report.vbmeta is not None and report.vbmeta["rollback_index"] == 7
    assert report.vbmeta["chained"] == {"vbmeta_system": avb.certificate.sha256}
    assert report.vbmeta["algorithm"] == "SHA256_RSA2048"


def test_a_factory_image_is_built_from_the_signed_package(signed: tuple[Path, Path, object], tmp_path: Path) -> None:
    from sealgate.release.factory_image import build_factory_image

    source, out, _ = signed
    with pytest.raises(ReleaseError, match="not release-keys"):
        build_factory_image(source, tmp_path / "unsigned-factory.zip")  # the test-keys build itself
    image = build_factory_image(out, tmp_path / "factory.zip")
    assert (image.device, image.build) == ("oriole", "ap2a.240805.005")
    assert sorted(image.images) == ["boot.img", "system.img"]
    assert {"bootloader-oriole-slider-1.3.img", "radio-oriole-g5123b-1.img"} <= set(image.files)
