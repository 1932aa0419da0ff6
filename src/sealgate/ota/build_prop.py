"""The post-build facts of an OTA package, read from the build's build.prop.

A release engineer has the target build's system build.prop at hand; releasetools reads the same properties from
it (BuildInfo in common.py, UpdateDeviceState in ota_utils.py): ro.build.fingerprint (or, when a build leaves it
out, the fingerprint BuildInfo.CalculateFingerprint assembles from brand, name, device, release, id, incremental,
type and tags), ro.build.version.incremental, ro.build.date.utc (post-timestamp), ro.build.version.security_patch,
ro.build.version.sdk, and ro.product.device (or the first partition-qualified ro.product.<partition>.device in
ro.product.property_source_order's default order). `key=value` lines, '#' comments, the last definition wins, as
releasetools' LoadDictionaryFromLines reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sealgate.errors import OtaFormatError
from sealgate.ota.small_text import read_small_text

_MAX_SIZE = 4 * 1024 * 1024
#: ro.product.property_source_order's default, for builds that only define ro.product.<partition>.device.
_PRODUCT_SOURCES = ("product", "odm", "vendor", "system_ext", "system")


@dataclass(frozen=True)
class BuildFacts:
    """What an A/B package's postcondition says about the build; None where the build.prop does not say."""

    fingerprint: str | None
    incremental: str | None
    timestamp: int | None
    security_patch_level: str | None
    sdk_level: str | None
    device: str | None


def read_build_prop(path: Path) -> dict[str, str]:
    """The properties of a build.prop file; OtaFormatError when it is not readable text."""
    _, text = read_small_text(path, limit=_MAX_SIZE, encoding="utf-8", what="a build.prop")
    return parse_prop_lines(text)


def parse_prop_lines(text: str, *, strip_parts: bool = True) -> dict[str, str]:
    """`key=value` lines as releasetools' LoadDictionaryFromLines reads them: split on newlines, each line trimmed,
    blank lines, '#' comments and lines without '=' skipped, the last definition wins. `strip_parts` also trims the
    key and the value around the '=' (how build.prop is read); misc_info.txt keeps them as LoadDictionaryFromLines
    does."""
    properties: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            properties[key.strip() if strip_parts else key] = value.strip() if strip_parts else value
    return properties


def build_facts(properties: dict[str, str], *, where: str = "build.prop") -> BuildFacts:
    timestamp_text = properties.get("ro.build.date.utc")
    timestamp = None
    if timestamp_text is not None:
        if not timestamp_text.isascii() or not timestamp_text.isdigit() or len(timestamp_text) > 19:
            raise OtaFormatError(f"{where}: ro.build.date.utc is {timestamp_text!r}, not a number of seconds")
        timestamp = int(timestamp_text)
    device = properties.get("ro.product.device") or next(
        (
            properties[key]
            for key in (f"ro.product.{source}.device" for source in _PRODUCT_SOURCES)
            if key in properties
        ),
        None,
    )
    return BuildFacts(
        fingerprint=properties.get("ro.build.fingerprint") or _calculated_fingerprint(properties, device),
        incremental=properties.get("ro.build.version.incremental") or None,
        timestamp=timestamp,
        security_patch_level=properties.get("ro.build.version.security_patch") or None,
        sdk_level=properties.get("ro.build.version.sdk") or None,
        device=device,
    )


def _calculated_fingerprint(properties: dict[str, str], device: str | None) -> str | None:
    """BuildInfo.CalculateFingerprint: brand/name/device:release/id/incremental:type/tags."""
    parts = {
        "brand": properties.get("ro.product.brand"),
        "name": properties.get("ro.product.name"),
        "release": properties.get("ro.build.version.release_or_codename") or properties.get("ro.build.version.release"),
        "id": properties.get("ro.build.id"),
        "incremental": properties.get("ro.build.version.incremental"),
        "type": properties.get("ro.build.type"),
        "tags": properties.get("ro.build.tags"),
    }
    if device is None or any(value is None for value in parts.values()):
        return None
    return "{brand}/{name}/{device}:{release}/{id}/{incremental}:{type}/{tags}".format(device=device, **parts)
