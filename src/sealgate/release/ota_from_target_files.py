"""An unsigned A/B OTA package from a target-files package, as releasetools' ota_from_target_files does.

Followed: build/make/tools/releasetools/ota_from_target_files.py (GenerateAbOtaPackage), payload_signer.py and
ota_utils.py (GetPackageMetadata, HandleDowngradeMetadata). The partitions updated are the ones
META/ab_partitions.txt names, each from IMAGES/<name>.img; the payload is a full one (delta_generator without
--old_partitions) or, with a source build, a delta against the source's images of the same partitions; its
max_timestamp is the target build's ro.build.date.utc (the source's for a downgrade), as GenerateAbOtaPackage
passes --max_timestamp. The metadata's postcondition comes from the target's SYSTEM/build.prop (fingerprint,
incremental, timestamp, security patch level, SDK level, device), the precondition of an incremental from the
source's, and a package that goes back in time must say downgrade (which wipes), as HandleDowngradeMetadata demands.

Unlike releasetools, nothing here is signed: the payload and the package are both left for the offline custodian
(`bundle create --ota` then `sealgate sign`, which signs the payload with the same key as the package, as
releasetools signs both with the package key whose public half update_engine and recovery trust). The heavy work is
the existing writers': `ota.payload.writer` for the payload, `ota.package.build_ab_package` for the package.
Images are streamed out of the zip into a temporary directory beside the output, never read whole.

The target's META/care_map.pb (else the text META/care_map.txt of older builds) goes into the package as
care_map.pb (care_map.txt) when the build has dm-verity (misc_info's verity or avb_enable), as GenerateAbOtaPackage
copies it; update_engine keeps it for update_verifier, which reads every block it names through dm-verity on the
first boot of the new slot. It is read strictly first (`ota.care_map`), and a partition the payload writes may not
be read past its image's verified blocks (a block update_verifier cannot read reboots the device until the slot is
given up).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.errors import OtaFormatError, ReleaseError, SealgateError, UsageError
from sealgate.ota.build_prop import BuildFacts, build_facts, read_build_prop
from sealgate.ota.care_map import BLOCK_SIZE, CARE_MAP_NAME, PartitionCareMap, decode_care_map
from sealgate.ota.metadata import OtaMetadata, ab_metadata
from sealgate.ota.package import PackageEntry, build_ab_package
from sealgate.ota.payload.codec import check_compression
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.payload.writer import write_delta_payload, write_full_payload
from sealgate.release.care_map import CARE_MAP, LEGACY_CARE_MAP, file_source, image_care_blocks
from sealgate.release.misc_info import parse_misc_info
from sealgate.ziparchive import ZipArchive

AB_PARTITIONS = "META/ab_partitions.txt"
MISC_INFO = "META/misc_info.txt"
BUILD_PROP = "SYSTEM/build.prop"
_PARTITION = re.compile(r"^[a-z0-9_]{1,64}$")
_MAX_SMALL_ENTRY = 4 * 1024 * 1024


@dataclass(frozen=True)
class TargetBuild:
    """What one target-files package says about its build: facts from SYSTEM/build.prop, A/B partitions."""

    path: str
    facts: BuildFacts
    partitions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "target_files": self.path,
            "fingerprint": self.facts.fingerprint,
            "incremental": self.facts.incremental,
            "timestamp": self.facts.timestamp,
            "security_patch_level": self.facts.security_patch_level,
            "sdk_level": self.facts.sdk_level,
            "device": self.facts.device,
            "partitions": list(self.partitions),
        }


@dataclass
class OtaBuildReport:
    """The unsigned package written: what it updates, from which build to which, and where its entries lie."""

    path: str
    kind: str  # "full" | "incremental"
    target: TargetBuild
    source: TargetBuild | None
    compression: str
    payload_size: int
    metadata: OtaMetadata
    entries: list[PackageEntry] = field(default_factory=list)
    #: care_map.pb's partitions (what update_verifier reads on the first boot), empty without one.
    care_map: list[PartitionCareMap] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "kind": self.kind,
            "signed": False,
            "target": self.target.to_json(),
            "source": None if self.source is None else self.source.to_json(),
            "compression": self.compression,
            "payload_size": self.payload_size,
            "metadata": self.metadata.to_json(),
            "entries": [entry.to_json() for entry in self.entries],
            "care_map": [partition.to_json() for partition in self.care_map],
        }


def build_ota_from_target_files(
    target_files: Path,
    out: Path,
    *,
    source: Path | None = None,
    compression: str = "xz",
    downgrade: bool = False,
    wipe: bool = False,
    work_dir: Path | None = None,
) -> OtaBuildReport:
    """Write the unsigned A/B OTA package updating to `target_files` (from `source`'s build when given) to `out`.

    ReleaseError when a target-files package lacks what an A/B OTA needs (ab_partitions.txt, an image it names,
    the build facts); UsageError for options that do not fit the builds (another device, a downgrade not declared).
    """
    check_compression(compression)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".sealgate-ota-", dir=work_dir or out.resolve().parent) as temp:
        work = Path(temp)
        target = _unpack(Path(target_files), work / "target", None, care_map=work / "care_map")
        source_build = None
        if source is not None:
            source_build = _unpack(Path(source), work / "source", target.partitions)
            if source_build.facts.device != target.facts.device:
                raise UsageError(
                    f"{source} is a build for {source_build.facts.device}, but {target_files} is for "
                    f"{target.facts.device}: an incremental OTA goes between builds of one device"
                )
            if source_build.facts.fingerprint == target.facts.fingerprint:
                raise UsageError(f"{source} and {target_files} are the same build ({target.facts.fingerprint})")
        facts = target.facts
        assert facts.device and facts.fingerprint and facts.timestamp is not None and facts.security_patch_level
        target_images = {name: work / "target" / f"{name}.img" for name in target.partitions}
        payload = work / "payload.bin"
        # update_engine refuses a payload older than the running build unless the max timestamp allows it: a
        # downgrade carries the source's timestamp instead, as GenerateAbOtaPackage passes it.
        max_timestamp = facts.timestamp
        if downgrade and source_build is not None and source_build.facts.timestamp is not None:
            max_timestamp = source_build.facts.timestamp
        if source_build is None:
            write_full_payload(target_images, payload, compression=compression, max_timestamp=max_timestamp)
        else:
            source_images = {name: work / "source" / f"{name}.img" for name in source_build.partitions}
            write_delta_payload(
                source_images, target_images, payload, compression=compression, max_timestamp=max_timestamp
            )
        properties = work / "payload_properties.txt"
        properties.write_text(PayloadProperties.of_file(payload).to_text(), encoding="ascii")
        metadata = ab_metadata(
            device=facts.device,
            post_build=facts.fingerprint,
            post_timestamp=facts.timestamp,
            post_security_patch_level=facts.security_patch_level,
            post_sdk_level=facts.sdk_level,
            post_build_incremental=facts.incremental,
            pre_build=None if source_build is None else [str(source_build.facts.fingerprint)],
            pre_build_incremental=None if source_build is None else source_build.facts.incremental,
            pre_timestamp=None if source_build is None else source_build.facts.timestamp,
            downgrade=downgrade,
            wipe=wipe,
        )
        extras = {path.name: path for path in sorted((work / "care_map").glob("*"))} if (
            work / "care_map"
        ).exists() else {}  # fmt: skip
        built = build_ab_package(out, payload=payload, payload_properties=properties, metadata=metadata,
                                 extra_entries=extras)  # fmt: skip
        return OtaBuildReport(
            path=os.fspath(out),
            kind="full" if source_build is None else "incremental",
            target=target,
            source=source_build,
            compression=compression,
            payload_size=payload.stat().st_size,
            metadata=built.metadata,
            entries=built.entries,
            care_map=decode_care_map(extras[CARE_MAP_NAME].read_bytes()) if CARE_MAP_NAME in extras else [],
        )


def read_target_build(target_files: Path) -> TargetBuild:
    """The build facts and A/B partitions of a target-files package, without unpacking its images."""
    with _open(Path(target_files)) as archive:
        return _read_build(Path(target_files), archive)


def _unpack(
    path: Path, directory: Path, partitions: Sequence[str] | None, *, care_map: Path | None = None
) -> TargetBuild:
    """Read the build and stream IMAGES/<name>.img of its A/B partitions (or of `partitions`) into `directory`;
    with `care_map`, the care map the package must carry is written into that directory (`_care_map`)."""
    directory.mkdir()
    with _open(path) as archive:
        build = _read_build(path, archive)
        care_map_data = _care_map(path, archive) if care_map is not None else None
        names = build.partitions if partitions is None else tuple(partitions)
        for name in names:
            entry = archive.entry(f"IMAGES/{name}.img")
            if entry is None:
                if partitions is not None:
                    continue  # a partition new in the target build: the delta writes it in full
                raise ReleaseError(f"{path}: {AB_PARTITIONS} names {name}, but there is no IMAGES/{name}.img")
            try:
                with open(directory / f"{name}.img", "xb") as handle:
                    for chunk in archive.iter_data(entry, max_size=2**40):
                        handle.write(chunk)
            except OSError as exc:
                raise ReleaseError(f"cannot unpack IMAGES/{name}.img of {path}: {exc.strerror}") from None
            except SealgateError as exc:
                raise ReleaseError(f"{path}: IMAGES/{name}.img cannot be read: {exc}") from None
    if care_map is not None and care_map_data is not None:
        name, data = care_map_data
        if name == CARE_MAP_NAME:  # the text form is carried as it is: only old update_verifiers read it
            _check_care_map(path, data, directory, names)
        care_map.mkdir()
        (care_map / name).write_bytes(data)
    present = tuple(name for name in names if (directory / f"{name}.img").exists())
    return TargetBuild(build.path, build.facts, present if partitions is not None else build.partitions)


def _care_map(path: Path, archive: ZipArchive) -> tuple[str, bytes] | None:
    """(name in the package, bytes): META/care_map.pb, else the text META/care_map.txt of older builds, which
    GenerateAbOtaPackage copies into the package when the build has dm-verity (misc_info's verity=true or
    avb_enable=true); None without either."""
    misc_info = parse_misc_info(_small_entry(path, archive, MISC_INFO).decode("utf-8", "replace")) if (
        archive.entry(MISC_INFO) is not None
    ) else {}  # fmt: skip
    if misc_info.get("verity") != "true" and misc_info.get("avb_enable") != "true":
        return None
    for name in (CARE_MAP, LEGACY_CARE_MAP):
        if archive.entry(name) is not None:
            return name.removeprefix("META/"), _small_entry(path, archive, name)
    return None


def _check_care_map(path: Path, data: bytes, images: Path, partitions: Sequence[str]) -> None:
    """The care map must be one update_verifier can use on the images the payload writes: well formed, naming only
    partitions the payload writes (update_verifier reboots when it finds no dm-verity device for one, as the
    merged target files of merge_target_files keep only the A/B partitions' entries), and no range past that
    image's verified blocks (a block it cannot read reboots the device too, until the new slot is given up)."""
    try:
        entries = decode_care_map(data, f"{path}:{CARE_MAP}")
    except OtaFormatError as exc:
        raise ReleaseError(str(exc)) from None
    for entry in entries:
        if entry.name not in partitions:
            raise ReleaseError(f"{path}: {CARE_MAP} names {entry.name}, which {AB_PARTITIONS} does not")
        image = images / f"{entry.name}.img"
        covered = image_care_blocks(file_source(image), f"IMAGES/{entry.name}.img")
        limit = covered[-1][1] if covered else image.stat().st_size // BLOCK_SIZE
        end = max(end for _, end in entry.blocks)
        if end > limit:
            raise ReleaseError(
                f"{path}: {CARE_MAP} has {entry.name} read up to block {end}, but its image has {limit} blocks to "
                "read; the care map is not this image's (sign-target-files regenerates it)"
            )


def _open(path: Path) -> ZipArchive:
    try:
        return ZipArchive.open(path, strict=True)
    except OSError as exc:
        raise ReleaseError(f"cannot read {path}: {exc.strerror}") from None
    except SealgateError as exc:
        raise ReleaseError(f"{path} is not a target-files package: {exc}") from None


def _read_build(path: Path, archive: ZipArchive) -> TargetBuild:
    partitions = _ab_partitions(path, _small_entry(path, archive, AB_PARTITIONS))
    prop_data = _small_entry(path, archive, BUILD_PROP)
    with tempfile.NamedTemporaryFile(suffix=".prop") as handle:
        handle.write(prop_data)
        handle.flush()
        facts = build_facts(read_build_prop(Path(handle.name)), where=f"{path}:{BUILD_PROP}")
    missing = [
        name
        for name, value in (
            ("ro.build.fingerprint", facts.fingerprint),
            ("ro.build.date.utc", facts.timestamp),
            ("ro.build.version.security_patch", facts.security_patch_level),
            ("ro.product.device", facts.device),
        )
        if value is None
    ]
    if missing:
        raise ReleaseError(f"{path}: {BUILD_PROP} does not define {', '.join(missing)}, which the OTA metadata needs")
    return TargetBuild(os.fspath(path), facts, partitions)


def _small_entry(path: Path, archive: ZipArchive, name: str) -> bytes:
    entry = archive.entry(name)
    if entry is None:
        raise ReleaseError(f"{path} has no {name}: it is not a target-files package of an A/B build")
    try:
        return archive.read(entry, max_size=_MAX_SMALL_ENTRY)
    except SealgateError as exc:
        raise ReleaseError(f"{path}: {name} cannot be read: {exc}") from None


def _ab_partitions(path: Path, data: bytes) -> tuple[str, ...]:
    """ab_partitions.txt: one partition name a line, as GetTargetFilesZipForAbOta reads it (blank lines skipped)."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ReleaseError(f"{path}: {AB_PARTITIONS} is not text") from None
    names: list[str] = []
    for line in lines:
        name = line.strip()
        if not name:
            continue
        if not _PARTITION.match(name):
            raise ReleaseError(f"{path}: {AB_PARTITIONS} names {name[:80]!r}, which is not a partition name")
        if name not in names:
            names.append(name)
    if not names:
        raise ReleaseError(f"{path}: {AB_PARTITIONS} names no partition")
    return tuple(names)
