"""The factory image: the archive a person flashes with fastboot, laid out as Pixel and CalyxOS factory images are.

Layout (device/common/generate-factory-images-common.sh and img_from_target_files.py are the models):

    <device>-<build>-factory.zip
      <device>-<build>/
        image-<device>-<build>.zip       the partition images (<partition>.img) and android-info.txt, for
                                         `fastboot update`: img_from_target_files' IMAGES/*.img and
                                         OTA/android-info.txt
        bootloader-<device>-<version>.img  when the build has one (RADIO/bootloader.img)
        radio-<device>-<version>.img       when the build has one (RADIO/radio.img)
        avb_custom_key.img               the AVB public key metadata, for `fastboot flash avb_custom_key`
        flash-all.sh                     checks the device, flashes bootloader and radio to the other slot
                                         (twice, so both slots carry them), sets the AVB key, then
                                         `fastboot -w update` the image zip (wiping data)
        flash-base.sh                    the same without the images: firmware and AVB key only
        SHA256SUMS                       `sha256sum -c` format for every other file of the directory

Two checks stop a factory image that a locked device would refuse, or that ships test keys: a target-files package
whose SYSTEM/build.prop says ro.build.tags is anything but release-keys is refused (sign it first), and with an
avb_custom_key the vbmeta.img must be signed by that very key (a locked bootloader with that custom key would
refuse any other).

The bootloader and radio versions come from OTA/android-info.txt ("require version-bootloader=" and
"require version-baseband="), as CalyxOS' release.sh reads them, unless given. Images are copied as their
compressed bytes out of the target-files package (never inflated in memory); the archives are written beside the
output and renamed into place, with the fixed timestamps of `zip_writer`, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.apk.signing.output import AtomicOutput
from sealgate.errors import AvbFormatError, ReleaseError, ZipFormatError
from sealgate.release.build_props import parse_props
from sealgate.release.zip_writer import EXECUTABLE_FILE_ATTRIBUTES, ZipWriter
from sealgate.ziparchive import ZipArchive

ANDROID_INFO = "android-info.txt"
#: Names that end up in shell commands and file names: nothing a shell would interpret.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IMAGE = re.compile(r"^IMAGES/([A-Za-z0-9_.-]+\.img)$")
_CHUNK = 4 * 1024 * 1024
_SLEEP_SECONDS = 5
_MAX_VBMETA = 1024 * 1024


@dataclass
class FactoryImage:
    """What was written: the archive, its directory name and the SHA-256 of every file in it."""

    path: str
    directory: str
    device: str
    build: str
    sha256: str
    images: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "directory": self.directory,
            "device": self.device,
            "build": self.build,
            "sha256": self.sha256,
            "images": self.images,
            "files": self.files,
        }


@dataclass(frozen=True)
class _Firmware:
    kind: str  # "bootloader" or "radio"
    version: str
    path: Path | None = None  # a file given directly
    entry: str | None = None  # or an entry of the target-files package


def build_factory_image(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    device: str | None = None,
    build: str | None = None,
    bootloader: tuple[Path, str] | None = None,
    radio: tuple[Path, str] | None = None,
    avb_custom_key: bytes | None = None,
) -> FactoryImage:
    """Write the factory archive `out` from a signed target-files package or a directory of `<partition>.img`.

    `device` and `build` default to ro.product.device (or android-info's board) and ro.build.id (lower case) of
    the package; `bootloader` and `radio` are (file, version) to use instead of the package's RADIO/ images;
    `avb_custom_key` is avb_pkmd.bin's bytes (`sealgate.avb.keys.public_key_metadata`).
    """
    source_path = Path(source)
    with _Source.open(source_path) as src:
        info = src.android_info()
        device = device or src.prop("ro.product.device") or _require(info, "board")
        build = build or (src.prop("ro.build.id") or "").lower()
        if not device or not build:
            raise ReleaseError("name the device and build (--device, --build): the source does not say them")
        for what, value in (("device", device), ("build", build)):
            if not _SAFE_NAME.match(value):
                raise ReleaseError(f"the {what} name {value!r} may only use letters, digits, '.', '_' and '-'")
        firmware = [
            item
            for item in (
                _firmware("bootloader", bootloader, src, _require(info, "version-bootloader")),
                _firmware("radio", radio, src, _require(info, "version-baseband")),
            )
            if item is not None
        ]
        tags = src.prop("ro.build.tags")
        if tags is not None and tags.split(",") != ["release-keys"]:
            raise ReleaseError(
                f"the build is tagged {tags!r}, not release-keys: sign the target-files package for release first"
            )
        if avb_custom_key is not None:
            src.check_vbmeta_key(avb_custom_key)
        top = f"{device}-{build}"
        image_zip = f"image-{device}-{build}.zip"
        out_path = Path(out)
        result = FactoryImage(os.fspath(out_path), top, device, build, "")
        with (
            AtomicOutput(out_path) as output,
            tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".factory-image-") as work,
        ):
            images_file = Path(work) / image_zip
            result.images = src.write_image_zip(images_file)
            writer = ZipWriter(output.fd)
            files: list[tuple[str, bytes | Path, int]] = [(image_zip, images_file, 0)]
            for item in firmware:
                name = f"{item.kind}-{device}-{item.version}.img"
                files.append((name, src.firmware_file(item, Path(work) / name), 0))
            if avb_custom_key is not None:
                files.append(("avb_custom_key.img", avb_custom_key, 0))
            names = [name for name, _, _ in files]
            files.append(("flash-all.sh", flash_script(device, names, image_zip).encode(), 1))
            files.append(("flash-base.sh", flash_script(device, names, None).encode(), 1))
            for name, content, executable in files:
                attributes = EXECUTABLE_FILE_ATTRIBUTES if executable else 0o100644 << 16
                if isinstance(content, Path):
                    digest = hashlib.sha256()
                    writer.add_file(f"{top}/{name}", content, deflate=False, attributes=attributes, tap=digest.update)
                    result.files[name] = digest.hexdigest()
                else:
                    result.files[name] = hashlib.sha256(content).hexdigest()
                    writer.add_bytes(f"{top}/{name}", content, attributes=attributes)
            sums = "".join(f"{digest}  {name}\n" for name, digest in result.files.items())
            writer.add_bytes(f"{top}/SHA256SUMS", sums.encode())
            writer.finish()
            result.sha256 = _fd_sha256(output.fd)
            output.commit()
    return result


def flash_script(device: str, files: Sequence[str], image_zip: str | None) -> str:
    """flash-all.sh (with `image_zip`) or flash-base.sh (without): POSIX sh, stops at the first failure."""
    lines = [
        "#!/bin/sh",
        f"# Flashes the {device} factory image with fastboot. Written by sealgate; see SHA256SUMS beside it.",
        "set -eu",
        'cd "$(dirname "$0")"',
        "if ! command -v fastboot >/dev/null 2>&1; then",
        '  echo "fastboot is missing: install the Android platform tools" >&2',
        "  exit 1",
        "fi",
        f'if ! fastboot getvar product 2>&1 | grep -q "^product: {device}$"; then',
        f'  echo "this factory image is for {device}; the device connected is another one" >&2',
        "  exit 1",
        "fi",
    ]
    for kind in ("bootloader", "radio"):
        for name in files:
            if name.startswith(f"{kind}-"):
                # Flashed to the other slot and activated, twice: both slots end up with the new firmware.
                for _ in range(2):
                    lines += [
                        f"fastboot flash --slot=other {kind} {name}",
                        "fastboot --set-active=other reboot-bootloader",
                        f"sleep {_SLEEP_SECONDS}",
                    ]
    lines.append("fastboot erase avb_custom_key")
    if "avb_custom_key.img" in files:
        lines.append("fastboot flash avb_custom_key avb_custom_key.img")
    if image_zip is not None:
        lines += [
            f"fastboot --skip-reboot -w update {image_zip}",
            "fastboot reboot-bootloader",
            f"sleep {_SLEEP_SECONDS}",
        ]
    return "\n".join(lines) + "\n"


def _require(info: dict[str, str], key: str) -> str | None:
    return info.get(key)


def _firmware(kind: str, given: tuple[Path, str] | None, src: _Source, version: str | None) -> _Firmware | None:
    if given is not None:
        path, given_version = given
        if not _SAFE_NAME.match(given_version):
            raise ReleaseError(f"the {kind} version {given_version!r} is not a safe file name part")
        return _Firmware(kind, given_version, path=path)
    entry = f"RADIO/{kind}.img"
    if not src.has(entry):
        return None
    if not version or not _SAFE_NAME.match(version):
        raise ReleaseError(f"the package has {entry} but OTA/android-info.txt gives it no usable version")
    return _Firmware(kind, version, entry=entry)


def _fd_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class _Source:
    """A signed target-files package or a directory of images, read the same way."""

    def __init__(self, path: Path, archive: ZipArchive | None) -> None:
        self._path = path
        self._archive = archive
        self._props: dict[str, str] | None = None

    @classmethod
    @contextmanager
    def open(cls, path: Path) -> Iterator[_Source]:
        if path.is_dir():
            yield cls(path, None)
            return
        try:
            archive = ZipArchive.open(path)
        except ZipFormatError as exc:
            raise ReleaseError(f"{path} is neither a directory of images nor a target-files package: {exc}") from exc
        with archive:
            if archive.violations:
                raise ReleaseError(f"{path}: {archive.violations[0].message}")
            yield cls(path, archive)

    def has(self, entry: str) -> bool:
        return self._archive is not None and self._archive.entry(entry) is not None

    def _text(self, entry: str) -> str | None:
        if self._archive is None:
            file = self._path / Path(entry).name
            return file.read_text("utf-8") if entry.endswith(ANDROID_INFO) and file.is_file() else None
        found = self._archive.entry(entry)
        return None if found is None else self._archive.read(found, max_size=16 << 20).decode("utf-8", "replace")

    def prop(self, key: str) -> str | None:
        if self._props is None:
            text = self._text("SYSTEM/build.prop") if self._archive is not None else None
            self._props = parse_props(text) if text is not None else {}
        return self._props.get(key)

    def android_info(self) -> dict[str, str]:
        """`require key=value` lines of android-info.txt (board, version-bootloader, version-baseband)."""
        text = self._text(f"OTA/{ANDROID_INFO}") or ""
        info = {}
        for line in text.splitlines():
            words = line.strip().removeprefix("require ").strip()
            if "=" in words:
                key, value = words.split("=", 1)
                info[key.strip()] = value.strip().split("|")[0]
        return info

    def check_vbmeta_key(self, public_key_metadata: bytes) -> None:
        """vbmeta.img must be signed by the key flashed as avb_custom_key, or the locked device will not boot."""
        from sealgate.avb.keys import encoded_key_digest
        from sealgate.avb.vbmeta import read_vbmeta, verify_vbmeta

        data = self._small_image("vbmeta.img")
        if data is None:
            return
        try:
            image = read_vbmeta(data)
            verdict = verify_vbmeta(image, [public_key_metadata])
        except AvbFormatError as exc:
            raise ReleaseError(f"vbmeta.img cannot be read: {exc}") from exc
        if not verdict.verified:
            raise ReleaseError(
                f"vbmeta.img is not signed by the key given as avb_custom_key (vbmeta's key "
                f"{image.public_key_digest}, avb_custom_key {encoded_key_digest(public_key_metadata)}): a device "
                "locked with that key would refuse to boot it"
            )

    def _small_image(self, name: str) -> bytes | None:
        if self._archive is None:
            path = self._path / name
            if not path.is_file() or path.stat().st_size > _MAX_VBMETA:
                return None
            return path.read_bytes()
        entry = self._archive.entry(f"IMAGES/{name}")
        return None if entry is None else self._archive.read(entry, max_size=_MAX_VBMETA)

    def write_image_zip(self, target: Path) -> list[str]:
        """image-<device>-<build>.zip: every partition image and android-info.txt, as img_from_target_files."""
        images: list[str] = []
        with open(target, "wb") as handle:
            writer = ZipWriter(handle.fileno())
            if self._archive is not None:
                archive = self._archive
                for entry in sorted(archive.entries, key=lambda item: item.name):
                    match = _IMAGE.match(entry.name)
                    if match is not None:
                        writer.copy_entry(archive, entry, name=match[1])
                        images.append(match[1])
                info = archive.entry(f"OTA/{ANDROID_INFO}")
                if info is not None:
                    writer.copy_entry(archive, info, name=ANDROID_INFO)
            else:
                for file in sorted(self._path.glob("*.img")):
                    if file.name.startswith(("bootloader", "radio", "avb_custom_key")):
                        continue
                    writer.add_file(file.name, file)
                    images.append(file.name)
                info_file = self._path / ANDROID_INFO
                if info_file.is_file():
                    writer.add_file(ANDROID_INFO, info_file)
            writer.finish()
            os.fsync(handle.fileno())
        if not images:
            raise ReleaseError(f"{self._path} holds no partition images (IMAGES/*.img or *.img)")
        return images

    def firmware_file(self, item: _Firmware, scratch: Path) -> Path:
        if item.path is not None:
            return item.path
        assert self._archive is not None and item.entry is not None
        entry = self._archive.entry(item.entry)
        assert entry is not None
        with open(scratch, "wb") as handle:
            for chunk in self._archive.iter_data(entry):
                handle.write(chunk)
        return scratch
