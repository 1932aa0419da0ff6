"""Scenario suite for the device's decisions: APKs from the vectors and APKs signed here by Debian's apksigner."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sealgate.device.installer as installer
import sealgate.device.state as state_module
from conftest import require_tool, vectors_path
from sealgate.apk.certificate import Certificate
from sealgate.apk.manifest_writer import Element, encode
from sealgate.device import AllowedStore, Device, StoreMode, signing_certificates_digest
from sealgate.device.rules import min_installable_target_sdk
from sealgate.device.state import DATABASE_NAME, DeviceState
from sealgate.errors import DeviceError
from signing_tools import SignerKey, apksigner_rotate, apksigner_sign, make_key

FDROID = "org.fdroid.fdroid"
AURORA = "com.aurora.store"
APP = "org.example.app"


def build_unsigned(
    directory: Path,
    name: str,
    package: str = APP,
    *,
    version_code: int = 1,
    min_sdk: int = 24,
    target_sdk: int = 34,
    max_sdk: int | None = None,
    shared_user: str | None = None,
    debuggable: bool = False,
    test_only: bool = False,
    abis: tuple[str, ...] = (),
) -> Path:
    """An unsigned APK whose binary manifest says exactly what a scenario needs."""
    sdk: dict[str, str | int | bool] = {"minSdkVersion": min_sdk, "targetSdkVersion": target_sdk}
    if max_sdk is not None:
        sdk["maxSdkVersion"] = max_sdk
    attributes: dict[str, str | int | bool] = {"versionCode": version_code, "versionName": str(version_code)}
    if shared_user is not None:
        attributes["sharedUserId"] = shared_user
    root = Element("manifest", attributes, plain_attributes={"package": package})
    root.children.append(Element("uses-sdk", sdk))
    application: dict[str, str | int | bool] = {"debuggable": True} if debuggable else {}
    if test_only:
        application["testOnly"] = True
    root.children.append(Element("application", application))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-unsigned.apk"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("AndroidManifest.xml", encode(root))
        archive.writestr("classes.dex", b"dex\n035\x00" + name.encode())
        for abi in abis:
            archive.writestr(f"lib/{abi}/libapp.so", b"\x7fELF" + abi.encode())
    return path


def rotate(out: Path, old: SignerKey, new: SignerKey, **capabilities: bool) -> Path:
    """`apksigner rotate` with explicit capabilities for the old signer (installed_data=False, rollback=True...)."""
    command = ["apksigner", "rotate", "--out", str(out), "--old-signer"]
    command += ["--key", str(old.key_path), "--cert", str(old.cert_path)]
    for name, value in capabilities.items():
        command += [f"--set-{name.replace('_', '-')}", "true" if value else "false"]
    command += ["--new-signer", "--key", str(new.key_path), "--cert", str(new.cert_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return out


@dataclass
class Kit:
    """Keys and a signing helper shared by the module's scenarios."""

    work: Path
    keys: dict[str, SignerKey]

    def apk(
        self,
        name: str,
        signers: list[str],
        lineage: Path | None = None,
        schemes: dict[str, bool] | None = None,
        **manifest: object,
    ) -> Path:
        unsigned = build_unsigned(self.work / "unsigned", name, **manifest)  # type: ignore[arg-type]
        keys = [self.keys[s] for s in signers]
        return apksigner_sign(unsigned, self.work / f"{name}.apk", keys, lineage=lineage, **(schemes or {}))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    require_tool("apksigner")
    work = tmp_path_factory.mktemp("device")
    keys = {
        "old": make_key(work / "keys", "rsa-2048", "old"),
        "new": make_key(work / "keys", "ec-p256", "new"),
        "stranger": make_key(work / "keys", "rsa-2048", "stranger"),
        "store": make_key(work / "keys", "ec-p256", "store"),
        "lookalike": make_key(work / "keys", "ec-p256", "lookalike"),
        "aurora": make_key(work / "keys", "ec-p256", "aurora"),
    }
    return Kit(work, keys)


@pytest.fixture(scope="module")
def apks(kit: Kit) -> dict[str, Path]:
    """Every APK the scenarios install, signed once for the module."""
    k = kit.keys
    rotation = apksigner_rotate(kit.work / "rotation", k["old"], k["new"])
    no_data = rotate(kit.work / "no-data", k["old"], k["new"], installed_data=False)
    rollback = rotate(kit.work / "rollback", k["old"], k["new"], rollback=True)
    return {
        "v1": kit.apk("v1", ["old"], version_code=1),
        "v2": kit.apk("v2", ["old"], version_code=2),
        "v2-stranger": kit.apk("v2-stranger", ["stranger"], version_code=2),
        "v3-rotated": kit.apk("v3-rotated", ["old", "new"], rotation, version_code=3),
        "v3-rotated-no-data": kit.apk("v3-rotated-no-data", ["old", "new"], no_data, version_code=3),
        "v3-rotated-rollback": kit.apk("v3-rotated-rollback", ["old", "new"], rollback, version_code=3),
        "v4-old": kit.apk("v4-old", ["old"], version_code=4),
        "debug-v2": kit.apk("debug-v2", ["old"], version_code=2, debuggable=True),
        "debug-v1": kit.apk("debug-v1", ["old"], version_code=1, debuggable=True),
        "shared-a": kit.apk("shared-a", ["old"], package="org.example.a", shared_user="org.example.shared"),
        "shared-b": kit.apk("shared-b", ["old"], package="org.example.b", shared_user="org.example.shared"),
        "shared-b-stranger": kit.apk(
            "shared-b-stranger", ["stranger"], package="org.example.b", shared_user="org.example.shared"
        ),
        "v2-shared": kit.apk("v2-shared", ["old"], version_code=2, shared_user="org.example.shared"),
        "min-35": kit.apk("min-35", ["old"], min_sdk=35, target_sdk=35),
        "max-33": kit.apk("max-33", ["old"], max_sdk=33),
        "target-22": kit.apk("target-22", ["old"], min_sdk=21, target_sdk=22),
        "x86-only": kit.apk("x86-only", ["old"], abis=("x86_64",)),
        "arm64": kit.apk("arm64", ["old"], abis=("x86_64", "arm64-v8a")),
        "fdroid": kit.apk("fdroid", ["store"], package=FDROID),
        "fdroid-lookalike": kit.apk("fdroid-lookalike", ["lookalike"], package=FDROID),
        "aurora": kit.apk("aurora", ["aurora"], package=AURORA),
        "other-v1": kit.apk("other-v1", ["stranger"], package="org.example.other", version_code=1),
        "other-v2": kit.apk("other-v2", ["stranger"], package="org.example.other", version_code=2),
        "v1only-t34": kit.apk("v1only-t34", ["old"], schemes={"v1": True, "v2": False, "v3": False}, target_sdk=34),
        "v1only-t29": kit.apk("v1only-t29", ["old"], schemes={"v1": True, "v2": False, "v3": False}, target_sdk=29),
        "test-only": kit.apk("test-only", ["old"], test_only=True),
        "system-uid": kit.apk("system-uid", ["old"], package="org.example.sys", shared_user="android.uid.system"),
        "system-uid-stranger": kit.apk(
            "system-uid-stranger", ["stranger"], package="org.example.sys2", shared_user="android.uid.system"
        ),
        "media-uid": kit.apk("media-uid", ["stranger"], package="org.example.media", shared_user="android.media"),
    }


@pytest.fixture
def device(tmp_path: Path, kit: Kit) -> Iterator[Device]:
    stores = (
        AllowedStore(FDROID, kit.keys["store"].cert_sha256, StoreMode.PRIVILEGED),
        AllowedStore(AURORA, kit.keys["aurora"].cert_sha256, StoreMode.USER_CONFIRMED),
    )
    with Device.init(tmp_path / "phone", sdk=34, abis=("arm64-v8a", "armeabi-v7a", "armeabi"), stores=stores) as dev:
        yield dev


def snapshot(device: Device) -> tuple[list[str], bytes]:
    return device.dump(), (device._state.directory / DATABASE_NAME).read_bytes()


def refused(device: Device, apk: Path, code: str, **options: object) -> None:
    """Install must be refused with `code`, and the database must be exactly as it was."""
    before = snapshot(device)
    decision = device.install(apk, **options)  # type: ignore[arg-type]
    assert not decision.accepted and decision.code == code, decision
    assert snapshot(device) == before


# --- the package installer rules ---


def test_first_install_trusts_the_verified_signer(device: Device, apks: dict[str, Path], kit: Kit) -> None:
    decision = device.install(apks["v1"])
    assert (decision.accepted, decision.action, decision.code) == (True, "install", "INSTALL")
    record = device.get(APP)
    assert record is not None and record.version_code == 1 and record.installer is None
    assert [c.der for c in record.identity.signers] == [kit.keys["old"].cert_der]


def test_same_signer_update(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v1"])
    decision = device.install(apks["v2"])
    assert (decision.accepted, decision.action, decision.code) == (True, "update", "SAME_SIGNERS")
    record = device.get(APP)
    assert record is not None and record.version_code == 2


def test_different_signer_update_is_refused_in_words(device: Device, apks: dict[str, Path], kit: Kit) -> None:
    device.install(apks["v1"])
    before = snapshot(device)
    decision = device.install(apks["v2-stranger"])
    assert not decision.accepted and decision.code == "SIGNER_MISMATCH" and decision.action == "update"
    assert "signed by a different developer" in decision.reason
    assert f"installed {kit.keys['old'].cert_sha256[:4]}…" in decision.reason
    assert f"offered {kit.keys['stranger'].cert_sha256[:4]}…" in decision.reason
    assert snapshot(device) == before


def test_rotated_key_update_is_accepted_and_the_lineage_recorded(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v1"])
    decision = device.install(apks["v3-rotated"])
    assert decision.accepted and decision.code == "ROTATION", decision.reason
    record = device.get(APP)
    assert record is not None and record.identity.lineage is not None and len(record.identity.lineage.nodes) == 2
    # What was recorded is what an update is compared with: the old key may not come back without ROLLBACK.
    refused(device, apks["v4-old"], "ROLLBACK_NOT_GRANTED")


def test_rotation_without_installed_data_is_refused(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v1"])
    refused(device, apks["v3-rotated-no-data"], "ROTATION_NOT_GRANTED")


def test_rollback_to_the_old_key_only_with_the_rollback_capability(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v1"])
    assert device.install(apks["v3-rotated-rollback"]).accepted
    decision = device.install(apks["v4-old"])
    assert decision.accepted and decision.code == "ROLLBACK", decision.reason


def test_downgrade_is_refused(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v2"])
    refused(device, apks["v1"], "VERSION_DOWNGRADE")
    refused(device, apks["v1"], "VERSION_DOWNGRADE", allow_downgrade=True)  # not debuggable: no exception


def test_downgrade_of_a_debuggable_app_only_when_asked(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["debug-v2"])
    refused(device, apks["debug-v1"], "VERSION_DOWNGRADE")
    decision = device.install(apks["debug-v1"], allow_downgrade=True)
    assert decision.accepted and decision.action == "update"


def test_shared_user_members_must_share_signers(device: Device, apks: dict[str, Path]) -> None:
    assert device.install(apks["shared-a"]).accepted
    refused(device, apks["shared-b-stranger"], "SHARED_USER_INCOMPATIBLE")
    assert device.install(apks["shared-b"]).accepted


def test_an_update_may_not_change_its_shared_user(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v1"])
    refused(device, apks["v2-shared"], "SHARED_USER_CHANGED")


@pytest.mark.parametrize(
    ("name", "code"),
    [("min-35", "OLDER_SDK"), ("max-33", "NEWER_SDK"), ("target-22", "DEPRECATED_SDK_VERSION")],
)
def test_sdk_levels(device: Device, apks: dict[str, Path], name: str, code: str) -> None:
    refused(device, apks[name], code)


def test_target_sdk_floor_by_level() -> None:
    assert [min_installable_target_sdk(level) for level in (30, 33, 34, 35, 36)] == [0, 0, 23, 24, 24]


def test_native_abis(device: Device, apks: dict[str, Path]) -> None:
    refused(device, apks["x86-only"], "NO_MATCHING_ABIS")
    assert device.install(apks["arm64"]).accepted


def test_unsigned_apk_is_refused(device: Device, kit: Kit) -> None:
    refused(device, build_unsigned(kit.work / "unsigned", "plain"), "NOT_VERIFIED")


def test_uninstall_forgets_the_signer(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["v1"])
    assert device.uninstall(APP).accepted and device.get(APP) is None
    decision = device.install(apks["v2-stranger"])
    assert decision.accepted and decision.action == "install"
    before = snapshot(device)
    assert device.uninstall("org.example.missing").code == "NOT_INSTALLED"
    assert snapshot(device) == before


def test_check_changes_nothing(device: Device, apks: dict[str, Path]) -> None:
    before = snapshot(device)
    decision = device.check(apks["v1"])
    assert decision.accepted and decision.action == "install"
    assert snapshot(device) == before


def test_a_crash_mid_install_leaves_no_half_installed_package(
    device: Device, apks: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    device.install(apks["v1"])
    before = snapshot(device)

    def crash(self: DeviceState, record: object) -> None:
        raise OSError("power lost")

    # The package row is written, then the signers: crash between the two.
    monkeypatch.setattr(DeviceState, "_write_signers", crash)
    with pytest.raises(OSError):
        device.install(apks["v3-rotated"])
    with pytest.raises(OSError):
        device.install(apks["other-v1"])
    assert snapshot(device) == before
    monkeypatch.undo()
    with Device.open(device._state.directory) as reopened:
        assert [p.package for p in reopened.packages()] == [APP]
        record = reopened.get(APP)
        assert record is not None and record.version_code == 1 and record.identity.lineage is None


def test_state_survives_reopening(device: Device, apks: dict[str, Path], kit: Kit) -> None:
    device.install(apks["v1"])
    device.install(apks["v3-rotated"])
    with Device.open(device._state.directory) as reopened:
        record = reopened.get(APP)
        assert record is not None
        assert record.identity.lineage is not None
        assert [n.certificate.der for n in record.identity.lineage.nodes] == [
            kit.keys["old"].cert_der,
            kit.keys["new"].cert_der,
        ]
        assert reopened.profile.sdk == 34


def test_device_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="not a device directory"):
        Device.open(tmp_path)
    Device.init(tmp_path / "d", sdk=30, abis=("arm64-v8a",)).close()
    with pytest.raises(DeviceError, match="already holds a device"):
        Device.init(tmp_path / "d", sdk=30, abis=("arm64-v8a",))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DATABASE_NAME).write_bytes(b"not sqlite" * 100)
    with pytest.raises(DeviceError):
        Device.open(tmp_path / "bad")
    assert not list((tmp_path / "d").glob(".device-*"))


# --- vector APKs (F-Droid's and apksig's, signed by their publishers) ---


@pytest.fixture
def old_device(tmp_path: Path) -> Iterator[Device]:
    with Device.init(tmp_path / "old-phone", sdk=30, abis=("arm64-v8a",)) as dev:
        yield dev


def test_vector_updates_and_downgrade(old_device: Device) -> None:
    apks = vectors_path("fdroid", "apks")
    package = "org.bitbucket.tickytacky.mirrormirror"
    assert old_device.install(apks / f"{package}_2.apk").action == "install"
    update = old_device.install(apks / f"{package}_4.apk")
    assert update.accepted and update.code == "SAME_SIGNERS"
    refused(old_device, apks / f"{package}_1.apk", "VERSION_DOWNGRADE")


def test_vector_targeting_an_old_sdk_is_refused_on_android_14(device: Device) -> None:
    refused(
        device, vectors_path("fdroid", "apks", "org.bitbucket.tickytacky.mirrormirror_1.apk"), "DEPRECATED_SDK_VERSION"
    )


def test_vector_bad_signature_is_refused(old_device: Device) -> None:
    refused(old_device, vectors_path("fdroid", "apks", "urzip-badsig.apk"), "NOT_VERIFIED")


def test_vector_native_abi(old_device: Device, device: Device) -> None:
    apk = vectors_path("apksig", "files", "golden-aligned-v1v2v3-out.apk")  # armeabi only
    refused(old_device, apk, "NO_MATCHING_ABIS")
    assert device.install(apk).accepted


# --- who may install: the privileged installer and the store modes ---


def test_allow_list_digest_is_f_droids(apks: dict[str, Path], kit: Kit, device: Device) -> None:
    device.install(apks["fdroid"])
    record = device.get(FDROID)
    assert record is not None
    assert signing_certificates_digest(record.identity) == kit.keys["store"].cert_sha256
    device.install(apks["v1"])
    device.install(apks["v3-rotated"])
    rotated = device.get(APP)
    assert rotated is not None
    # A rotated app is reported by its original certificate, as PackageManager's GET_SIGNATURES does.
    assert signing_certificates_digest(rotated.identity) == kit.keys["old"].cert_sha256


def test_privileged_store_installs_and_its_updates_wait_for_auto_update(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["fdroid"])
    decision = device.install(apks["v1"], as_store=FDROID)
    assert decision.accepted and decision.action == "install"
    record = device.get(APP)
    assert record is not None and record.installer == FDROID
    assert not any(store.auto_update for store in device.stores())  # off by default
    refused(device, apks["v2"], "AUTO_UPDATE_OFF", as_store=FDROID)
    assert device.install(apks["v2"], as_store=FDROID, confirm=True).accepted  # the user tapped Update


def test_auto_update_is_a_user_setting(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["fdroid"])
    device.install(apks["v1"], as_store=FDROID)
    before = snapshot(device)
    assert device.set_auto_update(FDROID, True, confirm=False).code == "SETTING_NEEDS_CONFIRMATION"
    assert device.set_auto_update("org.example.nobody", True, confirm=True).code == "CALLER_NOT_ALLOWED"
    assert snapshot(device) == before
    assert device.set_auto_update(FDROID, True, confirm=True).accepted
    decision = device.install(apks["v2"], as_store=FDROID)
    assert decision.accepted and decision.action == "update"
    assert device.set_auto_update(FDROID, False, confirm=False).accepted


def test_privileged_installer_refuses_a_look_alike_caller(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["fdroid-lookalike"])
    refused(device, apks["v1"], "CALLER_SIGNER_MISMATCH", as_store=FDROID, confirm=True)


def test_privileged_installer_refuses_unknown_and_missing_callers(device: Device, apks: dict[str, Path]) -> None:
    refused(device, apks["v1"], "CALLER_NOT_INSTALLED", as_store=FDROID)
    device.install(apks["other-v1"])
    refused(device, apks["v1"], "CALLER_NOT_ALLOWED", as_store="org.example.other", confirm=True)


def test_aurora_mode_asks_the_user(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["aurora"])
    refused(device, apks["v1"], "INSTALL_NEEDS_CONFIRMATION", as_store=AURORA)
    assert device.install(apks["v1"], as_store=AURORA, confirm=True).accepted
    refused(device, apks["v2"], "AUTO_UPDATE_OFF", as_store=AURORA)
    assert device.set_auto_update(AURORA, True, confirm=True).accepted
    assert device.install(apks["v2"], as_store=AURORA).accepted  # an app it installed: no per-app prompt
    refused(device, apks["other-v1"], "INSTALL_NEEDS_CONFIRMATION", as_store=AURORA)  # new installs still ask


def test_take_over_needs_the_user(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["fdroid"])
    device.install(apks["aurora"])
    assert device.set_auto_update(FDROID, True, confirm=True).accepted
    device.install(apks["v1"], as_store=AURORA, confirm=True)
    refused(device, apks["v2"], "TAKEOVER_NEEDS_CONFIRMATION", as_store=FDROID)
    assert device.install(apks["v2"], as_store=FDROID, confirm=True).accepted
    record = device.get(APP)
    assert record is not None and record.installer == FDROID
    device.install(apks["other-v1"])  # installed by the user directly
    refused(device, apks["other-v2"], "TAKEOVER_NEEDS_CONFIRMATION", as_store=FDROID)


def test_no_caller_gets_around_the_package_rules(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["fdroid"])
    device.set_auto_update(FDROID, True, confirm=True)
    device.install(apks["v2"], as_store=FDROID)
    for options in ({"as_store": FDROID, "confirm": True}, {"confirm": True}, {"allow_downgrade": True}):
        refused(device, apks["v2-stranger"], "SIGNER_MISMATCH", **options)
        refused(device, apks["v1"], "VERSION_DOWNGRADE", **options)


def test_allow_list_entries_are_checked() -> None:
    with pytest.raises(DeviceError):
        AllowedStore.parse("org.fdroid.fdroid=abc")
    with pytest.raises(DeviceError):
        AllowedStore.parse("org.fdroid.fdroid=" + "a" * 64 + ":root")
    with pytest.raises(DeviceError):
        AllowedStore.parse("no-equals-sign")
    entry = AllowedStore.parse("org.fdroid.fdroid=" + "AB:" * 31 + "AB:user-confirmed")
    assert entry.cert_sha256 == "ab" * 32 and entry.mode is StoreMode.USER_CONFIRMED and not entry.auto_update


# --- review 4 regressions ---


@pytest.mark.parametrize("sdk", [30, 33, 34])
def test_v1_only_apk_targeting_30_or_more_is_refused_on_every_android_11_level(
    tmp_path: Path, apks: dict[str, Path], sdk: int
) -> None:
    with Device.init(tmp_path / "p", sdk=sdk, abis=("arm64-v8a",)) as dev:
        decision = dev.check(apks["v1only-t34"])
        assert not decision.accepted and decision.code in {"NO_SIGNATURES_V2_REQUIRED", "NOT_VERIFIED"}, decision
        if sdk < 34:  # apksig's window rule does not catch these levels; the platform rule does
            assert decision.code == "NO_SIGNATURES_V2_REQUIRED" and "v2 or newer" in decision.reason
        # targetSdk 29 is still fine with v1 only
        assert dev.check(apks["v1only-t29"]).accepted


def test_v1_only_targeting_34_installs_before_android_11(tmp_path: Path, apks: dict[str, Path]) -> None:
    with Device.init(tmp_path / "p", sdk=29, abis=("arm64-v8a",)) as dev:
        assert dev.check(apks["v1only-t34"]).accepted


def test_only_the_shell_may_request_a_downgrade(device: Device, apks: dict[str, Path]) -> None:
    device.install(apks["fdroid"])
    assert device.set_auto_update(FDROID, True, confirm=True).accepted
    assert device.install(apks["debug-v2"], as_store=FDROID).accepted
    refused(device, apks["debug-v1"], "VERSION_DOWNGRADE", as_store=FDROID, allow_downgrade=True, confirm=True)
    decision = device.check(apks["debug-v1"], as_store=FDROID, allow_downgrade=True)
    assert "only the shell" in decision.reason
    assert device.check(apks["debug-v1"], allow_downgrade=True).accepted  # adb install -d


def test_test_only_apks_need_the_shell_and_allow_test(device: Device, apks: dict[str, Path]) -> None:
    refused(device, apks["test-only"], "TEST_ONLY")
    device.install(apks["fdroid"])
    refused(device, apks["test-only"], "TEST_ONLY", as_store=FDROID, allow_test=True, confirm=True)
    assert device.install(apks["test-only"], allow_test=True).accepted  # adb install -t


def test_platform_shared_users_belong_to_the_system_image(device: Device, apks: dict[str, Path]) -> None:
    refused(device, apks["system-uid"], "SHARED_USER_PLATFORM")
    refused(device, apks["media-uid"], "SHARED_USER_PLATFORM")


def test_platform_certificate_may_claim_platform_shared_users(tmp_path: Path, apks: dict[str, Path], kit: Kit) -> None:
    platform = Certificate.from_der(kit.keys["old"].cert_der)
    with Device.init(tmp_path / "p", sdk=34, abis=("arm64-v8a",), platform=platform) as dev:
        assert dev.install(apks["system-uid"]).accepted
        refused(dev, apks["system-uid-stranger"], "SHARED_USER_PLATFORM")
    with Device.open(tmp_path / "p") as reopened:
        assert reopened.profile.platform == platform


def test_the_manifest_comes_from_the_verified_bytes(
    tmp_path: Path, apks: dict[str, Path], kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below API 26 the verifier does not read the manifest; swapping the file after verifying must not matter."""
    target = tmp_path / "offered.apk"
    shutil.copy(apks["v1"], target)
    evil = build_unsigned(tmp_path, "evil", "com.victim.bank", version_code=999)
    real = installer.verify_apk

    def swapping(path: str | os.PathLike[str], **options: int) -> object:
        report = real(path, **options)
        shutil.copy(evil, target)
        return report

    monkeypatch.setattr(installer, "verify_apk", swapping)
    with Device.init(tmp_path / "p", sdk=25, abis=("arm64-v8a",)) as dev:
        decision = dev.install(target)
        assert decision.accepted and decision.package == APP
        assert dev.get("com.victim.bank") is None
        record = dev.get(APP)
        assert record is not None and record.version_code == 1


def test_check_takes_no_write_lock(device: Device, apks: dict[str, Path]) -> None:
    holder = sqlite3.connect(device._state.directory / DATABASE_NAME, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert device.check(apks["v1"]).accepted
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_damaged_database_is_a_device_error(tmp_path: Path, apks: dict[str, Path]) -> None:
    Device.init(tmp_path / "p", sdk=34, abis=("arm64-v8a",)).close()
    connection = sqlite3.connect(tmp_path / "p" / DATABASE_NAME)
    connection.execute("DROP TABLE packages")
    connection.commit()
    connection.close()
    with Device.open(tmp_path / "p") as dev:
        with pytest.raises(DeviceError, match="damaged"):
            dev.packages()
        with pytest.raises(DeviceError, match="damaged"):
            dev.check(apks["v1"])
    connection = sqlite3.connect(tmp_path / "p" / DATABASE_NAME)
    connection.execute("UPDATE device SET abis = 'notjson'")
    connection.commit()
    connection.close()
    with pytest.raises(DeviceError, match="damaged"):
        Device.open(tmp_path / "p")


@pytest.mark.parametrize(("sdk", "abis"), [(0, ("arm64-v8a",)), (10**20, ("arm64-v8a",)), (34, ("",)), (34, ())])
def test_bad_profiles_are_refused(tmp_path: Path, sdk: int, abis: tuple[str, ...]) -> None:
    with pytest.raises(DeviceError):
        Device.init(tmp_path / "p", sdk=sdk, abis=abis)
    assert not (tmp_path / "p" / DATABASE_NAME).exists()


def test_a_concurrent_init_never_replaces_a_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other `init` wins between our exists-check and our link: we must refuse, not replace its database."""
    real_link = os.link
    winner = b"the other init's database"

    def racing_link(source: str, target: str) -> None:
        Path(target).write_bytes(winner)
        real_link(source, target)

    monkeypatch.setattr(state_module.os, "link", racing_link)
    with pytest.raises(DeviceError, match="already holds a device"):
        Device.init(tmp_path / "p", sdk=34, abis=("arm64-v8a",))
    assert (tmp_path / "p" / DATABASE_NAME).read_bytes() == winner
    assert not list((tmp_path / "p").glob(".device-*"))


def test_a_device_below_min_sdk_says_older_sdk(tmp_path: Path, apks: dict[str, Path]) -> None:
    """v2/v3-only (minSdk 24) does not verify on API 21; the device must say the level, not the signature."""
    with Device.init(tmp_path / "p", sdk=21, abis=("arm64-v8a",)) as dev:
        decision = dev.check(apks["v1"])
        assert decision.code == "OLDER_SDK" and "needs Android API level 24" in decision.reason
