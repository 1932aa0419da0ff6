"""The OS updater's pieces that stand alone: the decision rules, resumable downloads against a loopback server with
Range support, the A/B device's state (init, old schema, status) and boot/rollback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ota_device_tools import make_ota_key, range_server, snapshot, write_images
from sealgate.cli.main import main
from sealgate.device import Device
from sealgate.device.download import download
from sealgate.device.ota_rules import (
    BuildInfo,
    OtaDecision,
    OtaState,
    Slot,
    SlotStatus,
    applied_state,
    choose_update,
    decide_boot,
    decide_package,
    incremental_of,
)
from sealgate.device.updater import OtaSetup, Updater
from sealgate.errors import DeviceError
from sealgate.ota.payload.apply import ApplyResult
from sealgate.ota.payload.properties import PayloadProperties

DEVICE = "sargo"
FP1 = "google/sargo/sargo:14/AP1A.1/1001:user/release-keys"
FP2 = "google/sargo/sargo:14/AP1A.2/1002:user/release-keys"
FP3 = "google/sargo/sargo:14/AP1A.3/1003:user/release-keys"
INSTALLED = BuildInfo(FP1, "1001", 1_700_000_000, "2024-03-05", DEVICE, 1)


def state(build: BuildInfo = INSTALLED, rollback_index: int = 1, tries: int = 2) -> OtaState:
    running = Slot("a", "a-0", SlotStatus.SUCCESSFUL, build)
    return OtaState(DEVICE, "a", "a", rollback_index, tries, (running, Slot("b", None, SlotStatus.EMPTY, None)))


@dataclass
class Meta:
    """Test double of ota.metadata.OtaMetadata (the fields the rules read)."""

    ota_type: str = "AB"
    wipe: bool = False
    downgrade: bool = False
    spl_downgrade: bool = False
    pre_device: list[str] = field(default_factory=lambda: [DEVICE])
    pre_build: list[str] = field(default_factory=list)
    pre_build_incremental: str | None = None
    post_build: list[str] = field(default_factory=lambda: [FP2])
    post_build_incremental: str | None = "1002"
    post_security_patch_level: str | None = "2024-04-05"
    post_timestamp: int = 1_710_000_000


# --- the package rules (recovery's CheckPackageMetadata, spl_check; releasetools' downgrade = wipe) ---


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, "UPDATE"),
        ({"pre_build": [FP1], "pre_build_incremental": "1001"}, "UPDATE"),
        ({"post_timestamp": INSTALLED.timestamp}, "UPDATE"),  # a full OTA may reinstall the running build
        ({"ota_type": "BLOCK"}, "NOT_AB_PACKAGE"),
        ({"pre_device": ["walleye"]}, "WRONG_DEVICE"),
        ({"pre_device": []}, "WRONG_DEVICE"),
        ({"pre_build": [FP3]}, "PRE_BUILD_MISMATCH"),
        ({"pre_build_incremental": "999"}, "PRE_BUILD_MISMATCH"),
        ({"post_timestamp": INSTALLED.timestamp - 1}, "TIMESTAMP_DOWNGRADE"),
        ({"post_timestamp": 0}, "TIMESTAMP_DOWNGRADE"),
        ({"post_timestamp": 1, "downgrade": True}, "TIMESTAMP_DOWNGRADE"),  # downgrade without wipe
        ({"post_timestamp": 1, "wipe": True}, "TIMESTAMP_DOWNGRADE"),  # wipe without downgrade
        ({"post_timestamp": 1, "downgrade": True, "wipe": True}, "DOWNGRADE_NOT_INCREMENTAL"),
        ({"post_timestamp": 1, "downgrade": True, "wipe": True, "pre_build": [FP1]}, "DOWNGRADE_WITH_WIPE"),
        ({"post_security_patch_level": "2024-03-01"}, "SPL_DOWNGRADE"),
        ({"post_security_patch_level": "2024-03-01", "spl_downgrade": True}, "SPL_DOWNGRADE"),
        ({"post_security_patch_level": "2024-03-01", "spl_downgrade": True, "wipe": True}, "DOWNGRADE_WITH_WIPE"),
        ({"post_security_patch_level": "2024-03-05"}, "UPDATE"),
        ({"post_security_patch_level": "2024-3-1"}, "MALFORMED_METADATA"),
        ({"post_build": []}, "MALFORMED_METADATA"),
    ],
)
def test_package_rules(changes: dict[str, object], code: str) -> None:
    decision = decide_package(state(), Meta(**changes))  # type: ignore[arg-type]
    assert decision.code == code, decision
    assert decision.accepted == (code in ("UPDATE", "DOWNGRADE_WITH_WIPE"))
    if code == "DOWNGRADE_WITH_WIPE":
        assert decision.wipe


def test_a_pending_update_refuses_another() -> None:
    pending = applied_state(state(), "b-1", decide_package(state(), Meta()))
    decision = decide_package(pending, Meta(post_build=[FP3]))
    assert (decision.accepted, decision.code) == (False, "UPDATE_PENDING_REBOOT")


def test_incremental_of_reads_the_fingerprint() -> None:
    assert incremental_of(FP1) == "1001"
    assert incremental_of("nonsense") == ""


# --- choosing what to download ---


@dataclass(frozen=True)
class File:
    url: str
    size: int = 10
    sha256: str = "0" * 64
    pre_build: str | None = None


@dataclass(frozen=True)
class Build:
    fingerprint: str
    timestamp: int
    full: File
    incrementals: list[File] = field(default_factory=list)
    device: str = DEVICE
    incremental: str | None = None
    security_patch_level: str | None = None


def test_choose_update_prefers_the_incremental_from_the_installed_build() -> None:
    newest = Build(FP3, 1_720_000_000, File("full3.zip"), [File("inc-2-3.zip", pre_build=FP2),
                                                           File("inc-1-3.zip", pre_build=FP1)])  # fmt: skip
    offer = choose_update(state(), [newest, Build(FP2, 1_710_000_000, File("full2.zip"))])
    assert (offer.code, offer.kind, offer.file) == ("INCREMENTAL", "incremental", newest.incrementals[1])
    only_full = Build(FP3, 1_720_000_000, File("full3.zip"), [File("inc-2-3.zip", pre_build=FP2)])
    offer = choose_update(state(), [only_full])
    assert (offer.code, offer.kind, offer.file) == ("FULL", "full", only_full.full)


def test_choose_update_up_to_date_and_other_devices() -> None:
    assert choose_update(state(), [Build(FP1, INSTALLED.timestamp, File("f.zip"))]).code == "UP_TO_DATE"
    older = Build(FP2, INSTALLED.timestamp - 10, File("f.zip"))
    offer = choose_update(state(), [older])
    assert offer.code == "UP_TO_DATE" and not offer.available
    assert choose_update(state(), [Build(FP2, 1_800_000_000, File("f.zip"), device="walleye")]).code == (
        "NO_BUILD_FOR_DEVICE"
    )


# --- boot and rollback (boot_control tries, AVB rollback index after a successful boot only) ---


def _accepted(build: BuildInfo, wipe: bool = False) -> OtaDecision:
    return OtaDecision(True, "UPDATE", "test", build, wipe)


def test_successful_boot_switches_slots_and_only_then_raises_the_rollback_index() -> None:
    new = BuildInfo(FP2, "1002", 1_710_000_000, "2024-04-05", DEVICE, 3)
    pending = applied_state(state(), "b-1", _accepted(new))
    assert (pending.active_slot, pending.current_slot, pending.rollback_index) == ("b", "a", 1)
    assert pending.slot("b").status is SlotStatus.UNBOOTED and pending.slot("b").tries_remaining == 2
    outcome = decide_boot(pending, fail=False)
    assert outcome.code == "BOOT_SUCCESSFUL"
    booted = outcome.state
    assert (booted.current_slot, booted.active_slot, booted.rollback_index) == ("b", "b", 3)
    assert booted.slot("b").status is SlotStatus.SUCCESSFUL and booted.installed == new


def test_failed_boots_cost_tries_then_roll_back_with_the_index_unchanged() -> None:
    new = BuildInfo(FP2, "1002", 1_710_000_000, "2024-04-05", DEVICE, 3)
    pending = applied_state(state(tries=2), "b-1", _accepted(new))
    first = decide_boot(pending, fail=True)
    assert first.code == "BOOT_FAILED" and first.state.slot("b").tries_remaining == 1
    assert first.state.active_slot == "b" and first.booted_slot is None
    second = decide_boot(first.state, fail=True)
    assert second.code == "ROLLED_BACK"
    after = second.state
    assert (after.current_slot, after.active_slot, after.rollback_index) == ("a", "a", 1)
    assert after.slot("b").status is SlotStatus.UNBOOTABLE and after.installed == INSTALLED


def test_a_slot_below_the_stored_rollback_index_does_not_boot() -> None:
    old_index = BuildInfo(FP2, "1002", 1_710_000_000, "2024-04-05", DEVICE, 0)
    outcome = decide_boot(applied_state(state(rollback_index=1), "b-1", _accepted(old_index)), fail=False)
    assert outcome.code == "ROLLBACK_INDEX"
    assert outcome.state.current_slot == "a" and outcome.state.slot("b").status is SlotStatus.UNBOOTABLE


def test_boot_without_an_update_changes_nothing() -> None:
    assert decide_boot(state(), fail=False).state == state()
    assert decide_boot(state(), fail=True).code == "NOTHING_TO_FAIL"


# --- downloads: resume with Range, checked size and SHA-256 ---

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_fresh(tmp_path: Path) -> None:
    with range_server({"ota/full.zip": PAYLOAD}) as server:
        result = download(server.base + "ota/full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        assert server.faults.ranges == [None]
    assert (result.ok, result.code, result.received) == (True, "DOWNLOADED", len(PAYLOAD))
    assert result.path is not None and result.path.read_bytes() == PAYLOAD
    again = download(server.base + "ota/full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
    assert again.code == "ALREADY_DOWNLOADED"


def test_truncated_download_is_resumed_with_a_range_request(tmp_path: Path) -> None:
    with range_server({"full.zip": PAYLOAD}) as server:
        server.faults.truncate_next = 300_000
        first = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        assert (first.ok, first.code) == (False, "INTERRUPTED")
        partial = tmp_path / f"{DIGEST}.zip.part"
        assert partial.read_bytes() == PAYLOAD[:300_000]
        second = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        assert server.faults.ranges == [None, "bytes=300000-"]
    assert (second.ok, second.code, second.resumed_from, second.received) == (
        True, "RESUMED", 300_000, len(PAYLOAD) - 300_000)  # fmt: skip
    assert second.path is not None and second.path.read_bytes() == PAYLOAD
    assert not partial.exists()


def test_corrupted_download_is_discarded(tmp_path: Path) -> None:
    with range_server({"full.zip": PAYLOAD}) as server:
        server.faults.corrupt = True
        result = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
    assert (result.ok, result.code) == (False, "CORRUPTED")
    assert list(tmp_path.iterdir()) == []


def test_resume_against_a_server_that_ignores_range_starts_over(tmp_path: Path) -> None:
    with range_server({"full.zip": PAYLOAD}) as server:
        server.faults.truncate_next = 1000
        download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        server.faults.ignore_range = True
        result = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
    assert (result.ok, result.code, result.received) == (True, "DOWNLOADED", len(PAYLOAD))
    assert result.path is not None and result.path.read_bytes() == PAYLOAD


def test_a_wrong_content_range_is_refused(tmp_path: Path) -> None:
    with range_server({"full.zip": PAYLOAD}) as server:
        server.faults.truncate_next = 1000
        download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        server.faults.wrong_content_range = True
        result = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
    assert (result.ok, result.code) == (False, "RANGE_MISMATCH")
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_another_size_is_refused(tmp_path: Path) -> None:
    with range_server({"full.zip": PAYLOAD + b"x"}) as server:
        result = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
    assert (result.ok, result.code) == (False, "SIZE_MISMATCH")


def test_unreachable_server_is_a_failed_fetch(tmp_path: Path) -> None:
    with range_server({}) as server:
        url = server.base + "missing.zip"
        result = download(url, tmp_path, size=len(PAYLOAD), sha256=DIGEST)
    assert (result.ok, result.code) == (False, "FETCH_FAILED") and "404" in result.reason


# --- the A/B device's state ---


@pytest.fixture(scope="module")
def ota_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ota_key(tmp_path_factory.mktemp("keys"), "release").cert_path


def init_args(directory: Path, images: Path, cert: Path, *extra: str) -> list[str]:
    return ["device", "init", str(directory), "--device-name", DEVICE, "--build-fingerprint", FP1,
            "--build-timestamp", str(INSTALLED.timestamp), "--spl", INSTALLED.security_patch_level,
            "--otacerts", str(cert), "--images", str(images), *extra]  # fmt: skip


def test_init_makes_an_ab_device(tmp_path: Path, ota_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = write_images(tmp_path / "factory", b"v1", {"boot": 8192, "system": 20000})
    assert main([*init_args(tmp_path / "phone", images, ota_key, "--boot-tries", "3"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ota"]["installed"]["fingerprint"] == FP1
    assert document["ota"]["installed"]["incremental"] == "1001"
    assert [slot["status"] for slot in document["ota"]["slots"]] == ["successful", "empty"]
    with Updater.open(tmp_path / "phone") as updater:
        slot_a = updater.slot_directory("a")
        assert slot_a is not None
        for name in ("boot", "system"):
            assert (slot_a / f"{name}.img").read_bytes() == (images / f"{name}.img").read_bytes()
        assert updater.status().boot_tries == 3
    assert main(["device", "ota", "status", str(tmp_path / "phone"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["current_slot"] == "a"


def test_init_without_ota_options_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "init", str(tmp_path / "phone"), "--json"]) == 0
    assert "ota" not in json.loads(capsys.readouterr().out)
    assert main(["device", "ota", "status", str(tmp_path / "phone"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["code"] == "DEVICE_UNAVAILABLE"


def test_init_refuses_half_an_ota_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "init", str(tmp_path / "phone"), "--spl", "2024-01-01"]) == 2
    assert "--device-name" in capsys.readouterr().err
    assert main(["device", "init", str(tmp_path / "phone"), "--device-name", DEVICE]) == 2
    assert "--build-fingerprint" in capsys.readouterr().err
    assert not (tmp_path / "phone").exists()


def test_a_second_init_leaves_the_first_device_alone(tmp_path: Path, ota_key: Path) -> None:
    images = write_images(tmp_path / "factory", b"v1", {"boot": 4096})
    assert main(init_args(tmp_path / "phone", images, ota_key)) == 0
    before = snapshot(tmp_path / "phone")
    assert main(init_args(tmp_path / "phone", images, ota_key)) == 2
    assert snapshot(tmp_path / "phone") == before


def test_an_old_device_directory_is_refused_clearly(tmp_path: Path) -> None:
    Device.init(tmp_path / "phone", sdk=34, abis=("arm64-v8a",)).close()
    connection = sqlite3.connect(tmp_path / "phone" / "device.db")
    connection.execute("UPDATE device SET schema_version = 2")
    connection.commit()
    connection.close()
    with pytest.raises(DeviceError, match=r"older sealgate.*schema 2"):
        Device.open(tmp_path / "phone")


def test_boot_through_the_gate_wipes_data_once(tmp_path: Path, ota_key: Path) -> None:
    """The gate writes the boot's outcome in one transaction, and a wiping update's first boot clears /data."""
    from sealgate.device import slots
    from sealgate.device.state import DeviceState
    from sealgate.ota.whole_file import load_trusted_keys

    images = write_images(tmp_path / "factory", b"v1", {"boot": 4096})
    certs = tuple(key.certificate for key in load_trusted_keys([ota_key]))
    setup = OtaSetup(DEVICE, dataclasses.replace(INSTALLED, rollback_index=None), images, certs, boot_tries=1)
    Device.init(tmp_path / "phone", sdk=34, abis=("arm64-v8a",), ota=setup).close()
    device_state = DeviceState.open(tmp_path / "phone")
    new = BuildInfo(FP2, "1002", 1_710_000_000, "2024-04-05", DEVICE, 5)
    name = slots.flash(tmp_path / "phone", write_images(tmp_path / "v2", b"v2", {"boot": 4096}), "b")
    current = device_state.ota_state()
    assert current is not None
    with device_state.transaction() as writer:
        writer.put_ota_state(applied_state(current, name, _accepted(new, wipe=True)))
        writer._db.execute("INSERT INTO packages VALUES ('org.example', 1, NULL, NULL, 0, 0, 0, NULL, 34)")
    device_state.close()
    with Updater.open(tmp_path / "phone") as updater:
        outcome = updater.boot()
        assert (outcome.code, outcome.wiped) == ("BOOT_SUCCESSFUL", True)
        assert updater.status().rollback_index == 5 and updater.status().installed == new
    with Device.open(tmp_path / "phone") as device:
        assert device.packages() == []


# --- the apply gate with stand-ins for the payload and metadata layers (the real ones: test_device_ota.py) ---


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A device, a package signed by its OTA key (real whole-file signature), and stand-in payload/metadata readers."""
    import zipfile

    import sealgate.device.updater as updater_module
    from sealgate.errors import OtaFormatError
    from sealgate.ota.signer import sign_package

    key = make_ota_key(tmp_path / "keys", "release")
    stranger = make_ota_key(tmp_path / "keys", "stranger")
    images = write_images(tmp_path / "factory", b"v1", {"boot": 8192, "system": 8192})
    assert main(init_args(tmp_path / "phone", images, key.cert_path)) == 0
    unsigned = tmp_path / "unsigned.zip"
    with zipfile.ZipFile(unsigned, "w") as archive:
        archive.writestr("payload.bin", b"CrAU stand-in")
    packages = {}
    for name, signer in (("good", key), ("stranger", stranger)):
        packages[name] = tmp_path / f"{name}.zip"
        sign_package(unsigned, packages[name], signer.signer)
    written = write_images(tmp_path / "v2", b"v2", {"system": 8192})
    behaviour: dict[str, object] = {"metadata": Meta(), "fail": None}

    def fake_apply(payload: Path, target: Path, **options: object) -> ApplyResult:
        assert options["source_dir"] is not None and options["public_keys"]
        (target / "system.img").write_bytes((written / "system.img").read_bytes())
        if behaviour["fail"]:
            raise OtaFormatError(str(behaviour["fail"]))
        return ApplyResult(target, max_timestamp=2**40)

    monkeypatch.setattr(updater_module, "read_package_metadata", lambda path: behaviour["metadata"])
    monkeypatch.setattr(updater_module, "entry_data_range", lambda path, name: (0, 13))
    monkeypatch.setattr(updater_module, "_payload_properties", lambda path: PayloadProperties(b"", 0, b"", 0))
    monkeypatch.setattr(updater_module, "apply_payload", fake_apply)
    return {"phone": tmp_path / "phone", "packages": packages, "behaviour": behaviour, "images": images,
            "written": written}  # fmt: skip


def test_apply_writes_the_inactive_slot_and_keeps_untouched_partitions(gate: dict[str, object]) -> None:
    phone, packages, images, written = gate["phone"], gate["packages"], gate["images"], gate["written"]
    assert isinstance(phone, Path) and isinstance(packages, dict) and isinstance(images, Path)
    assert isinstance(written, Path)
    with Updater.open(phone) as updater:
        decision = updater.apply(packages["good"])
        assert (decision.accepted, decision.code) == (True, "UPDATE"), decision
        slot_b = updater.slot_directory("b")
        assert slot_b is not None
        assert (slot_b / "system.img").read_bytes() == (written / "system.img").read_bytes()
        assert (slot_b / "boot.img").read_bytes() == (images / "boot.img").read_bytes()  # copied from slot a
        state = updater.status()
        assert (state.current_slot, state.active_slot) == ("a", "b")
        assert state.slot("b").build is not None and state.slot("b").build.fingerprint == FP2
    assert sorted(p.name for p in (phone / "slots").iterdir() if p.name.startswith(".staging")) == []


@pytest.mark.parametrize("case", ["stranger", "payload", "rules", "commit", "concurrent"])
def test_apply_refusals_and_failures_change_nothing(
    gate: dict[str, object], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone, packages, behaviour = gate["phone"], gate["packages"], gate["behaviour"]
    assert isinstance(phone, Path) and isinstance(packages, dict) and isinstance(behaviour, dict)
    before = snapshot(phone)
    with Updater.open(phone) as updater:
        if case == "stranger":
            assert updater.apply(packages["stranger"]).code == "NOT_VERIFIED"
        elif case == "payload":
            behaviour["fail"] = "the payload signature does not verify"
            decision = updater.apply(packages["good"])
            assert decision.code == "PAYLOAD_REFUSED" and "signature" in decision.reason
        elif case == "rules":
            behaviour["metadata"] = Meta(pre_device=["walleye"])
            assert updater.apply(packages["good"]).code == "WRONG_DEVICE"
        elif case == "concurrent":
            import sealgate.device.updater as updater_module
            from sealgate.device.state import DeviceState

            real_apply = updater_module.apply_payload  # the stand-in the fixture installed

            def racing(payload: Path, target: Path, **options: object) -> ApplyResult:
                result = real_apply(payload, target, **options)
                other = DeviceState.open(phone)  # another process boots the device meanwhile, say
                current = other.ota_state()
                assert current is not None
                with other.transaction() as writer:
                    writer.put_ota_state(dataclasses.replace(current, rollback_index=current.rollback_index + 1))
                other.close()
                return result

            monkeypatch.setattr(updater_module, "apply_payload", racing)
            decision = updater.apply(packages["good"])
            assert decision.code == "CONCURRENT_CHANGE", decision
            before = {k: v for k, v in before.items() if k != "device.db"}
            after = {k: v for k, v in snapshot(phone).items() if k != "device.db"}
            assert after == before  # the slots as they were: the staged update was thrown away
            return
        else:
            from sealgate.device.state import DeviceState

            def broken(self: DeviceState, state: OtaState) -> None:
                raise DeviceError("the disk is full")

            monkeypatch.setattr(DeviceState, "put_ota_state", broken)
            with pytest.raises(DeviceError, match="disk is full"):
                updater.apply(packages["good"])
    assert snapshot(phone) == before


def test_text_output_for_people(tmp_path: Path, ota_key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = write_images(tmp_path / "factory", b"v1", {"boot": 4096})
    assert main(init_args(tmp_path / "phone", images, ota_key)) == 0
    capsys.readouterr()
    assert main(["device", "ota", "status", str(tmp_path / "phone")]) == 0
    out = capsys.readouterr().out
    assert "running slot a" in out and FP1 in out and "(empty)" in out
    assert main(["device", "ota", "boot", str(tmp_path / "phone")]) == 0
    assert capsys.readouterr().out.startswith("BOOTED: booted slot a")
    assert main(["device", "ota", "boot", str(tmp_path / "phone"), "--fail"]) == 1
    assert "NOTHING_TO_FAIL" in capsys.readouterr().out


def test_a_complete_partial_file_is_checked_without_fetching(tmp_path: Path) -> None:
    """A run that received every byte but stopped before the check: the next run only checks."""
    with range_server({"full.zip": PAYLOAD}) as server:
        server.faults.truncate_next = 1000
        download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        (tmp_path / f"{DIGEST}.zip.part").write_bytes(PAYLOAD)
        result = download(server.base + "full.zip", tmp_path, size=len(PAYLOAD), sha256=DIGEST)
        assert server.faults.ranges == [None]  # no second request
    assert (result.ok, result.code, result.received) == (True, "RESUMED", 0)
    assert result.path is not None and result.path.read_bytes() == PAYLOAD
