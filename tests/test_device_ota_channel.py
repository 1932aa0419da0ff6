"""`device ota check` and `device ota download` against real channel files (sealgate.ota.channel's format) served
over loopback HTTP with Range support: which OTA is picked, URL resolution, resume, corruption, bad channels."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ota_device_tools import RangeServer, make_ota_key, range_server, snapshot, write_images
from sealgate.cli.main import main
from sealgate.ota.channel import Channel, ChannelBuild, OtaFile

DEVICE = "sargo"
FP = {n: f"google/sargo/sargo:14/AP1A.{n}/100{n}:user/release-keys" for n in (1, 2, 3)}
FULL = bytes(range(256)) * 2000
INCREMENTAL = b"incremental " * 5000


def _file(data: bytes, url: str, pre_build: str | None = None) -> OtaFile:
    return OtaFile(url, len(data), hashlib.sha256(data).hexdigest(), pre_build)


def channel_bytes(*, incremental_from: str = FP[1], device: str = DEVICE) -> bytes:
    newest = ChannelBuild(
        device=device,
        channel="stable",
        fingerprint=FP[3],
        incremental="1003",
        timestamp=1_700_003_000,
        security_patch_level="2024-05-05",
        full=_file(FULL, "packages/full-3.zip"),
        incrementals=[_file(INCREMENTAL, "packages/inc-3.zip", incremental_from)],
    )
    older = ChannelBuild(
        device=device,
        channel="stable",
        fingerprint=FP[2],
        incremental="1002",
        timestamp=1_700_002_000,
        security_patch_level="2024-04-05",
        full=_file(FULL[:1000], "packages/full-2.zip"),
    )
    return Channel(device, "stable", [newest, older]).to_bytes()


@pytest.fixture
def server() -> Iterator[RangeServer]:
    files = {
        "ota/sargo/stable.json": channel_bytes(),
        "ota/sargo/other.json": channel_bytes(incremental_from=FP[2]),
        "ota/sargo/walleye.json": channel_bytes(device="walleye"),
        "ota/sargo/broken.json": b'{"format": "sealgate-ota-channel", "format": 2}',
        "ota/sargo/packages/full-3.zip": FULL,
        "ota/sargo/packages/inc-3.zip": INCREMENTAL,
    }
    with range_server(files) as running:
        yield running


@pytest.fixture
def phone(tmp_path: Path) -> Path:
    cert = make_ota_key(tmp_path / "keys", "release").cert_path
    images = write_images(tmp_path / "factory", b"v1", {"boot": 4096})
    directory = tmp_path / "phone"
    status = main(
        ["device", "init", str(directory), "--device-name", DEVICE, "--build-fingerprint", FP[1],
         "--build-timestamp", "1700001000", "--spl", "2024-03-05", "--otacerts", str(cert), "--images", str(images)]
    )  # fmt: skip
    assert status == 0
    return directory


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(["device", "ota", *args, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_check_picks_the_incremental_from_the_installed_build(
    phone: Path, server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(phone)
    status, offer = run(capsys, "check", str(phone), "--channel", server.base + "ota/sargo/stable.json")
    assert (status, offer["code"], offer["up_to_date"]) == (0, "INCREMENTAL", False)
    update = offer["update"]
    assert isinstance(update, dict)
    assert update["url"] == server.base + "ota/sargo/packages/inc-3.zip"  # resolved against the channel's URL
    assert (update["fingerprint"], update["kind"], update["pre_build"]) == (FP[3], "incremental", FP[1])
    assert snapshot(phone) == before  # check changes nothing


def test_check_falls_back_to_the_full_ota(phone: Path, server: RangeServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, offer = run(capsys, "check", str(phone), "--channel", server.base + "ota/sargo/other.json")
    assert (status, offer["code"]) == (0, "FULL")
    assert offer["update"]["url"].endswith("packages/full-3.zip")  # type: ignore[index]


def test_check_another_devices_channel_and_a_broken_one(
    phone: Path, server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, offer = run(capsys, "check", str(phone), "--channel", server.base + "ota/sargo/walleye.json")
    assert (status, offer["code"]) == (1, "NO_BUILD_FOR_DEVICE")
    status, offer = run(capsys, "check", str(phone), "--channel", server.base + "ota/sargo/broken.json")
    assert (status, offer["code"]) == (1, "CHANNEL_UNAVAILABLE")
    status, offer = run(capsys, "check", str(phone), "--channel", server.base + "ota/sargo/missing.json")
    assert (status, offer["code"]) == (1, "CHANNEL_UNAVAILABLE") and "404" in str(offer["reason"])
    assert main(["device", "ota", "check", str(phone)]) == 2  # no channel given, none recorded


def test_check_reads_a_channel_file_on_disk(phone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    channel = tmp_path / "mirror" / "stable.json"
    channel.parent.mkdir()
    channel.write_bytes(channel_bytes())
    status, offer = run(capsys, "check", str(phone), "--channel", str(channel))
    assert (status, offer["code"]) == (0, "INCREMENTAL")
    assert offer["update"]["url"] == str(tmp_path / "mirror" / "packages" / "inc-3.zip")  # type: ignore[index]


def test_download_resumes_a_truncated_transfer(
    phone: Path, server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.base + "ota/sargo/stable.json"
    before = snapshot(phone)
    server.faults.truncate_path["ota/sargo/packages/inc-3.zip"] = 12_345
    status, document = run(capsys, "download", str(phone), "--channel", url)
    assert (status, document["download"]["code"]) == (1, "INTERRUPTED")  # type: ignore[index]
    assert snapshot(phone) == before  # an interrupted download changes no slot and no state
    partial = next((phone / "downloads").glob("*.zip.part"))
    assert partial.read_bytes() == INCREMENTAL[:12_345]
    status, document = run(capsys, "download", str(phone), "--channel", url)
    result = document["download"]
    assert isinstance(result, dict)
    assert (status, result["code"], result["resumed_from"]) == (0, "RESUMED", 12_345)
    assert server.faults.ranges[-1] == "bytes=12345-"
    assert Path(str(result["path"])).read_bytes() == INCREMENTAL
    pending = json.loads((phone / "downloads" / "update.json").read_text())
    assert (pending["fingerprint"], pending["kind"]) == (FP[3], "incremental")
    status, document = run(capsys, "download", str(phone), "--channel", url)
    assert document["download"]["code"] == "ALREADY_DOWNLOADED"  # type: ignore[index]


def test_download_of_a_corrupted_package_keeps_nothing(
    phone: Path, server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.base + "ota/sargo/stable.json"
    server.files["ota/sargo/packages/inc-3.zip"] = INCREMENTAL[:-1] + b"!"
    before = snapshot(phone)
    status, document = run(capsys, "download", str(phone), "--channel", url)
    assert (status, document["download"]["code"]) == (1, "CORRUPTED")  # type: ignore[index]
    assert snapshot(phone) == before
    assert list((phone / "downloads").glob("*.zip*")) == []
