"""Per-app metadata files (metadata/<package>.yml), in fdroiddata's field names, checked with line numbers.

fdroiddata's files carry build recipes too (Builds, RepoType, UpdateCheckMode...): those fields are accepted so
that an existing metadata folder reads as it is, and ignored, because this repository indexes APKs it is given and
builds nothing. A field name fdroidserver does not know is an error (a typo such as `AllowedApkSigningKeys` would
otherwise silently drop a signer pin), and so is a value of the wrong type.

AllowedAPKSigningKeys is the app's signer pin: SHA-256 fingerprints of the certificates allowed to sign it. When it
is set, an APK signed by anyone else is refused before it is indexed (`checks`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sealgate.errors import MetadataError
from sealgate.repo.yamlfile import YamlDocument, load_yaml

#: Package names as Android accepts them: dot-separated Java identifiers, at least two segments.
PACKAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")

_TEXT_FIELDS = {
    "License": "license",
    "AuthorName": "author_name",
    "AuthorEmail": "author_email",
    "AuthorWebSite": "author_website",
    "WebSite": "website",
    "SourceCode": "source_code",
    "IssueTracker": "issue_tracker",
    "Translation": "translation",
    "Changelog": "changelog",
    "Donate": "donate",
    "Liberapay": "liberapay",
    "OpenCollective": "open_collective",
    "Bitcoin": "bitcoin",
    "Litecoin": "litecoin",
    "Name": "name",
    "Summary": "summary",
    "Description": "description",
    "CurrentVersion": "current_version",
}
#: fdroiddata fields about building from source: read, type-checked as present, not used.
_BUILD_FIELDS = frozenset(
    {
        "Builds", "RepoType", "Repo", "Binaries", "AutoName", "AutoUpdateMode", "UpdateCheckMode",
        "UpdateCheckIgnore", "VercodeOperation", "UpdateCheckName", "UpdateCheckData", "MaintainerNotes",
        "Provides", "NoSourceSince", "Disabled", "RequiresRoot", "FlattrID", "AuthorPhone", "SecurityContact",
        "sourceCode",
    }
)  # fmt: skip
_KNOWN_FIELDS = frozenset(
    {*_TEXT_FIELDS, *_BUILD_FIELDS, "Categories", "AntiFeatures", "AllowedAPKSigningKeys", "CurrentVersionCode",
     "ArchivePolicy"}
)  # fmt: skip


@dataclass(frozen=True)
class AppMetadata:
    """What the index says about an app besides its APKs, and the policy that applies to its APKs."""

    package: str
    path: str | None = None
    name: str = ""
    summary: str = ""
    description: str = ""
    license: str = ""
    author_name: str = ""
    author_email: str = ""
    author_website: str = ""
    website: str = ""
    source_code: str = ""
    issue_tracker: str = ""
    translation: str = ""
    changelog: str = ""
    donate: str = ""
    liberapay: str = ""
    open_collective: str = ""
    bitcoin: str = ""
    litecoin: str = ""
    current_version: str = ""
    categories: tuple[str, ...] = ()
    #: Anti-feature name -> reason by locale ({} when no reason is given).
    anti_features: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: Lowercase SHA-256 fingerprints of the certificates allowed to sign the app; empty = no pin.
    allowed_signers: frozenset[str] = frozenset()
    current_version_code: int | None = None
    #: Versions kept in repo/ for this app (None: the repository's archive_older).
    archive_policy: int | None = None


def metadata_path(metadata_dir: Path, package: str) -> Path:
    return metadata_dir / f"{package}.yml"


def load_metadata(path: str | os.PathLike[str]) -> AppMetadata:
    """Parse one metadata file; MetadataError naming the line of the first problem."""
    file = Path(path)
    package = file.stem
    document = load_yaml(file)
    if not PACKAGE_NAME.match(package):
        raise MetadataError(str(file), None, f"{package!r} is not a package name, so it cannot name a metadata file")
    data = document.data
    if not isinstance(data, dict):
        raise document.error("the metadata must be a mapping of fields to values")
    for key in data:
        if key not in _KNOWN_FIELDS:
            raise document.error(f"unknown field {key!r} (fields are fdroiddata's, such as Name, License)", key)
    values: dict[str, Any] = {"package": package, "path": str(file)}
    for key, attribute in _TEXT_FIELDS.items():
        if key in data and data[key] is not None:
            values[attribute] = _text(document, key)
    values["categories"] = tuple(_text_list(document, "Categories"))
    values["anti_features"] = _anti_features(document)
    values["allowed_signers"] = _allowed_signers(document)
    values["current_version_code"] = _optional_int(document, "CurrentVersionCode", minimum=0)
    values["archive_policy"] = _archive_policy(document)
    return AppMetadata(**values)


def load_all_metadata(
    metadata_dir: Path, cache_path: Path | None = None
) -> tuple[dict[str, AppMetadata], list[MetadataError]]:
    """Every metadata/*.yml; files with errors are returned as errors (their apps are then skipped, not guessed).

    With `cache_path`, files whose size, mtime and inode are unchanged are not parsed again (parsing YAML is the
    slowest part of updating a large repository when one APK was added).
    """
    apps: dict[str, AppMetadata] = {}
    errors: list[MetadataError] = []
    if not metadata_dir.is_dir():
        return apps, errors
    cache = _read_metadata_cache(cache_path, str(metadata_dir))
    fresh: dict[str, Any] = {}
    for name in sorted(name for name in os.listdir(metadata_dir) if name.endswith(".yml")):
        file = metadata_dir / name
        try:
            info = file.stat()
        except OSError:
            continue
        key = [info.st_size, info.st_mtime_ns, info.st_ino]
        cached = cache.get(name)
        if cached is not None and cached.get("key") == key:
            fresh[name] = cached
        else:
            try:
                fresh[name] = {"key": key, "app": _metadata_to_json(load_metadata(file))}
            except MetadataError as exc:
                fresh[name] = {"key": key, "error": [exc.path, exc.line, exc.message]}
        entry = fresh[name]
        if "error" in entry:
            errors.append(MetadataError(*entry["error"]))
        else:
            metadata = _metadata_from_json(entry["app"])
            apps[metadata.package] = metadata
    if cache_path is not None and fresh != cache:
        _write_metadata_cache(cache_path, str(metadata_dir), fresh)
    return apps, errors


_CACHE_FORMAT = ["sealgate-metadata-cache", 1]


def _read_metadata_cache(path: Path | None, directory: str) -> dict[str, Any]:
    """The cached parses, if made for the same folder (messages name files by the path they were read under)."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("format") != _CACHE_FORMAT or document.get("dir") != directory:
        return {}
    files = document.get("files")
    return files if isinstance(files, dict) else {}


def _write_metadata_cache(path: Path, directory: str, files: dict[str, Any]) -> None:
    from sealgate.durable import replace_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(
            path, json.dumps({"format": _CACHE_FORMAT, "dir": directory, "files": files}, ensure_ascii=False).encode()
        )
    except OSError:
        pass  # a cache that cannot be written only costs the next run a parse


def _metadata_to_json(metadata: AppMetadata) -> dict[str, Any]:
    data = {item.name: getattr(metadata, item.name) for item in fields(metadata)}
    data["categories"] = list(metadata.categories)
    data["anti_features"] = {name: dict(reasons) for name, reasons in metadata.anti_features.items()}
    data["allowed_signers"] = sorted(metadata.allowed_signers)
    return data


def _metadata_from_json(data: dict[str, Any]) -> AppMetadata:
    values = dict(data)
    values["categories"] = tuple(values["categories"])
    values["allowed_signers"] = frozenset(values["allowed_signers"])
    return AppMetadata(**values)


def new_metadata_yaml(package: str, *, name: str | None, signer_sha256: str, version_code: int) -> str:
    """A starting metadata file for an app first seen in `apk`: its signer pinned, the rest left to fill in."""
    lines = [
        "Categories: []",
        "License: Unknown",
        "# AuthorName:",
        "# WebSite:",
        "# SourceCode:",
        "# IssueTracker:",
        "",
        f"Name: {_yaml_text(name or package)}",
        "Summary: ''",
        "Description: ''",
        "",
        "# Only APKs signed by these certificates (SHA-256 of the certificate) are indexed for this app.",
        "AllowedAPKSigningKeys:",
        f"  - {signer_sha256}",
        "",
        f"CurrentVersionCode: {version_code}",
    ]
    return "\n".join(lines) + "\n"


def _yaml_text(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _text(document: YamlDocument, key: str) -> str:
    return document.text(key) or ""


def _text_list(document: YamlDocument, key: str) -> list[str]:
    value = document.data.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise document.error(f"{key} must be a list", key)
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise document.error(f"{key} must list text values", key, index)
    return [str(item) for item in value]


def _anti_features(document: YamlDocument) -> dict[str, dict[str, str]]:
    """A list of names, or a mapping of name -> reason (text, or text by locale), as fdroiddata writes them."""
    value = document.data.get("AntiFeatures")
    if value is None:
        return {}
    if isinstance(value, str | list):
        return {name: {} for name in _text_list(document, "AntiFeatures")}
    if not isinstance(value, dict):
        raise document.error("AntiFeatures must be a list of names or a mapping of name to reason", "AntiFeatures")
    result: dict[str, dict[str, str]] = {}
    for name, reason in value.items():
        if reason is None:
            result[name] = {}
        elif isinstance(reason, str):
            result[name] = {"en-US": reason}
        elif isinstance(reason, dict) and all(isinstance(text, str) for text in reason.values()):
            result[name] = {str(locale): text for locale, text in reason.items()}
        else:
            raise document.error(f"the reason for anti-feature {name!r} must be text", "AntiFeatures", name)
    return result


def _allowed_signers(document: YamlDocument) -> frozenset[str]:
    signers = set()
    for index, item in enumerate(_text_list(document, "AllowedAPKSigningKeys")):
        fingerprint = item.strip().lower().replace(":", "")
        if not _FINGERPRINT.match(fingerprint):
            raise document.error(
                f"{item!r} is not a SHA-256 certificate fingerprint (64 hexadecimal digits)",
                "AllowedAPKSigningKeys",
                index,
            )
        signers.add(fingerprint)
    return frozenset(signers)


def _optional_int(document: YamlDocument, key: str, *, minimum: int) -> int | None:
    value = document.data.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise document.error(f"{key} must be a whole number of at least {minimum}", key)
    return value


def _archive_policy(document: YamlDocument) -> int | None:
    """`ArchivePolicy: 4` or fdroiddata's older `ArchivePolicy: 4 versions`."""
    value = document.data.get("ArchivePolicy")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)(\s+versions?)?\s*", value)
        if match is None:
            raise document.error("ArchivePolicy must be a number of versions", "ArchivePolicy")
        return int(match.group(1))
    return _optional_int(document, "ArchivePolicy", minimum=0)
