"""OTA channel files: what a device downloads to learn the newest build of its channel and where its OTAs are.

One file per device and channel (stable, beta), published as `ota/<device>/<channel>.json` by `sealgate release
publish`. It is JSON in canonical form (UTF-8, keys sorted, no whitespace: `json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`), so the same channel always has the same bytes and the repository's
signed metadata (TUF, a later layer) can name it by hash:

    {
      "format": "sealgate-ota-channel",
      "version": 1,
      "device": "sargo",                       # ro.product.device, as the packages' pre-device names it
      "channel": "stable",
      "builds": [                              # newest first, timestamps strictly decreasing; builds[0] is current
        {
          "fingerprint": "google/sargo/sargo:14/AP1A.240305.019/11385512:user/release-keys",
          "incremental": "11385512",           # ro.build.version.incremental, or null when the package omits it
          "timestamp": 1709600000,             # ro.build.date.utc (post-timestamp)
          "security_patch_level": "2024-03-05",  # post-security-patch-level, or null
          "sdk_level": "34",                   # post-sdk-level, or null
          "android_version": "14",             # given by the publisher, or null
          "full": {"url": "packages/<sha256>/sargo-ota.zip", "size": 123, "sha256": "<64 hex>"},
          "incrementals": [                    # one per earlier build, sorted by pre_build
            {"url": "...", "size": 45, "sha256": "...", "pre_build": "<fingerprint of the build it applies to>"}
          ]
        }
      ]
    }

Every `url` is a relative reference, resolved against the channel file's own URL (RFC 3986), so the tree can be
mirrored anywhere; it never has a scheme, a leading slash, `.` or `..` segments or a query. Earlier builds stay
listed (their packages stay served) so that a device that read an older channel file can still download what it
named, and so that a publisher can refuse to roll the channel back.

The reader is strict in the way the signing bundles' reader (sealgate.custody.bundle) is: a repeated key, an unknown
or missing field, a wrong type or an out-of-range value is a ChannelFormatError with a code, never a guess. This
module only parses and serialises bytes: the device's updater (sealgate.device) imports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sealgate.durable import DuplicateKeyError, unique_keys
from sealgate.errors import ChannelFormatError

FORMAT = "sealgate-ota-channel"
FORMAT_VERSION = 1
#: A channel file names a handful of builds; anything near this size is not one.
MAX_CHANNEL_SIZE = 4 * 1024 * 1024

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_URL_SEGMENT = re.compile(r"[A-Za-z0-9._~+-]+\Z")

_FILE_FIELDS = frozenset({"url", "size", "sha256"})
_BUILD_FIELDS = frozenset(
    {"fingerprint", "incremental", "timestamp", "security_patch_level", "sdk_level", "android_version", "full",
     "incrementals"}
)  # fmt: skip
_CHANNEL_FIELDS = frozenset({"format", "version", "device", "channel", "builds"})


@dataclass(frozen=True)
class OtaFile:
    """One OTA package as the channel names it; `pre_build` is the build an incremental applies to (None: full)."""

    url: str
    size: int
    sha256: str
    pre_build: str | None = None

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"url": self.url, "size": self.size, "sha256": self.sha256}
        if self.pre_build is not None:
            item["pre_build"] = self.pre_build
        return item


@dataclass(frozen=True)
class ChannelBuild:
    device: str
    channel: str
    fingerprint: str
    incremental: str | None
    timestamp: int
    security_patch_level: str | None
    full: OtaFile
    incrementals: list[OtaFile] = field(default_factory=list)
    sdk_level: str | None = None
    android_version: str | None = None

    def incremental_from(self, pre_build: str) -> OtaFile | None:
        """The incremental OTA for a device running `pre_build`, if the channel has one."""
        return next((item for item in self.incrementals if item.pre_build == pre_build), None)

    def ota_for(self, current_build: str) -> OtaFile:
        """What a device running `current_build` downloads: the incremental from its build, or else the full OTA."""
        return self.incremental_from(current_build) or self.full

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "incremental": self.incremental,
            "timestamp": self.timestamp,
            "security_patch_level": self.security_patch_level,
            "sdk_level": self.sdk_level,
            "android_version": self.android_version,
            "full": self.full.to_json(),
            "incrementals": [item.to_json() for item in sorted(self.incrementals, key=_pre_build)],
        }


@dataclass(frozen=True)
class Channel:
    device: str
    channel: str
    builds: list[ChannelBuild]

    @property
    def newest(self) -> ChannelBuild:
        return self.builds[0]

    def build(self, fingerprint: str) -> ChannelBuild | None:
        return next((build for build in self.builds if build.fingerprint == fingerprint), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "device": self.device,
            "channel": self.channel,
            "builds": [build.to_json() for build in self.builds],
        }

    def to_bytes(self) -> bytes:
        """The canonical bytes: what is published, hashed and (later) signed. Checked by reading them back."""
        data = canonical_json(self.to_json())
        read_channel(data)
        return data


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one value, one byte string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def read_channel(data: bytes) -> Channel:
    """Parse a channel file; ChannelFormatError (with a code) for anything that is not exactly the format."""
    if len(data) > MAX_CHANNEL_SIZE:
        raise ChannelFormatError("bad-value", f"the channel file is larger than {MAX_CHANNEL_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ChannelFormatError("not-json", "the channel file is not UTF-8") from None
    try:
        document = json.loads(text, object_pairs_hook=unique_keys, parse_constant=_no_constant)
    except DuplicateKeyError as exc:
        raise ChannelFormatError("duplicate-key", f"the channel file is ambiguous: {exc}") from None
    except ValueError as exc:
        raise ChannelFormatError("not-json", f"the channel file is not valid JSON: {exc}") from None
    except RecursionError:  # json's decoder recurses per nesting level; a hostile mirror can nest 4 MB deep
        raise ChannelFormatError("not-json", "the channel file nests too deeply to be a channel file") from None
    fields = _object(document, "the channel file", _CHANNEL_FIELDS)
    if fields["format"] != FORMAT:
        raise ChannelFormatError("bad-value", f"this is not a sealgate channel file (format is {fields['format']!r})")
    if type(fields["version"]) is not int or fields["version"] != FORMAT_VERSION:
        raise ChannelFormatError(
            "bad-value", f"the channel file has version {fields['version']!r}; this sealgate reads {FORMAT_VERSION}"
        )
    device = _match(fields["device"], _NAME, "device", "a device name such as sargo")
    channel = _match(fields["channel"], _NAME, "channel", "a channel name such as stable")
    items = fields["builds"]
    if not isinstance(items, list):
        raise ChannelFormatError("wrong-type", "builds must be a list")
    if not items:
        raise ChannelFormatError("bad-value", "builds is empty: a channel names at least its newest build")
    builds = [_build(item, f"builds[{index}]", device, channel) for index, item in enumerate(items)]
    for index in range(1, len(builds)):
        if builds[index].timestamp >= builds[index - 1].timestamp:
            raise ChannelFormatError(
                "bad-value", f"builds[{index}] is not older than builds[{index - 1}]: builds are listed newest first"
            )
    fingerprints = [build.fingerprint for build in builds]
    if len(set(fingerprints)) != len(fingerprints):
        raise ChannelFormatError("bad-value", "a build fingerprint is listed twice")
    return Channel(device, channel, builds)


def check_relative_url(value: object, where: str) -> str:
    """A relative reference of plain path segments: it resolves under the channel file's directory, nowhere else."""
    url = _string(value, where)
    segments = url.split("/")
    if any(segment in (".", "..") or not _URL_SEGMENT.match(segment) for segment in segments):
        raise ChannelFormatError(
            "bad-value", f"{where} must be a relative path of plain segments (letters, digits, ._~+-), not {url!r}"
        )
    return url


# -- internals ------------------------------------------------------------------------------------------------------


def _build(value: object, where: str, device: str, channel: str) -> ChannelBuild:
    fields = _object(value, where, _BUILD_FIELDS)
    fingerprint = _string(fields["fingerprint"], f"{where}.fingerprint")
    timestamp = fields["timestamp"]
    if type(timestamp) is not int:
        raise ChannelFormatError("wrong-type", f"{where}.timestamp must be an integer")
    if timestamp < 0:
        raise ChannelFormatError("bad-value", f"{where}.timestamp must not be negative")
    spl = fields["security_patch_level"]
    if spl is not None:
        _match(spl, _DATE, f"{where}.security_patch_level", "a date like 2024-03-05")
    full = _file(fields["full"], f"{where}.full", incremental=False)
    items = fields["incrementals"]
    if not isinstance(items, list):
        raise ChannelFormatError("wrong-type", f"{where}.incrementals must be a list")
    incrementals = [_file(item, f"{where}.incrementals[{i}]", incremental=True) for i, item in enumerate(items)]
    pre_builds = [item.pre_build for item in incrementals]
    if len(set(pre_builds)) != len(pre_builds):
        raise ChannelFormatError("bad-value", f"{where} has two incremental OTAs from the same build")
    if fingerprint in pre_builds:
        raise ChannelFormatError("bad-value", f"{where} has an incremental OTA from the build to itself")
    return ChannelBuild(
        device=device,
        channel=channel,
        fingerprint=fingerprint,
        incremental=_optional_string(fields["incremental"], f"{where}.incremental"),
        timestamp=timestamp,
        security_patch_level=spl,
        full=full,
        incrementals=incrementals,
        sdk_level=_optional_string(fields["sdk_level"], f"{where}.sdk_level"),
        android_version=_optional_string(fields["android_version"], f"{where}.android_version"),
    )


def _file(value: object, where: str, *, incremental: bool) -> OtaFile:
    fields = _object(value, where, _FILE_FIELDS | {"pre_build"} if incremental else _FILE_FIELDS)
    size = fields["size"]
    if type(size) is not int:
        raise ChannelFormatError("wrong-type", f"{where}.size must be an integer")
    if size < 0:
        raise ChannelFormatError("bad-value", f"{where}.size must not be negative")
    return OtaFile(
        url=check_relative_url(fields["url"], f"{where}.url"),
        size=size,
        sha256=_match(fields["sha256"], _HEX64, f"{where}.sha256", "64 lowercase hex digits"),
        pre_build=_string(fields["pre_build"], f"{where}.pre_build") if incremental else None,
    )


def _object(value: object, where: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ChannelFormatError("wrong-type", f"{where} must be a JSON object")
    extra = sorted(set(value) - allowed)
    if extra:
        raise ChannelFormatError("unknown-field", f"{where} has unknown fields: {', '.join(extra)}")
    missing = sorted(allowed - set(value))
    if missing:
        raise ChannelFormatError("missing-field", f"{where} lacks {', '.join(missing)}")
    return value


def _string(value: object, where: str, *, limit: int = 1024) -> str:
    if not isinstance(value, str):
        raise ChannelFormatError("wrong-type", f"{where} must be a string")
    if not value or len(value) > limit or any(ord(ch) < 0x20 for ch in value):
        raise ChannelFormatError("bad-value", f"{where} must be 1 to {limit} printable characters")
    return value


def _optional_string(value: object, where: str) -> str | None:
    return None if value is None else _string(value, where)


def _match(value: object, pattern: re.Pattern[str], where: str, expected: str) -> str:
    if not isinstance(value, str):
        raise ChannelFormatError("wrong-type", f"{where} must be a string ({expected})")
    if not pattern.match(value):
        raise ChannelFormatError("bad-value", f"{where} must be {expected}, not {value!r}")
    return value


def _pre_build(item: OtaFile) -> str:
    return item.pre_build or ""


def _no_constant(name: str) -> Any:
    raise ChannelFormatError("not-json", f"the channel file contains {name}, which is not JSON")
