"""`release publish`: put signed OTA packages on a channel, refusing anything a device should never be offered.

The web root gets, per device (the format of the channel file is in sealgate.ota.channel):

    WEBROOT/ota/<device>/<channel>.json                     the channel file (canonical JSON)
    WEBROOT/ota/<device>/lineage-<channel>.json             LineageOS Updater's list (with --base-url)
    WEBROOT/ota/<device>/packages/<sha256>/<file name>      every package ever published, read-only, never changed

Before anything in the web root is touched, every package is checked: its whole-file signature verifies against
the OTA certificates given (recovery's rules, sealgate.ota.whole_file), its metadata (metadata.pb or the text
file, sealgate.ota.metadata.read_package_metadata) names the device and one post-build, and the set
chains: one newest build with its full OTA, each incremental going from a build the channel (or this publish)
already knows to that newest build. The channel file already published is read first and a newest build that is
older than the published one (by timestamp, or by security patch level) is refused: a rollback would offer every
device a downgrade, so it needs `allow_rollback`, which withdraws the newer builds from the channel (their packages
stay on disk) and says so in the report.

Publishing then copies each package into its content-addressed directory (hashed as it is copied, refused if it
is not the bytes that were checked, fsynced; sealgate.durable.copy_checked, shared with `repo publish`), and only
then replaces the channel file and the Lineage list, each by temporary file, fsync and rename. A reader sees the
old channel or the new one, and every package either names is already in place. Packages are never removed, so a
device that read an older channel file can still download what it named. One publish per device at a time
(an flock in the device's directory, as `repo publish` does for its web root).
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.apk.report import Issue
from sealgate.durable import (
    ChangedWhileCopyingError,
    copy_checked,
    exclusive_lock,
    fsync_directory,
    replace_file,
    sha256_file,
)
from sealgate.errors import ChannelFormatError, OtaFormatError, ReleaseError, UsageError
from sealgate.ota.channel import Channel, ChannelBuild, OtaFile, read_channel
from sealgate.ota.lineage import lineage_updates
from sealgate.ota.metadata import read_package_metadata
from sealgate.ota.whole_file import TrustedKey, verify_package

OTA_ROOT = "ota"
PACKAGES = "packages"
CHANNELS = ("stable", "beta")
#: Builds a channel file keeps listing (newest first); the packages of older ones stay served all the same.
KEEP_BUILDS = 10
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\Z")


@dataclass(frozen=True)
class CheckedPackage:
    """A package whose signature verified, with what its metadata says (the signed bytes' own words)."""

    path: Path
    size: int
    sha256: str
    signer_sha256: str
    fingerprint: str
    pre_build: str | None
    incremental: str | None
    timestamp: int
    security_patch_level: str | None
    sdk_level: str | None

    @property
    def url(self) -> str:
        return f"{PACKAGES}/{self.sha256}/{self.path.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "url": self.url,
            "size": self.size,
            "sha256": self.sha256,
            "pre_build": self.pre_build,
            "post_build": self.fingerprint,
            "signer": self.signer_sha256,
        }

    def ota_file(self) -> OtaFile:
        return OtaFile(url=self.url, size=self.size, sha256=self.sha256, pre_build=self.pre_build)


class PublishRefused(ReleaseError):
    """The packages cannot go on the channel; `issues` lists every reason (code + sentence). Nothing was written."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(issue.message for issue in issues))


@dataclass
class ChannelPublishReport:
    device: str
    channel: str
    channel_file: str
    newest: ChannelBuild
    lineage_file: str | None = None
    packages: list[CheckedPackage] = field(default_factory=list)
    copied: int = 0
    copied_bytes: int = 0
    rollback: bool = False
    withdrawn: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "published": True,
            "device": self.device,
            "channel": self.channel,
            "channel_file": self.channel_file,
            "lineage_file": self.lineage_file,
            "newest": {
                "fingerprint": self.newest.fingerprint,
                "incremental": self.newest.incremental,
                "timestamp": self.newest.timestamp,
                "security_patch_level": self.newest.security_patch_level,
            },
            "packages": [item.to_json() for item in self.packages],
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "rollback": self.rollback,
            "withdrawn": self.withdrawn,
            "seconds": round(self.seconds, 3),
            "errors": [],
        }


def channel_path(webroot: Path, device: str, channel: str) -> Path:
    return webroot / OTA_ROOT / device / f"{channel}.json"


def lineage_path(webroot: Path, device: str, channel: str) -> Path:
    return webroot / OTA_ROOT / device / f"lineage-{channel}.json"


def publish_channel(
    packages: Sequence[Path],
    webroot: Path,
    *,
    device: str,
    channel: str,
    trusted_keys: Sequence[TrustedKey],
    base_url: str | None = None,
    android_version: str | None = None,
    lineage_version: str | None = None,
    romtype: str | None = None,
    allow_rollback: bool = False,
) -> ChannelPublishReport:
    """Check `packages` (files, or directories of *.zip) and publish them as `device`'s `channel` under `webroot`.

    PublishRefused (every reason) when a package does not verify, is for another device, the set does not chain,
    or the channel would roll back without `allow_rollback`; UsageError for bad arguments; ReleaseError when the
    web root cannot be read or written. On any of them the web root is as it was.
    """
    started = time.monotonic()
    _check_name(device, "device")
    if channel not in CHANNELS:
        raise UsageError(f"the channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    lineage_version = lineage_version or android_version
    if base_url is not None:
        if not re.match(r"https?://[^\s/]+(/\S*)?\Z", base_url):
            raise UsageError(f"--base-url must be an http(s) URL of the channel's directory, not {base_url!r}")
        if lineage_version is None:
            raise UsageError("the LineageOS update list needs the version its devices run (--lineage-version)")
    elif lineage_path(webroot, device, channel).exists():
        raise UsageError(
            f"{lineage_path(webroot, device, channel)} is published: give --base-url (and the version) again so that "
            "LineageOS's Updater does not keep offering the old build"
        )
    files = _package_files(packages)
    checked, issues = _check_packages(files, trusted_keys, device)
    if issues:
        raise PublishRefused(issues)
    target = channel_path(webroot, device, channel)
    published_bytes, published = _published(target, device, channel)
    new_channel, rolled_back, withdrawn = _next_channel(
        checked, published, device, channel, android_version, allow_rollback
    )
    report = ChannelPublishReport(
        device=device,
        channel=channel,
        channel_file=str(target.relative_to(webroot)),
        newest=new_channel.newest,
        packages=checked,
        rollback=rolled_back,
        withdrawn=withdrawn,
    )
    try:
        data = new_channel.to_bytes()
    except ChannelFormatError as exc:
        raise PublishRefused(
            [Issue("INCONSISTENT_CHANNEL", f"the resulting channel would be malformed: {exc}")]
        ) from None
    lineage = None
    if base_url is not None and lineage_version is not None:
        base = f"{base_url.rstrip('/')}/{OTA_ROOT}/{device}/"
        lineage = lineage_updates(new_channel, base_url=base, version=lineage_version, romtype=romtype or channel)
        report.lineage_file = str(lineage_path(webroot, device, channel).relative_to(webroot))
    _write(webroot, target, published_bytes, checked, data, lineage, report)
    report.seconds = time.monotonic() - started
    return report


def read_published_channel(webroot: Path, device: str, channel: str) -> Channel | None:
    """The channel file `webroot` serves now, strictly read; None when the channel was never published."""
    return _published(channel_path(webroot, device, channel), device, channel)[1]


# -- checking -------------------------------------------------------------------------------------------------------


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value):
        raise UsageError(f"the {what} name {value!r} must be lowercase letters, digits, '.', '_' or '-'")


def _package_files(arguments: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for argument in arguments:
        if argument.is_dir():
            files.extend(sorted(path for path in argument.iterdir() if path.suffix == ".zip" and path.is_file()))
        elif argument.is_file():
            files.append(argument)
        else:
            raise UsageError(f"{argument} is neither an OTA package nor a directory of them")
    if not files:
        raise UsageError("no OTA package was given (a directory is searched for *.zip files)")
    return files


def _check_packages(
    files: list[Path], keys: Sequence[TrustedKey], device: str
) -> tuple[list[CheckedPackage], list[Issue]]:
    checked: list[CheckedPackage] = []
    issues: list[Issue] = []
    for path in files:
        package, problems = _check_package(path, keys, device)
        issues.extend(problems)
        if package is not None:
            checked.append(package)
    if not issues:
        issues.extend(_chain_issues(checked))
    return checked, issues


def _check_package(path: Path, keys: Sequence[TrustedKey], device: str) -> tuple[CheckedPackage | None, list[Issue]]:
    if not _FILE_NAME.match(path.name):
        return None, [Issue("BAD_FILE_NAME", f"{path}: the file name must be letters, digits and ._+- to be a URL")]
    # The file's SHA-256 (its name in the web root) is computed beside the signature check, on another core:
    # both read the same pages, so a package costs about one pass of reading however large it is.
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(_hash_file, path)
        verification = verify_package(path, keys)
        if not verification.verified or verification.signer is None:
            hashing.cancel()
            reasons = "; ".join(issue.message for issue in verification.errors) or "no trusted certificate verifies it"
            return None, [Issue("BAD_SIGNATURE", f"{path}: the whole-file signature does not verify: {reasons}")]
        size, digest = hashing.result()
    try:
        metadata = read_package_metadata(path)
    except OtaFormatError as exc:
        return None, [Issue("BAD_METADATA", f"{path}: {exc}")]
    if metadata.post_timestamp == 0:
        return None, [Issue("BAD_METADATA", f"{path}: the metadata has no post-timestamp (ro.build.date.utc)")]
    if device not in metadata.pre_device:
        named = "|".join(metadata.pre_device) or "no device"
        return None, [Issue("WRONG_DEVICE", f"{path} is for {named}, not for {device}")]
    if len(metadata.post_build) != 1:
        return None, [Issue("BAD_METADATA", f"{path}: the metadata must name exactly one post-build fingerprint")]
    if len(metadata.pre_build) > 1:
        return None, [Issue("BAD_METADATA", f"{path}: the metadata names more than one pre-build fingerprint")]
    return CheckedPackage(
        path=path,
        size=size,
        sha256=digest,
        signer_sha256=verification.signer.sha256,
        fingerprint=metadata.post_build[0],
        pre_build=metadata.pre_build[0] if metadata.pre_build else None,
        incremental=metadata.post_build_incremental,
        timestamp=metadata.post_timestamp,
        security_patch_level=metadata.post_security_patch_level,
        sdk_level=metadata.post_sdk_level,
    ), []


def _chain_issues(packages: list[CheckedPackage]) -> list[Issue]:
    """The set names one newest build with its full OTA, and every incremental goes to it from an earlier build."""
    fulls = [item for item in packages if item.pre_build is None]
    if not fulls:
        return [Issue("NO_FULL_OTA", "no full OTA was given: a channel's newest build always has one")]
    newest = max(fulls, key=lambda item: item.timestamp)
    issues = []
    seen: dict[str, Path] = {}
    for item in fulls:
        if item.fingerprint in seen:
            issues.append(Issue("DUPLICATE", f"{item.path} and {seen[item.fingerprint]} are both full OTAs of "
                                             f"{item.fingerprint}"))  # fmt: skip
        seen[item.fingerprint] = item.path
        if item is not newest and item.timestamp == newest.timestamp:
            issues.append(Issue("AMBIGUOUS_NEWEST", f"{item.path} and {newest.path} are different builds with the "
                                                    "same timestamp: which one is newest?"))  # fmt: skip
    from_builds: dict[str, Path] = {}
    for item in packages:
        if item.pre_build is None:
            continue
        if item.fingerprint != newest.fingerprint or item.timestamp != newest.timestamp:
            issues.append(Issue("BROKEN_CHAIN", f"{item.path} updates to {item.fingerprint}, not to the newest build "
                                                f"{newest.fingerprint} (whose full OTA is {newest.path})"))  # fmt: skip
        elif item.pre_build == newest.fingerprint:
            issues.append(Issue("BROKEN_CHAIN", f"{item.path} updates the newest build to itself"))
        elif item.pre_build in from_builds:
            issues.append(Issue("DUPLICATE", f"{item.path} and {from_builds[item.pre_build]} are both incremental "
                                             f"OTAs from {item.pre_build}"))  # fmt: skip
        from_builds.setdefault(item.pre_build, item.path)
    return issues


def _published(target: Path, device: str, channel: str) -> tuple[bytes | None, Channel | None]:
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise ReleaseError(f"cannot read the published channel {target}: {exc.strerror}") from None
    try:
        published = read_channel(data)
    except ChannelFormatError as exc:
        raise ReleaseError(f"the published channel {target} is damaged ({exc}); not publishing over it") from None
    if (published.device, published.channel) != (device, channel):
        raise ReleaseError(f"{target} is the channel {published.channel} of {published.device}; not publishing over it")
    return data, published


def _next_channel(
    packages: list[CheckedPackage],
    published: Channel | None,
    device: str,
    channel: str,
    android_version: str | None,
    allow_rollback: bool,
) -> tuple[Channel, bool, list[str]]:
    fulls = [item for item in packages if item.pre_build is None]
    newest = max(fulls, key=lambda item: item.timestamp)
    earlier = {item.fingerprint: item for item in fulls if item is not newest}
    previous = published.builds if published is not None else []
    rolled_back, withdrawn = False, []
    if published is not None:
        reasons = _rollback_reasons(newest, published.newest)
        if reasons and not allow_rollback:
            raise PublishRefused([Issue("ROLLBACK", f"{reason}; pass --allow-rollback to offer devices this older "
                                                    "build on purpose") for reason in reasons])  # fmt: skip
        rolled_back = bool(reasons)
        withdrawn = [
            build.fingerprint
            for build in previous
            if build.fingerprint != newest.fingerprint and build.timestamp >= newest.timestamp
        ]
    known = {build.fingerprint for build in previous} | set(earlier)
    unknown = [item for item in packages if item.pre_build is not None and item.pre_build not in known]
    if unknown:
        raise PublishRefused(
            [
                Issue("BROKEN_CHAIN", f"{item.path} updates from {item.pre_build}, which is neither on the channel "
                                      "nor among the full OTAs given")
                for item in unknown
            ]
        )  # fmt: skip
    same = published.build(newest.fingerprint) if published is not None else None
    incrementals = {item.pre_build: item for item in same.incrementals} if same is not None else {}
    incrementals.update({item.pre_build: item.ota_file() for item in packages if item.pre_build is not None})
    version = android_version or (same.android_version if same is not None else None)
    builds = [_build(newest, device, channel, list(incrementals.values()), version)]
    kept = [
        build for build in previous if build.fingerprint not in withdrawn and build.fingerprint != newest.fingerprint
    ]
    builds.extend(kept)
    builds.extend(
        _build(item, device, channel, [], None)
        for fingerprint, item in earlier.items()
        if all(build.fingerprint != fingerprint for build in kept)
    )
    builds.sort(key=lambda build: build.timestamp, reverse=True)
    return Channel(device, channel, builds[:KEEP_BUILDS]), rolled_back, withdrawn


def _rollback_reasons(newest: CheckedPackage, current: ChannelBuild) -> list[str]:
    reasons = []
    if newest.timestamp < current.timestamp or (
        newest.timestamp == current.timestamp and newest.fingerprint != current.fingerprint
    ):
        reasons.append(
            f"the channel already offers {current.fingerprint} (timestamp {current.timestamp}); {newest.fingerprint} "
            f"(timestamp {newest.timestamp}) is not newer"
        )
    if (
        newest.security_patch_level is not None
        and current.security_patch_level is not None
        and newest.security_patch_level < current.security_patch_level
    ):
        reasons.append(
            f"the security patch level would go back from {current.security_patch_level} to "
            f"{newest.security_patch_level}"
        )
    return reasons


def _build(
    package: CheckedPackage, device: str, channel: str, incrementals: list[OtaFile], version: str | None
) -> ChannelBuild:
    return ChannelBuild(
        device=device,
        channel=channel,
        fingerprint=package.fingerprint,
        incremental=package.incremental,
        timestamp=package.timestamp,
        security_patch_level=package.security_patch_level,
        full=package.ota_file(),
        incrementals=sorted(incrementals, key=lambda item: item.pre_build or ""),
        sdk_level=package.sdk_level,
        android_version=version,
    )


# -- writing --------------------------------------------------------------------------------------------------------


def _write(
    webroot: Path,
    target: Path,
    published_bytes: bytes | None,
    packages: list[CheckedPackage],
    data: bytes,
    lineage: bytes | None,
    report: ChannelPublishReport,
) -> None:
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReleaseError(f"cannot create {directory}: {exc.strerror}") from None
    busy = ReleaseError(f"another publish to {directory} is running; try again when it has finished")
    with exclusive_lock(directory / ".publish.lock", busy):
        if _current_bytes(target) != published_bytes:
            raise ReleaseError(f"{target} changed while the packages were checked; run the publish again")
        for package in packages:
            folder = directory / PACKAGES / package.sha256
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if copy_checked(package.path, folder / package.path.name, package.sha256, package.size):
                    report.copied += 1
                    report.copied_bytes += package.size
                fsync_directory(folder)
                fsync_directory(folder.parent)
            except ChangedWhileCopyingError:
                raise ReleaseError(
                    f"{package.path} changed after it was checked; the channel was not changed"
                ) from None
            except OSError as exc:
                hint = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
                raise ReleaseError(
                    f"cannot copy {package.path} into {folder}: {exc.strerror}{hint}; the channel was not changed"
                ) from None
        try:
            replace_file(target, data)
            if lineage is not None:
                replace_file(lineage_path(webroot, report.device, report.channel), lineage)
        except OSError as exc:
            raise ReleaseError(f"cannot write the channel file {target}: {exc.strerror}") from None
    fsync_directory(directory.parent)


def _current_bytes(target: Path) -> bytes | None:
    try:
        return target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReleaseError(f"cannot read {target}: {exc.strerror}") from None


def _hash_file(path: Path) -> tuple[int, str]:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ReleaseError(f"cannot read {path}: {exc.strerror}") from None
