"""Scenario suite of the device's OS updater, end to end with the real pipeline: partition images -> payload writer ->
payload signer -> A/B package builder -> `ota sign`'s whole-file signature -> channel file -> loopback HTTP server
-> `sealgate device ota check / download / apply / boot`.

Every refusal is checked to leave both slots' files and the device database byte for byte as they were."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ota_device_tools import OtaKey, RangeServer, make_ota_key, range_server, require_signapk, snapshot, write_images
from sealgate.avb.vbmeta import build_vbmeta
from sealgate.cli.main import main
from sealgate.device import Device
from sealgate.device.updater import Updater
from sealgate.ota.channel import Channel, ChannelBuild, OtaFile
from sealgate.ota.metadata import ab_metadata
from sealgate.ota.package import build_ab_package, entry_data_range
from sealgate.ota.payload.signer import sign_payload
from sealgate.ota.payload.writer import write_delta_payload, write_full_payload
from sealgate.ota.signer import sign_package

DEVICE = "sargo"
SAMPLE_APK = Path(__file__).resolve().parent.parent / "src" / "sealgate" / "samples" / "hello-signed.apk"
SIZES = {"boot": 3 * 4096, "system": 12 * 4096, "vendor": 5 * 4096}  # whole blocks, as partitions are


def fingerprint(n: int) -> str:
    return f"google/sargo/sargo:14/AP1A.{n}/100{n}:user/release-keys"


@dataclass(frozen=True)
class Release:
    """One build: its images and identity."""

    n: int
    images: Path
    timestamp: int
    spl: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.n)


@dataclass
class Kit:
    work: Path
    release: OtaKey
    stranger: OtaKey
    builds: dict[int, Release]

    def package(
        self,
        name: str,
        target: Release,
        *,
        source: Release | None = None,
        key: OtaKey | None = None,
        device: str = DEVICE,
        pre_build: str | None = None,
        timestamp: int | None = None,
        spl: str | None = None,
        downgrade: bool = False,
        wipe: bool = False,
        max_timestamp: int | None = None,
    ) -> Path:
        """A signed A/B OTA package made by the real pipeline (full, or incremental from `source`)."""
        signer = (key or self.release).signer
        work = self.work / "build" / name
        work.mkdir(parents=True)
        images = {image.stem: image for image in sorted(target.images.glob("*.img"))}
        payload = work / "payload.bin"
        unsigned = work / "payload-unsigned.bin"
        # releasetools' max_timestamp: the target's build time, or the source's for a downgrade package.
        post_timestamp = timestamp if timestamp is not None else target.timestamp
        if max_timestamp is None:
            max_timestamp = source.timestamp if downgrade and source is not None else post_timestamp
        if source is None:
            write_full_payload(images, unsigned, max_timestamp=max_timestamp)
        else:
            source_images = {i.stem: i for i in sorted(source.images.glob("*.img"))}
            write_delta_payload(source_images, images, unsigned, max_timestamp=max_timestamp)
        properties = sign_payload(unsigned, payload, signer)
        (work / "payload_properties.txt").write_text(properties.to_text())
        pre = pre_build if pre_build is not None else (source.fingerprint if source is not None else None)
        metadata = ab_metadata(
            device=device,
            post_build=target.fingerprint,
            post_build_incremental=f"100{target.n}",
            post_timestamp=post_timestamp,
            post_security_patch_level=spl or target.spl,
            pre_build=[pre] if pre else None,
            pre_build_incremental=pre.split("/")[4].split(":")[0] if pre else None,
            downgrade=downgrade,
            wipe=wipe,
        )
        package = work / "unsigned.zip"
        build_ab_package(
            package, payload=payload, payload_properties=work / "payload_properties.txt", metadata=metadata
        )
        out = self.work / "packages" / f"{name}.zip"
        out.parent.mkdir(exist_ok=True)
        sign_package(package, out, signer)
        return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    work = tmp_path_factory.mktemp("ota-device")
    builds = {
        n: Release(n, write_images(work / f"images-{n}", f"build{n}".encode(), SIZES), 1_700_000_000 + n * 1000, spl)
        for n, spl in ((1, "2024-03-05"), (2, "2024-04-05"), (3, "2024-05-05"))
    }
    # Build 2 changes only part of system and leaves boot alone, so an incremental has SOURCE_COPY work to do.
    for name in ("boot", "vendor"):
        (builds[2].images / f"{name}.img").write_bytes((builds[1].images / f"{name}.img").read_bytes())
    system = bytearray((builds[1].images / "system.img").read_bytes())
    system[4096 * 3 : 4096 * 4] = b"\x42" * 4096
    (builds[2].images / "system.img").write_bytes(bytes(system))
    _add_vbmeta(builds)
    keys = work / "keys"
    return Kit(work, make_ota_key(keys, "release"), make_ota_key(keys, "stranger", "ec"), builds)


#: The vbmeta rollback index of each build: build 3 is newer but carries a lower index than build 2.
ROLLBACK_INDEX = {1: 1, 2: 3, 3: 0}


def _add_vbmeta(builds: dict[int, Release]) -> None:
    """A vbmeta.img in every build (external/avb's format, written by sealgate.avb)."""
    for n, release in builds.items():
        (release.images / "vbmeta.img").write_bytes(
            build_vbmeta([], None, rollback_index=ROLLBACK_INDEX[n], padding_size=4096)
        )


@pytest.fixture(scope="module")
def packages(kit: Kit) -> dict[str, Path]:
    b = kit.builds
    return {
        "full-2": kit.package("full-2", b[2]),
        "inc-1-2": kit.package("inc-1-2", b[2], source=b[1]),
        "full-3": kit.package("full-3", b[3]),
        "wrong-device": kit.package("wrong-device", b[2], device="walleye"),
        "pre-build-3": kit.package("pre-build-3", b[2], source=b[1], pre_build=fingerprint(3)),
        "older": kit.package("older", b[2], timestamp=b[1].timestamp - 1),
        "older-spl": kit.package("older-spl", b[2], spl="2024-01-05"),
        "downgrade-wipe": kit.package("downgrade-wipe", b[2], source=b[1], timestamp=1, downgrade=True, wipe=True),
        "stranger": kit.package("stranger", b[2], key=kit.stranger),
        "stale-payload": kit.package("stale-payload", b[2], max_timestamp=b[1].timestamp - 1),
    }


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(["device", "ota", *args, "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out)


@pytest.fixture
def phone(tmp_path: Path, kit: Kit) -> Path:
    directory = tmp_path / "phone"
    release = kit.builds[1]
    status = main(
        ["device", "init", str(directory), "--device-name", DEVICE, "--build-fingerprint", release.fingerprint,
         "--build-timestamp", str(release.timestamp), "--spl", release.spl, "--otacerts", str(kit.release.cert_path),
         "--images", str(release.images), "--boot-tries", "1", "--rollback-index", "1"]
    )  # fmt: skip
    assert status == 0
    return directory


def slot_images(phone: Path, slot: str) -> dict[str, bytes]:
    with Updater.open(phone) as updater:
        directory = updater.slot_directory(slot)
    assert directory is not None
    return {path.stem: path.read_bytes() for path in sorted(directory.glob("*.img"))}


def images_of(release: Release) -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in sorted(release.images.glob("*.img"))}


def refused(capsys: pytest.CaptureFixture[str], phone: Path, package: Path, code: str) -> None:
    before = snapshot(phone)
    status, document = run(capsys, "apply", str(phone), str(package))
    assert (status, document["accepted"], document["code"]) == (1, False, code), document
    assert snapshot(phone) == before


# --- genuine updates ---


def test_genuine_full_update(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before_a = slot_images(phone, "a")
    status, document = run(capsys, "apply", str(phone), str(packages["full-2"]))
    assert (status, document["accepted"], document["code"]) == (0, True, "UPDATE"), document
    assert slot_images(phone, "b") == images_of(kit.builds[2])
    assert slot_images(phone, "a") == before_a
    status, state = run(capsys, "status", str(phone))
    assert (state["current_slot"], state["active_slot"]) == ("a", "b")
    status, outcome = run(capsys, "boot", str(phone))
    assert (status, outcome["code"], outcome["booted_slot"]) == (0, "BOOT_SUCCESSFUL", "b")
    status, state = run(capsys, "status", str(phone))
    assert state["installed"]["fingerprint"] == kit.builds[2].fingerprint  # type: ignore[index]


def test_genuine_incremental_update(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    full_size = packages["full-2"].stat().st_size
    assert packages["inc-1-2"].stat().st_size < full_size  # SOURCE_COPY carries no data
    status, document = run(capsys, "apply", str(phone), str(packages["inc-1-2"]))
    assert (status, document["code"]) == (0, "UPDATE"), document
    assert slot_images(phone, "b") == images_of(kit.builds[2])


# --- refusals: nothing changes ---


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("wrong-device", "WRONG_DEVICE"),
        ("pre-build-3", "PRE_BUILD_MISMATCH"),
        ("older", "TIMESTAMP_DOWNGRADE"),
        ("older-spl", "SPL_DOWNGRADE"),
        ("stranger", "NOT_VERIFIED"),
    ],
)
def test_refusals_leave_the_device_as_it_was(
    phone: Path, packages: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str, code: str
) -> None:
    refused(capsys, phone, packages[name], code)


def test_tampered_payload_is_refused_even_when_the_package_is_re_signed(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The whole-file signature verifies (re-signed by the release key), but the payload's own signature does not."""
    data = bytearray(packages["full-2"].read_bytes())
    offset, size = entry_data_range(packages["full-2"], "payload.bin")
    data[offset + size - 300] ^= 0x01  # inside the payload's data blobs
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(bytes(data))
    resigned = tmp_path / "resigned.zip"
    sign_package(tampered, resigned, kit.release.signer)
    refused(capsys, phone, resigned, "PAYLOAD_REFUSED")


def test_a_payload_older_than_the_running_build_is_refused(
    phone: Path, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """update_engine's ValidateManifest: the signed payload's max_timestamp is older than ro.build.date.utc, even
    though the package metadata says a newer build; the slots and database stay as they were."""
    refused(capsys, phone, packages["stale-payload"], "PAYLOAD_TIMESTAMP")


def test_a_package_that_is_not_a_package_is_refused(
    phone: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    refused(capsys, phone, junk, "NOT_VERIFIED")


def test_downgrade_allowed_with_downgrade_and_wipe(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with Device.open(phone) as device:
        assert device.install(SAMPLE_APK).accepted  # an app in /data, which the downgrade wipes
    status, document = run(capsys, "apply", str(phone), str(packages["downgrade-wipe"]))
    assert (status, document["code"], document["wipe"]) == (0, "DOWNGRADE_WITH_WIPE", True), document
    with Device.open(phone) as device:
        assert [p.package for p in device.packages()] == ["org.sealgate.sample"]  # applied, not yet booted
    status, outcome = run(capsys, "boot", str(phone))
    assert (status, outcome["code"], outcome["wiped"]) == (0, "BOOT_SUCCESSFUL", True)
    with Device.open(phone) as device:
        assert device.packages() == []
    status, state = run(capsys, "status", str(phone))
    assert state["installed"]["timestamp"] == 1  # type: ignore[index]


def test_a_pending_update_refuses_another(
    phone: Path, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "apply", str(phone), str(packages["full-2"]))[0] == 0
    refused(capsys, phone, packages["full-3"], "UPDATE_PENDING_REBOOT")


# --- boot, rollback and the rollback index ---


def test_failed_boot_rolls_back_to_the_old_slot(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before_a = slot_images(phone, "a")
    assert run(capsys, "apply", str(phone), str(packages["full-2"]))[0] == 0
    status, outcome = run(capsys, "boot", str(phone), "--fail")
    assert (status, outcome["code"], outcome["booted_slot"]) == (1, "ROLLED_BACK", "a")
    status, state = run(capsys, "status", str(phone))
    assert (state["current_slot"], state["active_slot"], state["rollback_index"]) == ("a", "a", 1)
    assert state["installed"]["fingerprint"] == kit.builds[1].fingerprint  # type: ignore[index]
    assert [slot["status"] for slot in state["slots"]] == ["successful", "unbootable"]  # type: ignore[union-attr]
    assert slot_images(phone, "a") == before_a
    # The device keeps working: the same update can be applied again and boot.
    assert run(capsys, "apply", str(phone), str(packages["full-2"]))[0] == 0
    assert run(capsys, "boot", str(phone))[1]["code"] == "BOOT_SUCCESSFUL"


# --- check and download from a channel over loopback HTTP ---


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ota_file(path: Path, url: str, pre_build: str | None = None) -> OtaFile:
    return OtaFile(url, path.stat().st_size, sha256(path), pre_build)


@pytest.fixture
def channel_server(kit: Kit, packages: dict[str, Path]) -> Iterator[RangeServer]:
    b2 = kit.builds[2]
    build = ChannelBuild(
        device=DEVICE,
        channel="stable",
        fingerprint=b2.fingerprint,
        incremental="1002",
        timestamp=b2.timestamp,
        security_patch_level=b2.spl,
        full=ota_file(packages["full-2"], "packages/full-2.zip"),
        incrementals=[ota_file(packages["inc-1-2"], "packages/inc-1-2.zip", kit.builds[1].fingerprint)],
    )
    channel = Channel(DEVICE, "stable", [build])
    files = {
        "ota/sargo/stable.json": channel.to_bytes(),
        "ota/sargo/packages/full-2.zip": packages["full-2"].read_bytes(),
        "ota/sargo/packages/inc-1-2.zip": packages["inc-1-2"].read_bytes(),
    }
    with range_server(files) as server:
        yield server


def test_check_download_apply_boot_from_a_channel(
    phone: Path, kit: Kit, channel_server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = channel_server.base + "ota/sargo/stable.json"
    status, offer = run(capsys, "check", str(phone), "--channel", url)
    assert (status, offer["code"]) == (0, "INCREMENTAL")
    assert offer["update"]["url"] == channel_server.base + "ota/sargo/packages/inc-1-2.zip"  # type: ignore[index]
    status, document = run(capsys, "download", str(phone), "--channel", url)
    assert status == 0 and document["download"]["code"] == "DOWNLOADED"  # type: ignore[index]
    status, decision = run(capsys, "apply", str(phone))
    assert (status, decision["code"]) == (0, "UPDATE")
    assert run(capsys, "boot", str(phone))[0] == 0
    status, offer = run(capsys, "check", str(phone), "--channel", url)
    assert (status, offer["code"], offer["up_to_date"]) == (0, "UP_TO_DATE", True)


def test_truncated_download_is_resumed(
    phone: Path, channel_server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = channel_server.base + "ota/sargo/stable.json"
    before = snapshot(phone)
    keep = len(channel_server.files["ota/sargo/packages/inc-1-2.zip"]) // 2
    channel_server.faults.truncate_path["ota/sargo/packages/inc-1-2.zip"] = keep
    status, document = run(capsys, "download", str(phone), "--channel", url)
    assert (status, document["download"]["code"]) == (1, "INTERRUPTED")  # type: ignore[index]
    assert snapshot(phone) == before
    status, document = run(capsys, "download", str(phone), "--channel", url)
    result = document["download"]
    assert (status, result["code"], result["resumed_from"]) == (0, "RESUMED", keep)  # type: ignore[index]
    assert channel_server.faults.ranges[-1] == f"bytes={keep}-"
    assert run(capsys, "apply", str(phone))[0] == 0


def test_corrupted_download_is_refused_and_changes_nothing(
    phone: Path, channel_server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = channel_server.base + "ota/sargo/stable.json"
    before = snapshot(phone)
    channel_server.files["ota/sargo/packages/inc-1-2.zip"] = (
        b"X" + channel_server.files["ota/sargo/packages/inc-1-2.zip"][1:]
    )
    status, document = run(capsys, "download", str(phone), "--channel", url)
    assert (status, document["download"]["code"]) == (1, "CORRUPTED")  # type: ignore[index]
    assert snapshot(phone) == before
    assert list((phone / "downloads").glob("*.zip*")) == []
    assert main(["device", "ota", "apply", str(phone)]) == 2  # nothing downloaded to apply


def test_package_entries_are_where_update_engine_reads_them(packages: dict[str, Path]) -> None:
    with zipfile.ZipFile(packages["full-2"]) as archive:
        info = archive.getinfo("payload.bin")
        assert info.compress_type == zipfile.ZIP_STORED
        offset, size = entry_data_range(packages["full-2"], "payload.bin")
        assert size == info.file_size
        with open(packages["full-2"], "rb") as handle:
            handle.seek(offset)
            assert handle.read(4) == b"CrAU"


def test_rollback_index_moves_forward_only_after_a_successful_boot(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "apply", str(phone), str(packages["full-2"]))[0] == 0
    assert run(capsys, "status", str(phone))[1]["rollback_index"] == 1  # applied, not booted: unchanged
    status, outcome = run(capsys, "boot", str(phone), "--fail")
    assert (status, outcome["code"]) == (1, "ROLLED_BACK")
    assert run(capsys, "status", str(phone))[1]["rollback_index"] == 1  # a failed boot never raises it
    assert run(capsys, "apply", str(phone), str(packages["full-2"]))[0] == 0
    status, outcome = run(capsys, "boot", str(phone))
    assert (status, outcome["code"]) == (0, "BOOT_SUCCESSFUL")
    assert run(capsys, "status", str(phone))[1]["rollback_index"] == ROLLBACK_INDEX[2]
    # Build 3 is newer (the OTA rules accept it) but its vbmeta's rollback index is below the stored one.
    status, decision = run(capsys, "apply", str(phone), str(packages["full-3"]))
    assert (status, decision["code"]) == (0, "UPDATE")
    status, outcome = run(capsys, "boot", str(phone))
    assert (status, outcome["code"], outcome["booted_slot"]) == (1, "ROLLBACK_INDEX", "b")
    status, state = run(capsys, "status", str(phone))
    assert (state["current_slot"], state["rollback_index"]) == ("b", ROLLBACK_INDEX[2])
    assert state["installed"]["fingerprint"] == kit.builds[2].fingerprint  # type: ignore[index]


def test_incremental_onto_a_modified_slot_is_refused(
    phone: Path, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An incremental's source hashes must match the running slot (update_engine's SOURCE_COPY check)."""
    with Updater.open(phone) as updater:
        slot_a = updater.slot_directory("a")
    assert slot_a is not None
    system = slot_a / "system.img"
    system.chmod(0o644)
    data = bytearray(system.read_bytes())
    data[10] ^= 0xFF  # a block the incremental copies from the source
    system.write_bytes(bytes(data))
    refused(capsys, phone, packages["inc-1-2"], "PAYLOAD_REFUSED")


def test_a_package_signed_by_debian_signapk_is_applied(
    phone: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`signapk -w` (AOSP's signer, Debian's build) rewrites the archive; the device still finds and applies it."""
    signapk = require_signapk()
    signed = tmp_path / "by-signapk.zip"
    unsigned = kit.work / "build" / "full-2" / "unsigned.zip"
    subprocess.run([*signapk, "-w", str(kit.release.cert_path), str(kit.release.pk8_path),
                    str(unsigned), str(signed)], check=True, capture_output=True, timeout=120)  # fmt: skip
    status, document = run(capsys, "apply", str(phone), str(signed))
    assert (status, document["code"]) == (0, "UPDATE"), document
    assert slot_images(phone, "b") == images_of(kit.builds[2])


def test_otacerts_zip_trusts_every_certificate_in_it(
    tmp_path: Path, kit: Kit, packages: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The device's trust store can be an otacerts.zip, as /system/etc/security/otacerts.zip is."""
    otacerts = tmp_path / "otacerts.zip"
    with zipfile.ZipFile(otacerts, "w") as archive:
        archive.write(kit.stranger.cert_path, "stranger.x509.pem")
    release = kit.builds[1]
    phone = tmp_path / "phone"
    assert main(
        ["device", "init", str(phone), "--device-name", DEVICE, "--build-fingerprint", release.fingerprint,
         "--build-timestamp", str(release.timestamp), "--spl", release.spl, "--otacerts", str(otacerts),
         "--images", str(release.images)]
    ) == 0  # fmt: skip
    capsys.readouterr()
    refused(capsys, phone, packages["full-2"], "NOT_VERIFIED")  # the release key is not in this otacerts.zip
    status, document = run(capsys, "apply", str(phone), str(packages["stranger"]))
    assert (status, document["code"]) == (0, "UPDATE"), document
