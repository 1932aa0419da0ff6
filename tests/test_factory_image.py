"""The factory image: Pixel/CalyxOS layout, a flash-all.sh that `sh -n` accepts and that flashes what the archive
holds, SHA256SUMS that `sha256sum -c` accepts, and partition images carried unchanged."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import require_tool
from release_tools import role_signer
from sealgate.avb.descriptors import PropertyDescriptor
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.vbmeta import build_vbmeta
from sealgate.errors import ReleaseError
from sealgate.release.factory_image import build_factory_image

AVB_SIGNER = role_signer("avb")
PKMD = public_key_metadata(AVB_SIGNER.public_key)
VBMETA = build_vbmeta([PropertyDescriptor("com.android.build.boot.os_version", b"14")], AVB_SIGNER, padding_size=4096)
IMAGES = {"boot.img": b"ANDROID!" + bytes(4088), "system.img": bytes(range(256)) * 64, "vbmeta.img": VBMETA}


def _target_files(path: Path, *, radio: bool = True, tags: str = "release-keys") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "SYSTEM/build.prop", f"ro.build.id=AP2A.240805.005\nro.product.device=oriole\nro.build.tags={tags}\n"
        )
        for name, data in IMAGES.items():
            archive.writestr(f"IMAGES/{name}", data)
        archive.writestr("IMAGES/system.map", "not an image")
        archive.writestr(
            "OTA/android-info.txt",
            "require board=oriole\nrequire version-bootloader=slider-1.3-11\nrequire version-baseband=g5123b-1\n",
        )
        archive.writestr("RADIO/bootloader.img", b"bootloader " * 100)
        if radio:
            archive.writestr("RADIO/radio.img", b"radio " * 100)
    return path


def _extract(archive_path: Path, into: Path) -> None:
    with zipfile.ZipFile(archive_path) as archive:
        assert archive.testzip() is None
        archive.extractall(into)
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if mode:
                (into / info.filename).chmod(mode & 0o777)


def test_factory_image_layout_script_and_checksums(tmp_path: Path) -> None:
    source = _target_files(tmp_path / "signed-target_files.zip")
    out = tmp_path / "oriole-ap2a.240805.005-factory.zip"
    result = build_factory_image(source, out, avb_custom_key=PKMD)
    assert (result.device, result.build, result.directory) == ("oriole", "ap2a.240805.005", "oriole-ap2a.240805.005")
    _extract(out, tmp_path / "x")
    top = tmp_path / "x" / result.directory
    assert sorted(path.name for path in top.iterdir()) == sorted(
        [
            "image-oriole-ap2a.240805.005.zip",
            "bootloader-oriole-slider-1.3-11.img",
            "radio-oriole-g5123b-1.img",
            "avb_custom_key.img",
            "flash-all.sh",
            "flash-base.sh",
            "SHA256SUMS",
        ]
    )
    with zipfile.ZipFile(top / "image-oriole-ap2a.240805.005.zip") as images:
        assert sorted(images.namelist()) == ["android-info.txt", *sorted(IMAGES)]
        for name, data in IMAGES.items():
            assert images.read(name) == data
    assert (top / "bootloader-oriole-slider-1.3-11.img").read_bytes() == b"bootloader " * 100
    assert (top / "avb_custom_key.img").read_bytes() == PKMD
    for script in ("flash-all.sh", "flash-base.sh"):
        check = subprocess.run(["sh", "-n", str(top / script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        assert (top / script).stat().st_mode & 0o111
    sums = subprocess.run([require_tool("sha256sum"), "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") == 6
    script = (top / "flash-all.sh").read_text()
    assert script.count("fastboot flash --slot=other bootloader bootloader-oriole-slider-1.3-11.img") == 2
    assert script.count("fastboot flash --slot=other radio radio-oriole-g5123b-1.img") == 2
    assert "fastboot flash avb_custom_key avb_custom_key.img\n" in script
    assert "fastboot --skip-reboot -w update image-oriole-ap2a.240805.005.zip\n" in script
    assert 'grep -q "^product: oriole$"' in script
    base = (top / "flash-base.sh").read_text()
    assert "update" not in base and "bootloader-oriole-slider-1.3-11.img" in base
    # The same inputs give the same archive.
    again = build_factory_image(source, tmp_path / "again.zip", avb_custom_key=PKMD)
    assert (tmp_path / "again.zip").read_bytes() == out.read_bytes() and again.sha256 == result.sha256


def test_flash_all_runs_the_fastboot_commands_in_order(tmp_path: Path) -> None:
    """flash-all.sh against a fake fastboot on PATH that records its arguments (and says it is an oriole)."""
    source = _target_files(tmp_path / "tf.zip", radio=False)
    out = tmp_path / "factory.zip"
    result = build_factory_image(source, out)
    _extract(out, tmp_path / "x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "fastboot.log"
    fake = bin_dir / "fastboot"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = getvar ] && echo "product: oriole" >&2\nexit 0\n')
    fake.chmod(0o755)
    bin_dir.joinpath("sleep").write_text("#!/bin/sh\nexit 0\n")
    bin_dir.joinpath("sleep").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    run = subprocess.run(["sh", str(tmp_path / "x" / result.directory / "flash-all.sh")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert log.read_text().splitlines() == [
        "getvar product",
        "flash --slot=other bootloader bootloader-oriole-slider-1.3-11.img",
        "--set-active=other reboot-bootloader",
        "flash --slot=other bootloader bootloader-oriole-slider-1.3-11.img",
        "--set-active=other reboot-bootloader",
        "erase avb_custom_key",
        "--skip-reboot -w update image-oriole-ap2a.240805.005.zip",
        "reboot-bootloader",
    ]
    # Another device: the script stops before flashing anything.
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "product: raven" >&2\nexit 0\n')
    log.unlink()
    run = subprocess.run(["sh", str(tmp_path / "x" / result.directory / "flash-all.sh")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1 and "for oriole" in run.stderr
    assert log.read_text().splitlines() == ["getvar product"]


def test_factory_image_from_a_directory_of_images(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name, data in IMAGES.items():
        (images / name).write_bytes(data)
    (tmp_path / "bl.img").write_bytes(b"bl")
    out = tmp_path / "f.zip"
    with pytest.raises(ReleaseError, match="name the device and build"):
        build_factory_image(images, out)
    with pytest.raises(ReleaseError, match="may only use"):
        build_factory_image(images, out, device="oriole; rm -rf /", build="b1")
    assert not out.exists()
    result = build_factory_image(images, out, device="oriole", build="b1", bootloader=(tmp_path / "bl.img", "v1"))
    assert set(result.files) == {"image-oriole-b1.zip", "bootloader-oriole-v1.img", "flash-all.sh", "flash-base.sh"}
    assert sorted(result.images) == sorted(IMAGES)


def test_cli_factory_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sealgate.cli.main import main

    source = _target_files(tmp_path / "tf.zip")
    assert main(["release", "factory-image", str(source), str(tmp_path / "f.zip"), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["directory"] == "oriole-ap2a.240805.005" and "flash-all.sh" in line["files"]
    assert main(["release", "factory-image", str(source), str(tmp_path / "g.zip"), "--radio", str(source)]) == 2
    assert main(["release", "factory-image", str(tmp_path), str(tmp_path / "h.zip")]) == 1
    # The keystore's avb key as avb_custom_key: vbmeta is signed by another key, so it is refused.
    from sealgate.custody.keystore import Keystore
    from sealgate.custody.roles import KeySpec

    Keystore.create(tmp_path / "ks", "factory test passphrase", roles=["avb"],
                    key_overrides={"avb": KeySpec.parse("rsa-2048")})  # fmt: skip
    assert (
        main(["release", "factory-image", str(source), str(tmp_path / "k.zip"), "--keystore", str(tmp_path / "ks")])
        == 1
    )
    assert "not signed by the key given as avb_custom_key" in capsys.readouterr().err


def test_zip_writer_switches_to_zip64_past_65535_entries(tmp_path: Path) -> None:
    """Python's zipfile and our strict reader both read the ZIP64 end records the writer adds."""
    import os

    from sealgate.release.zip_writer import ZipWriter
    from sealgate.ziparchive import ZipArchive

    path = tmp_path / "many.zip"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        writer = ZipWriter(fd)
        for index in range(70000):
            writer.add_bytes(f"e/{index}", b"x", deflate=False)
        writer.finish()
    finally:
        os.close(fd)
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == 70000 and archive.read("e/69999") == b"x"
    with ZipArchive.open(path) as ours:
        assert len(ours.entries) == 70000 and not ours.violations
        assert ours.sections.zip64_eocd_offset is not None


def test_factory_image_refuses_test_keys_and_a_foreign_avb_key(tmp_path: Path) -> None:
    out = tmp_path / "f.zip"
    with pytest.raises(ReleaseError, match="not release-keys"):
        build_factory_image(_target_files(tmp_path / "test.zip", tags="test-keys"), out)
    other = public_key_metadata(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    with pytest.raises(ReleaseError, match="not signed by the key given as avb_custom_key"):
        build_factory_image(_target_files(tmp_path / "tf.zip"), out, avb_custom_key=other)
    assert not out.exists() and sorted(path.name for path in tmp_path.iterdir()) == ["test.zip", "tf.zip"]
