"""Rebuilding the filesystem images of a re-signed target-files package, as add_img_to_target_files does.

sign_target_files_apks drops IMAGES/ and lets build/make/tools/releasetools/add_img_to_target_files.py regenerate
every image from the signed directories (CreateImage -> build_image.py BuildImage). Here only the images whose
source directory changed during signing are rebuilt, and only EROFS ones, with Debian's erofs-utils:

- the partition's directory (SYSTEM/ -> the image root, VENDOR/ -> vendor.img's root, as CreateImage maps
  `what.upper()`) is staged from the signed package; META/filesystem_config.txt (system) or
  META/<part>_filesystem_config.txt gives every path's uid, gid, mode and capabilities (build_image's
  fs_config). Its paths carry the mount point ("system/bin/sh", "vendor/bin/..."); a path is looked up as given
  and without its "<part>/" prefix. A staged file the fs_config does not describe is refused: the build's
  fs_config covers every file, so a gap means the package is not the build's.
- Debian's mkfs.erofs is built without Android's --fs-config-file, so the modes, owners and capabilities
  (security.capability, a VFS_CAP_REVISION_2 xattr with the effective bit, as fs_config's capabilities= become)
  are applied to the staged tree itself. Owners and capabilities need root; without root the build is refused
  unless the caller accepts an image whose files all belong to root (mkfs.erofs --all-root).
- SELinux labels: the file contexts misc_info names (<part>_selinux_fc, else selinux_fc; META/ and the basename,
  as common.LoadInfoDict finds them when repacking) go to --file-contexts in their text form. A compiled
  file_contexts.bin is refused (libselinux's compiled format depends on the PCRE build that wrote it, and an image
  labelled from a misread policy would not boot enforcing), and so is a partition without file contexts.
  Debian's mkfs.erofs has no --mount-point, so labels are looked up with paths from the image root: only system
  (mounted at /, system-as-root) can be labelled; file contexts for another partition are refused.
- Determinism, as add_img_to_target_files' CreateImage makes it: every timestamp FIXED_FILE_TIMESTAMP
  (2009-01-01; CreateImage overrides build_image's ro.build.date.utc with it), the filesystem UUID
  uuid5(NAMESPACE_URL, "<part>-" + the partition's build fingerprint), the AVB salt sha256 of the build
  fingerprint (LoadInfoDict's avb_salt), all taken after the props were rewritten to release-keys. build_image's
  erofs settings become mkfs.erofs options (compressor -z, pcluster size -C, share_dup_blocks --chunksize 4096,
  legacy compression -E legacy-compress); compress hints and block sizes other than 4096 are refused. Images are
  written raw (not sparse): the AVB code reads raw images. The old image's block map (IMAGES/<part>.map) is
  dropped: Debian's mkfs.erofs cannot write one.
- the dm-verity hash tree and AVB footer (`sealgate.avb.images.add_hashtree_footer`, no FEC) at <part>_size (a
  dynamic partition without one is sized to its contents), with the --prop, --hash_algorithm and
  --rollback_index arguments of avb_<part>_add_hashtree_footer_args (any other is refused); the footer's vbmeta is
  unsigned unless vbmeta.img chains to the partition (then it is signed by the chained key, avb_<part> or avb).
  vbmeta.img and the vbmeta images it chains to (vbmeta_system.img, ...) included the old image's footer
  descriptors (make_vbmeta_image --include_descriptors_from_image): those are replaced in place by the new
  footer's (root digest, salt, sizes, release-keys fingerprint property) and each such image is re-signed with
  its own key, every other descriptor kept (common.BuildVBMeta rebuilds them the same way).
- META/care_map.pb is computed again from the package's images, the rebuilt ones included (`release.care_map`,
  add_img_to_target_files' AddCareMapForAbOta), replacing the old one in place or appended when the package had
  none; an old META/care_map.txt is dropped (sign_target_files_apks drops both for add_img_to_target_files to
  regenerate), and so is META/care_map.pb when no partition has a care map any more.

A filesystem partition that needs rebuilding and cannot be (ext4: Debian's mke2fs -d cannot apply Android's
fs_config, and e2fsdroid is not packaged; an unsupported setting; a missing tool) is refused, naming every one,
before anything is written. Boot images (boot.img with a ramdisk whose otacerts changed) are not filesystem images:
the caller reports them as still to be rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import struct
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealgate.apk.signing.output import AtomicOutput
from sealgate.avb.descriptors import ChainPartitionDescriptor, Descriptor, HashDescriptor, HashtreeDescriptor
from sealgate.avb.footer import read_image
from sealgate.avb.hashtree import tree_size
from sealgate.avb.images import BLOCK_SIZE, add_hashtree_footer
from sealgate.avb.vbmeta import VbmetaImage, read_vbmeta, resign_vbmeta
from sealgate.errors import AvbFormatError, ReleaseError, UsageError, ZipFormatError
from sealgate.release.apkcerts import KeyMap
from sealgate.release.build_props import parse_props
from sealgate.release.care_map import CARE_MAP, LEGACY_CARE_MAP, care_map_bytes
from sealgate.release.misc_info import parse_misc_info
from sealgate.release.verified_boot import AVB_ROLE, VBMETA
from sealgate.release.zip_writer import ZipWriter, central_attributes, is_symlink
from sealgate.signing import Signer
from sealgate.ziparchive import METHOD_DEFLATED, ZipArchive

MKFS_EROFS = "mkfs.erofs"
FSCK_EROFS = "fsck.erofs"
MISC_INFO = "META/misc_info.txt"
#: add_img_to_target_files builds these from <PART>/ with CreateImage.
FILESYSTEM_PARTITIONS = (
    "system", "system_ext", "product", "vendor", "odm", "vendor_dlkm", "odm_dlkm", "system_dlkm", "system_other",
)  # fmt: skip
#: add_img_to_target_files' CreateImage stamps every file of a rebuilt image 2009-01-01 (b/24377993).
FIXED_FILE_TIMESTAMP = 1230768000
_VFS_CAP_REVISION_2 = 0x02000000
_VFS_CAP_FLAGS_EFFECTIVE = 0x000001
_MAX_TEXT = 16 * 1024 * 1024
#: libavb's largest vbmeta behind a footer (avbtool's MAX_VBMETA_SIZE).
_MAX_FOOTER_VBMETA = 64 * 1024
_MAX_VBMETA = 1024 * 1024


@dataclass(frozen=True)
class FsConfigEntry:
    """One line of filesystem_config.txt: `path uid gid mode [selabel=...] [capabilities=0x...]`."""

    path: str
    uid: int
    gid: int
    mode: int
    capabilities: int = 0


@dataclass
class RebuiltImages:
    """What `rebuild_partition_images` wrote: the rebuilt images and the re-signed vbmeta images, and notes."""

    rebuilt: list[str] = field(default_factory=list)
    resigned: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    root_owned: list[str] = field(default_factory=list)
    care_map: bool = False  # META/care_map.pb was written for the rebuilt images


def partition_of(image: str) -> str:
    """IMAGES/system.img -> system."""
    return Path(image).stem


def filesystem_images(images: Sequence[str]) -> list[str]:
    """The images CreateImage builds from a directory; boot, recovery, vendor_boot ... are not (see the report)."""
    return [image for image in images if partition_of(image) in FILESYSTEM_PARTITIONS]


def wants_rebuild(misc_info: dict[str, str], images: Sequence[str]) -> bool:
    """The default of --rebuild-images: some stale image is an EROFS partition and mkfs.erofs is installed."""
    erofs = any(fs_type(misc_info, partition_of(image)) == "erofs" for image in images)
    return erofs and shutil.which(MKFS_EROFS) is not None


def fs_type(misc_info: dict[str, str], partition: str) -> str | None:
    """ImagePropFromGlobalDict: <part>_fs_type; for system the generic fs_type when system_fs_type is absent."""
    return misc_info.get(f"{partition}_fs_type") or (misc_info.get("fs_type") if partition == "system" else None)


def parse_fs_config(text: str, where: str) -> dict[str, FsConfigEntry]:
    """filesystem_config.txt by path (no leading or trailing slash; "" is the root)."""
    entries: dict[str, FsConfigEntry] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        fields = line.split()
        if line[0].isspace():
            fields.insert(0, "")  # the root directory's line starts with its empty path
        if len(fields) < 4:
            raise ReleaseError(f"{where} line {number} is not 'path uid gid mode ...': {line!r}")
        path, uid, gid, mode = fields[:4]
        capabilities = 0
        try:
            for extra in fields[4:]:
                if extra.startswith("capabilities="):
                    capabilities = int(extra.split("=", 1)[1], 0)
            entry = FsConfigEntry(path.strip("/"), int(uid), int(gid), int(mode, 8), capabilities)
        except ValueError as exc:
            raise ReleaseError(f"{where} line {number} has a malformed number: {line!r}") from exc
        entries[entry.path] = entry
    return entries


def rebuild_partition_images(
    signed_zip: Path,
    output_zip: Path,
    images: Sequence[str],
    keys: KeyMap,
    work: Path,
    *,
    accept_root_owned: bool = False,
) -> RebuiltImages:
    """Write `output_zip`: `signed_zip` with `images` rebuilt from its signed directories (module docstring).

    ReleaseError, with nothing written at `output_zip`, for an image that cannot be rebuilt; every such image is
    named in one sentence.
    """
    result = RebuiltImages()
    with open_package(signed_zip) as archive:
        misc_info = parse_misc_info(read_text(archive, MISC_INFO) or "")
        _refuse_unbuildable(archive, misc_info, images, accept_root_owned)

        def build(
            partition: str, chains: Mapping[str, ChainPartitionDescriptor]
        ) -> tuple[Path, FooterDescriptors | None]:
            path = _build_image(archive, misc_info, partition, work, accept_root_owned, result)
            return path, _add_footer(archive, misc_info, partition, path, keys, chains)

        replacements = rebuild_and_describe(archive, images, build, keys, work, result)
        stale = {f"IMAGES/{partition_of(image)}.map" for image in images}
        appended = _new_care_map(archive, replacements, work, stale)
        result.dropped = write_replaced(archive, output_zip, replacements, stale, appended)
        result.care_map = CARE_MAP in replacements or CARE_MAP in appended
    return result


def _new_care_map(archive: ZipArchive, replacements: dict[str, Path], work: Path, drop: set[str]) -> dict[str, Path]:
    """META/care_map.pb of the rebuilt images (`release.care_map`, as add_img_to_target_files regenerates it after
    sign_target_files_apks dropped the old one): it replaces the old entry, or is appended; the old care maps
    (META/care_map.pb, META/care_map.txt) describe the old images and go when no care map is left. The entries to
    append are returned; `replacements` and `drop` are updated."""
    data = care_map_bytes(archive, replacements)
    drop.update(name for name in (CARE_MAP, LEGACY_CARE_MAP) if archive.entry(name) is not None)
    if data is None:
        return {}
    path = work / "care_map.pb"
    path.write_bytes(data)
    if archive.entry(CARE_MAP) is not None:
        drop.discard(CARE_MAP)
        replacements[CARE_MAP] = path
        return {}
    return {CARE_MAP: path}


#: Builds one partition's image in the work directory, given vbmeta.img's chain descriptors: (image, the footer
#: descriptors vbmeta must now carry, or None when the image has no footer).
ImageBuilder = Callable[[str, Mapping[str, ChainPartitionDescriptor]], tuple[Path, "FooterDescriptors | None"]]


def rebuild_and_describe(
    archive: ZipArchive, images: Sequence[str], build: ImageBuilder, keys: KeyMap, work: Path, result: RebuiltImages
) -> dict[str, Path]:
    """Build each of `images` with `build`, then re-sign the vbmeta images so they describe the new footers: the
    replacements to write (entry name -> file). The one sequence filesystem and boot images both follow."""
    vbmeta_data = read_small(archive, VBMETA)
    chains = read_vbmeta(vbmeta_data).chain_partitions() if vbmeta_data is not None else {}
    replacements: dict[str, Path] = {}
    footers: dict[str, FooterDescriptors] = {}
    for image in images:
        partition = partition_of(image)
        path, footer = build(partition, chains)
        if footer is not None:
            footers[partition] = footer
        replacements[image] = path
        result.rebuilt.append(image)
    for name, data in resigned_vbmeta(archive, footers, keys).items():
        path = work / Path(name).name
        path.write_bytes(data)
        replacements[name] = path
        result.resigned.append(name)
    return replacements


def write_replaced(
    archive: ZipArchive,
    output_zip: Path,
    replacements: Mapping[str, Path],
    drop: set[str],
    append: Mapping[str, Path] | None = None,
) -> list[str]:
    """Write `output_zip`: `archive` with the entries of `replacements` taken from their files, `drop` left out
    (the names dropped are returned), everything else copied, then the new entries of `append`; atomically."""
    dropped = []
    attributes = central_attributes(archive)
    with AtomicOutput(output_zip) as output:
        writer = ZipWriter(output.fd)
        for index, entry in enumerate(archive.entries):
            if entry.name in drop:
                dropped.append(entry.name)
            elif entry.name in replacements:
                writer.add_file(entry.name, replacements[entry.name], deflate=entry.method == METHOD_DEFLATED,
                                attributes=attributes[index][1])  # fmt: skip
            else:
                writer.copy_entry(archive, entry, attributes[index])
        for name, path in (append or {}).items():
            writer.add_file(name, path)
        writer.finish()
        output.commit()
    return dropped


# -- checks before anything is built ---------------------------------------------------------------------------


def _refuse_unbuildable(
    archive: ZipArchive, misc_info: dict[str, str], images: Sequence[str], accept_root_owned: bool
) -> None:
    problems = []
    for image in images:
        partition = partition_of(image)
        declared = fs_type(misc_info, partition)
        if partition not in FILESYSTEM_PARTITIONS:
            problems.append(f"{image} is not a filesystem image add_img_to_target_files builds from a directory")
        elif declared != "erofs":
            problems.append(
                f"{image} is {declared or 'of no declared filesystem'} ({partition}_fs_type in {MISC_INFO}); only "
                "EROFS images are rebuilt (Debian's mke2fs cannot apply Android's fs_config)"
            )
        elif archive.entry(_fs_config_name(partition)) is None:
            problems.append(f"{image}: the package has no {_fs_config_name(partition)} to give its files' modes")
        else:
            problem = _unsupported_erofs(misc_info, partition) or _context_problem(archive, misc_info, partition)
            if problem is not None:
                problems.append(f"{image}: {problem}")
            elif not accept_root_owned and not _running_as_root():
                owned = _non_root_entries(archive, partition)
                if owned:
                    problems.append(
                        f"{image}: {len(owned)} path(s) need an owner other than root or capabilities (e.g. "
                        f"{owned[0]}), which only root can give; run as root or accept root-owned files"
                    )
    if shutil.which(MKFS_EROFS) is None:
        problems.append(f"{MKFS_EROFS} is not installed (Debian package erofs-utils)")
    if problems:
        raise ReleaseError("cannot rebuild the partition images: " + "; ".join(problems) + "; nothing was written")


def _context_problem(archive: ZipArchive, misc_info: dict[str, str], partition: str) -> str | None:
    context = _file_contexts(misc_info, partition)
    if context is None:
        return f"{MISC_INFO} names no file contexts ({partition}_selinux_fc); an unlabelled image does not boot"
    if context.endswith(".bin"):
        return (
            f"{context} is a compiled file_contexts.bin; give the text form (compiled contexts depend on the PCRE "
            "build that wrote them)"
        )
    if partition != "system":
        return "Debian's mkfs.erofs cannot label a partition mounted below / (it has no --mount-point)"
    if archive.entry(context) is None:
        return f"its file contexts {context} are not in the package"
    return None


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _non_root_entries(archive: ZipArchive, partition: str) -> list[str]:
    config = _fs_config(archive, partition)
    return [e.path for e in config.values() if e.uid or e.gid or e.capabilities]


def _fs_config_name(partition: str) -> str:
    return "META/filesystem_config.txt" if partition == "system" else f"META/{partition}_filesystem_config.txt"


def _fs_config(archive: ZipArchive, partition: str) -> dict[str, FsConfigEntry]:
    name = _fs_config_name(partition)
    return parse_fs_config(read_text(archive, name) or "", name)


def _file_contexts(misc_info: dict[str, str], partition: str) -> str | None:
    """The package entry of the partition's file contexts: META/ and the basename misc_info gives (LoadInfoDict
    with repacking), the partition's own <part>_selinux_fc before selinux_fc."""
    value = misc_info.get(f"{partition}_selinux_fc") or misc_info.get("selinux_fc")
    return f"META/{Path(value).name}" if value else None


# -- building one image ----------------------------------------------------------------------------------------


def _build_image(
    archive: ZipArchive,
    misc_info: dict[str, str],
    partition: str,
    work: Path,
    accept_root_owned: bool,
    result: RebuiltImages,
) -> Path:
    root = work / f"stage-{partition}"
    as_root = _running_as_root()
    try:
        _stage(archive, partition, root)
        _apply_fs_config(root, _fs_config(archive, partition), partition, as_root=as_root)
    except (OSError, ZipFormatError) as exc:
        raise ReleaseError(f"cannot stage {partition.upper()}/ to build {partition}.img: {exc}") from exc
    uuid_seed = f"{partition}-{_fingerprint(archive, partition)}"
    command = [MKFS_EROFS, "--quiet", f"-T{FIXED_FILE_TIMESTAMP}", f"-U{uuid.uuid5(uuid.NAMESPACE_URL, uuid_seed)}"]
    if not as_root:
        command.append("--all-root")
        if accept_root_owned:
            result.root_owned.append(f"IMAGES/{partition}.img")
    command.extend(_erofs_options(misc_info, partition))
    context = _file_contexts(misc_info, partition)
    assert context is not None  # _refuse_unbuildable refused a partition without them
    contexts = work / f"{partition}_file_contexts"
    contexts.write_text(read_text(archive, context) or "", encoding="utf-8")
    command.append(f"--file-contexts={contexts}")
    image = work / f"{partition}.img"
    image.unlink(missing_ok=True)
    done = subprocess.run([*command, str(image), str(root)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(f"{MKFS_EROFS} failed for {partition}: {(done.stderr or done.stdout).strip()}")
    shutil.rmtree(root)
    fsck = shutil.which(FSCK_EROFS)
    if fsck is not None:  # build_image's RunErofsFsck: every file of the new image decodes
        checked = subprocess.run([fsck, "--extract", str(image)], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise ReleaseError(f"{FSCK_EROFS} refuses the new {partition}.img: {checked.stderr.strip()}")
    return image


def _erofs_options(misc_info: dict[str, str], partition: str) -> list[str]:
    """build_image.py's mkfs.erofs options from misc_info (the partition's own key before the default one)."""
    options = []
    compressor = _erofs_setting(misc_info, partition, "compressor")
    if compressor and compressor != "none":
        options.append(f"-z{compressor}")
    pcluster = _erofs_setting(misc_info, partition, "pcluster_size")
    if pcluster:
        options.append(f"-C{pcluster}")
    if _erofs_setting(misc_info, partition, "share_dup_blocks"):
        options.append("--chunksize=4096")
    if _erofs_setting(misc_info, partition, "use_legacy_compression"):
        options.append("-Elegacy-compress")
    return options


def _erofs_setting(misc_info: dict[str, str], partition: str, name: str) -> str | None:
    return (
        misc_info.get(f"{partition}_erofs_{name}")
        or misc_info.get(f"erofs_default_{name}")
        or misc_info.get(f"erofs_{name}")
    )


def _unsupported_erofs(misc_info: dict[str, str], partition: str) -> str | None:
    """What Debian's mkfs.erofs cannot do that misc_info asks for, if anything."""
    if _erofs_setting(misc_info, partition, "compress_hints"):
        return "per-file compress hints (erofs_compress_hints) name a file of the build tree"
    blocksize = _erofs_setting(misc_info, partition, "blocksize")
    if blocksize not in (None, "4096"):
        return f"an EROFS block size of {blocksize} (Debian's mkfs.erofs writes 4096-byte blocks)"
    return None


def _stage(archive: ZipArchive, partition: str, root: Path) -> None:
    """Extract <PART>/ into `root`, symlinks as symlinks; refuses names that would leave `root`."""
    prefix = partition.upper() + "/"
    attributes = central_attributes(archive)
    root.mkdir()
    for index, entry in enumerate(archive.entries):
        if not entry.name.startswith(prefix) or entry.name == prefix:
            continue
        relative = entry.name[len(prefix) :]
        parts = relative.rstrip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ReleaseError(f"{entry.name}: a path that cannot be staged")
        target = root.joinpath(*parts)
        parent = root
        for part in parts[:-1]:  # never through a symlink staged before: it may point out of `root`
            parent = parent / part
            if parent.is_symlink():
                raise ReleaseError(f"{entry.name}: a path below the symlink {parent.relative_to(root)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            raise ReleaseError(f"{entry.name} is in the package twice")
        if entry.is_directory:
            target.mkdir(exist_ok=True)
        elif is_symlink(attributes[index]):
            try:
                target.symlink_to(archive.read(entry, max_size=4096).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ReleaseError(f"{entry.name}: a symlink whose target is not UTF-8") from exc
        else:
            with open(target, "wb") as handle:
                for chunk in archive.iter_data(entry):
                    handle.write(chunk)


def _apply_fs_config(root: Path, config: dict[str, FsConfigEntry], partition: str, *, as_root: bool) -> None:
    """Give every staged path the mode (and, as root, the owner and capabilities) its fs_config line says."""
    unlisted = []
    for path in [root, *_walk(root)]:
        relative = "" if path == root else path.relative_to(root).as_posix()
        entry = _lookup(config, relative, partition)
        if entry is None:
            unlisted.append(relative or "/")
            continue
        if not path.is_symlink():
            os.chmod(path, stat.S_IMODE(entry.mode))
        if as_root:
            os.lchown(path, entry.uid, entry.gid)
            if entry.capabilities and not path.is_symlink():
                os.setxattr(path, "security.capability", vfs_cap_data(entry.capabilities))
    if unlisted:
        raise ReleaseError(
            f"{_fs_config_name(partition)} does not describe {len(unlisted)} path(s) of {partition.upper()}/ "
            f"(e.g. {unlisted[0]}): the fs_config is not this package's; nothing was written"
        )


def _walk(root: Path) -> list[Path]:
    """Every path below `root`, never through a symlink (one may point anywhere on the host)."""
    paths: list[Path] = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        paths.extend(Path(directory, name) for name in [*subdirectories, *files])
    return sorted(paths)


def _lookup(config: dict[str, FsConfigEntry], relative: str, partition: str) -> FsConfigEntry | None:
    if relative in config:
        return config[relative]
    prefixed = f"{partition}/{relative}" if relative else partition
    return config.get(prefixed)


def vfs_cap_data(capabilities: int) -> bytes:
    """struct vfs_cap_data, revision 2: magic_etc, then (permitted, inheritable) for the low and high 32 bits."""
    low, high = capabilities & 0xFFFFFFFF, capabilities >> 32
    return struct.pack("<5I", _VFS_CAP_REVISION_2 | _VFS_CAP_FLAGS_EFFECTIVE, low, 0, high, 0)


def _partition_props(archive: ZipArchive, partition: str) -> dict[str, str]:
    for name in (f"{partition.upper()}/build.prop", f"{partition.upper()}/etc/build.prop"):
        text = read_text(archive, name)
        if text is not None:
            return parse_props(text)
    return {}


def _fingerprint(archive: ZipArchive, partition: str) -> str:
    """BuildInfo.GetPartitionFingerprint: ro.<part>.build.fingerprint, else the build's fingerprint."""
    own = _partition_props(archive, partition).get(f"ro.{partition}.build.fingerprint")
    return own or parse_props(read_text(archive, "SYSTEM/build.prop") or "").get("ro.build.fingerprint", "")


# -- verified boot ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FooterDescriptors:
    """The rebuilt image's footer descriptors and the old image's, which vbmeta images included."""

    old: tuple[Descriptor, ...]
    new: tuple[Descriptor, ...]


def _add_footer(
    archive: ZipArchive,
    misc_info: dict[str, str],
    partition: str,
    image: Path,
    keys: KeyMap,
    chains: Mapping[str, object],
) -> FooterDescriptors | None:
    """The hashtree footer build_image adds (verity_utils' avbtool add_hashtree_footer), with AOSP's salt.

    The salt is LoadInfoDict's avb_salt, sha256 of the build fingerprint (release-keys by now, as the props were
    rewritten before the image is built). A partition vbmeta chains to is signed with its chained key, keeping
    its rollback index; any other footer is unsigned and vbmeta.img carries its descriptors.
    """
    if misc_info.get(f"avb_{partition}_hashtree_enable") != "true":
        return None
    key = f"avb_{partition}_add_hashtree_footer_args"
    args = footer_args(misc_info.get(key, ""), key)
    size = _partition_size(misc_info, partition, image, args.hash_algorithm)
    fingerprint = parse_props(read_text(archive, "SYSTEM/build.prop") or "").get("ro.build.fingerprint", "")
    salt = hashlib.sha256(fingerprint.encode("utf-8")).digest()
    old = old_footer(archive, partition, image.parent)
    signer: Signer | None = None
    rollback_index = args.rollback_index
    if partition in chains:
        signer = keys.signer(f"avb_{partition}") or keys.signer(AVB_ROLE)
        if rollback_index is None and old is not None:
            rollback_index = old.rollback_index
    flags = next((d.flags for d in old.descriptors if isinstance(d, HashtreeDescriptor)), 0) if old else 0
    try:
        add_hashtree_footer(image, partition, size, signer, hash_algorithm=args.hash_algorithm, salt=salt,
                            properties=args.properties, rollback_index=rollback_index or 0, flags=flags)  # fmt: skip
        _, vbmeta = read_image(image)
    except (UsageError, AvbFormatError) as exc:
        raise ReleaseError(f"cannot add the AVB footer to {partition}.img: {exc}") from exc
    return FooterDescriptors(tuple(old.descriptors) if old is not None else (), tuple(vbmeta.descriptors))


def _partition_size(misc_info: dict[str, str], partition: str, image: Path, hash_algorithm: str) -> int:
    """<part>_size; for a dynamic partition without one (use_dynamic_partition_size), the smallest size that holds
    the image and <part>_reserved_size, its hash tree, the largest vbmeta libavb accepts and the footer block
    (avbtool's calc_max_image_size margins), as build_image sizes dynamic partitions to their contents."""
    size = misc_info.get(f"{partition}_size", "")
    if _is_number(size):
        return int(size)
    if misc_info.get("use_dynamic_partition_size") != "true":
        raise ReleaseError(f"{MISC_INFO} gives no {partition}_size for the AVB footer of {partition}.img")
    reserved = misc_info.get(f"{partition}_reserved_size", "0")
    data = _round_up(image.stat().st_size + (int(reserved) if _is_number(reserved) else 0), BLOCK_SIZE)
    return data + tree_size(data, BLOCK_SIZE, hash_algorithm) + _MAX_FOOTER_VBMETA + BLOCK_SIZE


def _round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


@dataclass
class FooterArgs:
    properties: dict[str, bytes] = field(default_factory=dict)
    hash_algorithm: str = "sha256"
    rollback_index: int | None = None


def _is_number(text: str) -> bool:
    """A decimal number below 2**64 in ASCII digits (str.isdigit also takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit() and len(text) < 20


def footer_args(args: str, key: str) -> FooterArgs:
    """The avbtool add_hash_footer / add_hashtree_footer arguments (misc_info's `key`) honoured here; any other is
    refused rather than ignored."""
    try:
        words = shlex.split(args)
    except ValueError as exc:  # an unbalanced quote
        raise ReleaseError(f"{key} cannot be read: {exc}") from None
    result = FooterArgs()
    index = 0
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else ""
        index += 2
        if word == "--prop" and ":" in value:
            key, prop = value.split(":", 1)
            result.properties[key] = prop.encode("utf-8")
        elif word == "--hash_algorithm" and value:
            result.hash_algorithm = value
        elif word == "--rollback_index" and _is_number(value):
            result.rollback_index = int(value)
        elif word == "--fec_num_roots" and value == "0":
            pass
        elif word == "--do_not_generate_fec":
            index -= 1  # a flag: no FEC is written anyway
        else:
            raise ReleaseError(f"{key}: {word} {value} is not supported here")
    return result


def old_footer(archive: ZipArchive, partition: str, work: Path) -> VbmetaImage | None:
    """The vbmeta behind the AVB footer of the image being replaced (streamed out to find its end)."""
    entry = archive.entry(f"IMAGES/{partition}.img")
    if entry is None:
        return None
    old = work / f"old-{partition}.img"
    try:
        with open(old, "wb") as handle:
            for chunk in archive.iter_data(entry):
                handle.write(chunk)
        footer, vbmeta = read_image(old)
        return vbmeta if footer is not None else None
    except AvbFormatError:
        return None
    finally:
        old.unlink(missing_ok=True)


def resigned_vbmeta(archive: ZipArchive, footers: dict[str, FooterDescriptors], keys: KeyMap) -> dict[str, bytes]:
    """Every footerless vbmeta image that included a rebuilt partition's descriptors, given the new ones, re-signed.

    make_vbmeta_image --include_descriptors_from_image copies all of an image's footer descriptors (hashtree and
    properties such as com.android.build.system.fingerprint); the run of them in vbmeta is replaced by the new
    footer's, in place. A hashtree (or, for a boot image, hash) descriptor of the partition that matches nothing of
    the old footer is replaced too, so no descriptor of a rebuilt partition describes the old image.
    """
    top = read_small(archive, VBMETA)
    if not footers or top is None:
        return {}
    avb = keys.signer(AVB_ROLE)
    candidates: list[tuple[str, bytes, Signer | None]] = [(VBMETA, top, avb)]
    for chained in sorted(read_vbmeta(top).chain_partitions()):
        name = f"IMAGES/{chained}.img"
        entry = archive.entry(name)
        if chained.startswith("vbmeta") and entry is not None and entry.uncompressed_size <= _MAX_VBMETA:
            data = read_small(archive, name)
            assert data is not None
            candidates.append((name, data, keys.signer(f"avb_{chained}") or avb))
    out: dict[str, bytes] = {}
    for name, data, signer in candidates:
        descriptors, touched = _redescribe(read_vbmeta(data).descriptors, footers)
        if not touched:
            continue
        if signer is None:
            raise ReleaseError(f"{name} describes a rebuilt partition: a signer for the role avb is needed")
        try:
            out[name] = resign_vbmeta(data, signer, descriptors=descriptors)
        except (UsageError, AvbFormatError) as exc:
            raise ReleaseError(f"cannot re-sign {name}: {exc}") from exc
    return out


def _redescribe(
    descriptors: Sequence[Descriptor], footers: dict[str, FooterDescriptors]
) -> tuple[list[Descriptor], bool]:
    result: list[Descriptor] = []
    inserted: set[str] = set()
    for descriptor in descriptors:
        owner = next((p for p, f in footers.items() if descriptor in f.old), None)
        if (
            owner is None
            and isinstance(descriptor, (HashtreeDescriptor, HashDescriptor))
            and descriptor.partition_name in footers
        ):
            owner = descriptor.partition_name
        if owner is None:
            result.append(descriptor)
        elif owner not in inserted:
            result.extend(footers[owner].new)
            inserted.add(owner)
    return result, bool(inserted)


# -- reading ---------------------------------------------------------------------------------------------------


def open_package(path: Path) -> ZipArchive:
    try:
        return ZipArchive.open(path)
    except ZipFormatError as exc:
        raise ReleaseError(f"{path} is not a readable target-files package: {exc}") from exc


def read_text(archive: ZipArchive, name: str) -> str | None:
    entry = archive.entry(name)
    if entry is None:
        return None
    try:
        return archive.read(entry, max_size=_MAX_TEXT).decode("utf-8")
    except (UnicodeDecodeError, ZipFormatError) as exc:
        raise ReleaseError(f"cannot read {name}: {exc}") from exc


def read_small(archive: ZipArchive, name: str) -> bytes | None:
    entry = archive.entry(name)
    if entry is None:
        return None
    try:
        return archive.read(entry, max_size=_MAX_VBMETA)
    except ZipFormatError as exc:
        raise ReleaseError(f"cannot read {name}: {exc}") from exc
