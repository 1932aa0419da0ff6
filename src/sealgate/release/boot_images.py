"""Rebuilding boot.img and recovery.img of a re-signed target-files package, as add_img_to_target_files does.

Signing rewrites files of BOOT/RAMDISK/ (the recovery otacerts.zip an A/B device keeps in its boot ramdisk,
update_engine's update-payload-key.pub.pem, prop files) and RECOVERY/RAMDISK/; the shipped IMAGES/boot.img would
still hold the test keys. add_img_to_target_files' AddBoot / AddRecovery rebuild them with
build/make/tools/releasetools/common.py GetBootableImage -> _BuildBootableImage, followed here:

- the ramdisk: `mkbootfs -f META/<dir>_filesystem_config.txt <DIR>/RAMDISK` (system/core/cpio/mkbootfs.c), written by
  `write_ramdisk_cpio` (mkbootfs is not packaged for Debian): newc entries for every path below the ramdisk root in
  byte order, a directory before its children, dotfiles and entries named "root" left out, inodes counted from
  300000, owner 0, one link, mtime 0, the mode the canned fs_config gives the path (the root line's when the path
  is not listed, as mkbootfs falls back), then the TRAILER!!! entry and zeros to a multiple of 256 bytes. It is
  compressed as _MakeRamdisk does: `gzip` (here `gzip -n`, no name or timestamp) or, with lz4_ramdisks=true,
  `lz4 -l -12 --favor-decSpeed`.
- the image: Debian's `mkbootimg` (package mkbootimg) with <DIR>/kernel, second, dtb, cmdline, base and
  pagesize, misc_info's mkbootimg_args (recovery_mkbootimg_args first for recovery) and mkbootimg_version_args,
  and recovery_dtbo / recovery_acpio when include_recovery_dtbo / include_recovery_acpio ask for them.
- with avb_enable=true, the AVB hash footer (`sealgate.avb.images.add_hash_footer`) at <part>_size, salted with
  sha256 of the kernel as _BuildBootableImage salts it, with the --prop / --hash_algorithm / --rollback_index of
  avb_<part>_add_hash_footer_args (already rewritten to release-keys by then). Signed by the chained key when
  vbmeta.img chains to the partition (rollback index kept), unsigned otherwise; vbmeta.img's hash descriptor and
  properties for the partition are replaced in place and vbmeta re-signed, as `partition_images` does for
  hashtree descriptors (its helpers are shared).

Refused, naming each, before anything is written: a header version Debian's mkbootimg (29) cannot write (4 and
above: the boot signature, vendor_boot's bootconfig), GKI certification (gki_signing_key_path), vboot, a
recovery.img without a kernel (exclude_kernel_from_recovery_image: Debian's mkbootimg needs one), a boot.img
without a ramdisk (init_boot, gki_boot_image_without_ramdisk), vendor_boot.img (vendor ramdisk fragments and
bootconfig; _BuildVendorBootImage), init_boot.img and vendor_kernel_boot.img.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from sealgate.avb.descriptors import ChainPartitionDescriptor
from sealgate.avb.footer import read_image
from sealgate.avb.images import add_hash_footer
from sealgate.errors import AvbFormatError, ReleaseError, UsageError, ZipFormatError
from sealgate.release.apkcerts import KeyMap
from sealgate.release.build_props import parse_props
from sealgate.release.misc_info import parse_misc_info
from sealgate.release.partition_images import (
    MISC_INFO,
    FooterDescriptors,
    FsConfigEntry,
    RebuiltImages,
    footer_args,
    old_footer,
    open_package,
    parse_fs_config,
    partition_of,
    read_text,
    rebuild_and_describe,
    write_replaced,
)
from sealgate.release.verified_boot import AVB_ROLE
from sealgate.release.zip_writer import central_attributes, is_symlink
from sealgate.signing import Signer
from sealgate.ziparchive import ZipArchive, ZipEntry

MKBOOTIMG = "mkbootimg"
#: GetBootableImage's tree_subdir of the bootable images rebuilt here.
BOOT_SOURCES = {"boot": "BOOT", "recovery": "RECOVERY"}
#: Bootable images add_img_to_target_files builds that are not rebuilt here, and why.
UNSUPPORTED_IMAGES = {
    "vendor_boot": "a vendor boot image (vendor ramdisk fragments, bootconfig) Debian's mkbootimg cannot write",
    "init_boot": "an init_boot image (boot header v4) Debian's mkbootimg cannot write",
    "vendor_kernel_boot": "a vendor kernel boot image Debian's mkbootimg cannot write",
}
#: The boot image header versions Debian's mkbootimg (29) writes.
SUPPORTED_HEADER_VERSIONS = (0, 1, 2, 3)
_SOURCE_DIRECTORIES = {**BOOT_SOURCES, "vendor_boot": "VENDOR_BOOT", "init_boot": "INIT_BOOT",
                       "vendor_kernel_boot": "VENDOR_KERNEL_BOOT"}  # fmt: skip
CPIO_TRAILER = "TRAILER!!!"
_FIRST_INODE = 300000
_NEWC_MAGIC = 0x070701  # printed "%06x": the "070701" of newc
_S_IFDIR, _S_IFREG, _S_IFLNK = 0o040000, 0o100000, 0o120000
_MAX_SYMLINK = 1024
_CHUNK = 1024 * 1024


def bootable_images(images: Sequence[str]) -> list[str]:
    """The images of `images` built from a ramdisk directory (boot, recovery, vendor_boot, ...)."""
    return [image for image in images if partition_of(image) in _SOURCE_DIRECTORIES]


def fs_config_name(partition: str) -> str:
    """GetBootableImage's canned fs_config: META/<tree_subdir>_filesystem_config.txt."""
    return f"META/{partition}_filesystem_config.txt"


def plan_boot_images(signed_zip: Path, images: Sequence[str], *, insist: bool) -> list[str]:
    """The stale bootable images to rebuild; ReleaseError (nothing written) naming every one that cannot be.

    By default (`insist` False) boot.img and recovery.img are rebuilt when mkbootimg is installed and the package
    has their ramdisk and fs_config; other images (vendor_boot.img ...) and ones without them are left for the
    report. Insisting, every stale bootable image is rebuilt or
    refused. An image that would be rebuilt but asks for something unsupported is refused either way.
    """
    candidates = bootable_images(images)
    if not candidates:
        return []
    installed = shutil.which(MKBOOTIMG) is not None
    with open_package(signed_zip) as archive:
        misc_info = parse_misc_info(read_text(archive, MISC_INFO) or "")
        names = {entry.name for entry in archive.entries}
        planned: list[str] = []
        problems: list[str] = []
        for image in candidates:
            partition = partition_of(image)
            directory = _SOURCE_DIRECTORIES[partition]
            has_ramdisk = any(name.startswith(f"{directory}/RAMDISK/") for name in names)
            has_config = partition in UNSUPPORTED_IMAGES or fs_config_name(partition) in names
            wanted = installed and has_ramdisk and has_config and partition not in UNSUPPORTED_IMAGES
            if not (insist or wanted):
                continue  # left for the report (IMAGES_NOT_REBUILT), as before
            problem = UNSUPPORTED_IMAGES.get(partition) or _unsupported(misc_info, partition)
            if problem is None and not has_ramdisk:
                problem = f"the package has no {directory}/RAMDISK/ to build it from"
            if problem is None and not has_config:
                problem = f"the package has no {fs_config_name(partition)} to give its ramdisk's modes"
            if problem is None and _kernel_excluded(misc_info, partition):
                problem = (
                    "exclude_kernel_from_recovery_image: Debian's mkbootimg cannot write a boot image without a kernel"
                )
            if problem is None and f"{directory}/kernel" not in names:
                problem = f"the package has no {directory}/kernel"
            if problem is not None:
                problems.append(f"{image}: {problem}")
            planned.append(image)
    if planned and not installed:
        problems.append(f"{MKBOOTIMG} is not installed (Debian package mkbootimg)")
    if problems:
        raise ReleaseError("cannot rebuild the boot images: " + "; ".join(problems) + "; nothing was written")
    return planned


def rebuild_boot_images(
    signed_zip: Path, output_zip: Path, images: Sequence[str], keys: KeyMap, work: Path
) -> RebuiltImages:
    """Write `output_zip`: `signed_zip` with the boot images `images` (from `plan_boot_images`) rebuilt from their
    signed ramdisk directories and the vbmeta images describing them re-signed (module docstring)."""
    result = RebuiltImages()
    with open_package(signed_zip) as archive:
        misc_info = parse_misc_info(read_text(archive, MISC_INFO) or "")

        def build(
            partition: str, chains: Mapping[str, ChainPartitionDescriptor]
        ) -> tuple[Path, FooterDescriptors | None]:
            path, kernel_digest = build_boot_image(archive, misc_info, partition, work)
            return path, _add_footer(archive, misc_info, partition, path, kernel_digest, keys, chains)

        replacements = rebuild_and_describe(archive, images, build, keys, work, result)
        write_replaced(archive, output_zip, replacements, set())
    return result


def _unsupported(misc_info: Mapping[str, str], partition: str) -> str | None:
    if misc_info.get("vboot"):
        return "vboot signing (vboot_signer_cmd) is not supported"
    if misc_info.get("gki_signing_key_path"):
        return "GKI boot image certification (gki_signing_key_path) is not supported"
    if partition == "boot" and (
        misc_info.get("init_boot") == "true" or misc_info.get("gki_boot_image_without_ramdisk") == "true"
    ):
        return "a boot.img without a ramdisk (init_boot, gki_boot_image_without_ramdisk) is not supported"
    try:
        words = _mkbootimg_args(misc_info, partition)
    except ValueError as exc:
        return f"its mkbootimg arguments cannot be read: {exc}"
    version = _header_version(words)
    if version is None:
        return "its --header_version is not a number"
    if version not in SUPPORTED_HEADER_VERSIONS:
        return (
            f"boot image header version {version} (Debian's mkbootimg writes versions "
            f"{', '.join(map(str, SUPPORTED_HEADER_VERSIONS))}; v4 adds the boot signature and vendor bootconfig)"
        )
    if any(word.startswith(("--vendor_", "--bootconfig", "--gki_signing")) for word in words):
        return "a vendor_boot / bootconfig / GKI signing mkbootimg argument is not supported"
    return _disallowed_argument(words)


#: How deep a ramdisk's directories may nest (Android's are under ten levels).
_MAX_DEPTH = 64

#: The mkbootimg options misc_info may pass: each takes a value that is not a path. Anything else is refused, since
#: mkbootimg opens path options while it parses them (`-o FILE` truncates FILE even when a later --output wins) and
#: a repeated --kernel or --dtb would put a file of the signing machine into the image sent back online; argparse's
#: prefix matching (`--out`, `--sec`) is why the names must match exactly.
_VALUE_OPTIONS = frozenset(
    {
        "--header_version", "--os_version", "--os_patch_level", "--base", "--pagesize", "--kernel_offset",
        "--ramdisk_offset", "--second_offset", "--tags_offset", "--dtb_offset", "--board", "--id",
    }
)  # fmt: skip


def _disallowed_argument(words: Sequence[str]) -> str | None:
    index = 0
    while index < len(words):
        word = words[index]
        name, equals, _ = word.partition("=")
        if name not in _VALUE_OPTIONS:
            allowed = ", ".join(sorted(_VALUE_OPTIONS))
            return f"the mkbootimg argument {word!r} is not one sealgate passes on (only {allowed})"
        if not equals:
            if index + 1 >= len(words):
                return f"the mkbootimg argument {word} has no value"
            if name != "--id" and words[index + 1].startswith("-"):
                return f"the mkbootimg argument {word} is followed by another option, not a value"
            index += 1
        index += 1
    return None


def _mkbootimg_args(misc_info: Mapping[str, str], partition: str) -> list[str]:
    """_BuildBootableImage's extra mkbootimg arguments: recovery_mkbootimg_args (recovery) or mkbootimg_args,
    then mkbootimg_version_args."""
    args = (misc_info.get("recovery_mkbootimg_args") if partition == "recovery" else None) or misc_info.get(
        "mkbootimg_args", ""
    )
    return shlex.split(args) + shlex.split(misc_info.get("mkbootimg_version_args", ""))


def _header_version(words: Sequence[str]) -> int | None:
    version = "0"
    for index, word in enumerate(words):
        if word == "--header_version" and index + 1 < len(words):
            version = words[index + 1]
        elif word.startswith("--header_version="):
            version = word.split("=", 1)[1]
    return int(version) if version.isascii() and version.isdigit() and len(version) < 4 else None


def _kernel_excluded(misc_info: Mapping[str, str], partition: str) -> bool:
    return partition == "recovery" and misc_info.get("exclude_kernel_from_recovery_image") == "true"


# -- the ramdisk -----------------------------------------------------------------------------------------------


class _Node:
    """A path of the ramdisk tree: a directory (children by name), a regular file or a symlink (its entry)."""

    def __init__(self, kind: int, entry: ZipEntry | None = None) -> None:
        self.kind = kind
        self.entry = entry
        self.children: dict[str, _Node] = {}


def _ramdisk_tree(archive: ZipArchive, prefix: str) -> _Node:
    root = _Node(_S_IFDIR)
    attributes = central_attributes(archive)
    for index, entry in enumerate(archive.entries):
        if not entry.name.startswith(prefix) or entry.name == prefix:
            continue
        parts = entry.name[len(prefix) :].rstrip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ReleaseError(f"{entry.name}: a path that cannot be put in a ramdisk")
        node = root
        for part in parts[:-1]:
            node = node.children.setdefault(part, _Node(_S_IFDIR))
            if node.kind != _S_IFDIR:
                raise ReleaseError(f"{entry.name}: a path below a file or symlink")
        if entry.is_directory:
            kind, data = _S_IFDIR, None
        else:
            kind, data = (_S_IFLNK if is_symlink(attributes[index]) else _S_IFREG), entry
        existing = node.children.get(parts[-1])
        if existing is not None and not (existing.kind == kind == _S_IFDIR):
            raise ReleaseError(f"{entry.name} is in the package twice")
        if existing is None:
            node.children[parts[-1]] = _Node(kind, data)
    return root


def write_ramdisk_cpio(archive: ZipArchive, prefix: str, fs_config: Mapping[str, FsConfigEntry], out: BinaryIO) -> int:
    """Write the entries below `prefix` ("BOOT/RAMDISK/") as mkbootfs -f writes the directory; returns the size."""
    writer = _NewcWriter(archive, fs_config, out)
    writer.directory(_ramdisk_tree(archive, prefix), "")
    writer.entry(CPIO_TRAILER, 0, None, 0)
    writer.pad(256)
    return writer.size


class _NewcWriter:
    def __init__(self, archive: ZipArchive, fs_config: Mapping[str, FsConfigEntry], out: BinaryIO) -> None:
        self.archive, self.fs_config, self.out = archive, fs_config, out
        self.inode = _FIRST_INODE
        self.size = 0

    def directory(self, node: _Node, path: str) -> None:
        # mkbootfs skips dotfiles and "root" and sorts the names as bytes
        names = sorted((n for n in node.children if not n.startswith(".") and n != "root"), key=str.encode)
        for name in names:
            child = node.children[name]
            child_path = f"{path}/{name}" if path else name
            if child.kind == _S_IFDIR:
                if child_path.count("/") >= _MAX_DEPTH:  # a real ramdisk is a few levels deep; this bounds recursion
                    raise ReleaseError(
                        f"the ramdisk nests directories more than {_MAX_DEPTH} deep at {child_path[:80]}..."
                    )
                self.entry(child_path, _S_IFDIR, None, 0)
                self.directory(child, child_path)
            elif child.kind == _S_IFLNK:
                assert child.entry is not None
                target = self.archive.read(child.entry, max_size=_MAX_SYMLINK)
                self.entry(child_path, _S_IFLNK, target, len(target))
            else:
                assert child.entry is not None
                self.entry(child_path, _S_IFREG, child.entry, child.entry.uncompressed_size)

    def entry(self, path: str, kind: int, data: bytes | ZipEntry | None, size: int) -> None:
        """mkbootfs's _eject: header, name, padding, data (the padding after it comes with the next entry)."""
        self.pad(4)
        config = self.fs_config.get(path) or self.fs_config.get("")
        if config is None:
            raise ReleaseError(f"the ramdisk's fs_config gives no mode for {path} and has no root line")
        name = path.encode("utf-8") + b"\0"
        # fs_config gives permission bits only: a mode such as 020644 must not turn a file into a device or symlink.
        fields = (self.inode, stat.S_IMODE(config.mode) | kind, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name), 0)
        self.inode += 1
        self.write(b"%06x" % _NEWC_MAGIC + b"".join(b"%08x" % value for value in fields) + name)
        self.pad(4)
        if isinstance(data, bytes):
            self.write(data)
        elif data is not None:
            written = 0
            for chunk in self.archive.iter_data(data):
                self.write(chunk)
                written += len(chunk)
            if written != size:
                raise ReleaseError(f"{data.name}: {written} bytes where the package says {size}")

    def pad(self, multiple: int) -> None:
        self.write(bytes(-self.size % multiple))

    def write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.size += len(data)


def _compress(cpio: Path, misc_info: Mapping[str, str]) -> Path:
    """_MakeRamdisk's compression: lz4 legacy frames with lz4_ramdisks=true, gzip otherwise."""
    if misc_info.get("lz4_ramdisks") == "true":
        command, out = ["lz4", "-l", "-12", "--favor-decSpeed", "-c"], cpio.with_suffix(".cpio.lz4")
    else:
        command, out = ["gzip", "-n", "-c"], cpio.with_suffix(".cpio.gz")
    if shutil.which(command[0]) is None:
        raise ReleaseError(f"{command[0]} is not installed; it compresses the ramdisk")
    with open(cpio, "rb") as source, open(out, "wb") as target:
        done = subprocess.run(command, stdin=source, stdout=target, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"{command[0]} failed on the ramdisk: {done.stderr.decode(errors='replace').strip()}")
    cpio.unlink()
    return out


# -- the image -------------------------------------------------------------------------------------------------


def build_boot_image(
    archive: ZipArchive, misc_info: Mapping[str, str], partition: str, work: Path
) -> tuple[Path, bytes]:
    """_BuildBootableImage without the footer: the image and the sha256 of its kernel (the footer's salt)."""
    directory = BOOT_SOURCES[partition]
    config_name = fs_config_name(partition)
    fs_config = parse_fs_config(read_text(archive, config_name) or "", config_name)
    cpio = work / f"{partition}-ramdisk.cpio"
    try:
        with open(cpio, "wb") as out:
            write_ramdisk_cpio(archive, f"{directory}/RAMDISK/", fs_config, out)
    except ZipFormatError as exc:
        raise ReleaseError(f"cannot read {directory}/RAMDISK/: {exc}") from exc
    ramdisk = _compress(cpio, misc_info)
    kernel = _extract(archive, f"{directory}/kernel", work / f"{partition}-kernel")
    if kernel is None:  # plan_boot_images refused it
        raise ReleaseError(f"the package has no {directory}/kernel")
    kernel_digest = _sha256(kernel)
    command = [MKBOOTIMG, "--kernel", str(kernel)]
    for name in ("second", "dtb"):
        path = _extract(archive, f"{directory}/{name}", work / f"{partition}-{name}")
        if path is not None:
            command += [f"--{name}", str(path)]
    for name in ("cmdline", "base", "pagesize"):
        text = read_text(archive, f"{directory}/{name}")
        if text is not None:  # one word each, so a value that starts with "-" cannot become an option
            command.append(f"--{name}={text.rstrip(chr(10))}")
    extra = _mkbootimg_args(misc_info, partition)
    refused = _disallowed_argument(extra)  # plan_boot_images refused it already; checked again where it is used
    if refused is not None:
        raise ReleaseError(f"cannot rebuild {partition}.img: {refused}")
    command += extra
    command += ["--ramdisk", str(ramdisk)]
    image = work / f"{partition}.img"
    command += ["--output", str(image)]
    if partition == "recovery":
        for name in ("recovery_dtbo", "recovery_acpio"):
            if misc_info.get(f"include_{name}") == "true":
                path = _extract(archive, f"{directory}/{name}", work / f"{partition}-{name}")
                if path is None:
                    raise ReleaseError(f"include_{name}=true but the package has no {directory}/{name}")
                command += [f"--{name}", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines() or ["no message"]
        raise ReleaseError(f"{MKBOOTIMG} failed for {partition}.img: {said[-1]}")  # its last line, not a traceback
    ramdisk.unlink()
    return image, kernel_digest


def _extract(archive: ZipArchive, name: str, path: Path) -> Path | None:
    entry = archive.entry(name)
    if entry is None:
        return None
    try:
        with open(path, "wb") as handle:
            for chunk in archive.iter_data(entry):
                handle.write(chunk)
    except ZipFormatError as exc:
        raise ReleaseError(f"cannot read {name}: {exc}") from exc
    return path


def _sha256(path: Path) -> bytes:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.digest()


def _add_footer(
    archive: ZipArchive,
    misc_info: Mapping[str, str],
    partition: str,
    image: Path,
    kernel_digest: bytes | None,
    keys: KeyMap,
    chains: Mapping[str, object],
) -> FooterDescriptors | None:
    """_BuildBootableImage's avbtool add_hash_footer, salted with sha256(kernel) (else LoadInfoDict's avb_salt)."""
    if misc_info.get("avb_enable") != "true":
        return None
    size = misc_info.get(f"{partition}_size", "")
    if not (size.isascii() and size.isdigit() and len(size) < 20):
        raise ReleaseError(f"{MISC_INFO} gives no {partition}_size for the AVB footer of {partition}.img")
    key = f"avb_{partition}_add_hash_footer_args"
    args = footer_args(misc_info.get(key, ""), key)
    if kernel_digest is None:
        fingerprint = parse_props(read_text(archive, "SYSTEM/build.prop") or "").get("ro.build.fingerprint", "")
        kernel_digest = hashlib.sha256(fingerprint.encode("utf-8")).digest()
    old = old_footer(archive, partition, image.parent)
    signer: Signer | None = None
    rollback_index = args.rollback_index
    if partition in chains:
        signer = keys.signer(f"avb_{partition}") or keys.signer(AVB_ROLE)
        if rollback_index is None and old is not None:
            rollback_index = old.rollback_index
    try:
        add_hash_footer(image, partition, int(size), signer, hash_algorithm=args.hash_algorithm,
                        salt=kernel_digest,
                        properties=args.properties, rollback_index=rollback_index or 0)  # fmt: skip
        _, vbmeta = read_image(image)
    except (UsageError, AvbFormatError) as exc:
        raise ReleaseError(f"cannot add the AVB footer to {partition}.img: {exc}") from exc
    return FooterDescriptors(tuple(old.descriptors) if old is not None else (), tuple(vbmeta.descriptors))
