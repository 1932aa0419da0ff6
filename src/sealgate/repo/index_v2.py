"""index-v2.json, entry.json and the JSON merge-patch diffs, field for field as fdroidserver 2.4.5 writes them.

Key order matters to nobody's parser but to every byte comparison (reruns, diffs, mirrors that deduplicate by
hash), so each object is built in fdroidserver's insertion order. Serialisation is fdroidserver's: without
--pretty one line with Python's default separators, with --pretty an indent of 2; non-ASCII as UTF-8; no
trailing newline.

Where sealgate knowingly differs: `signer.sha256` lists every certificate Android uses at the newest level (the
same single value for an ordinary APK; fdroidserver keeps only the first of several signers), and an APK signed with
a key rotation is indexed under its current signer (fdroidserver refuses such APKs as having no consistent
signer, while Android installs them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sealgate.repo.model import DEFAULT_LOCALE, INDEX_VERSION, FileEntry, IndexedApp, IndexedVersion, Section
from sealgate.repo.scan import ScannedApk

INDEX_V2 = "index-v2.json"
ENTRY = "entry.json"
DIFF_DIR = "diff"


def dumps(document: Any, *, pretty: bool) -> bytes:
    """fdroidserver's serialisation of index-v2.json, entry.json and diffs."""
    if pretty:
        return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def build_index_v2(section: Section) -> dict[str, Any]:
    packages = {app.package: _package(app) for app in section.apps}
    repo = _repo(section, sorted({category for app in section.apps for category in app.metadata.categories}))
    return {"repo": repo, "packages": packages}


def _repo(section: Section, categories: list[str]) -> dict[str, Any]:
    repo: dict[str, Any] = {
        "name": {DEFAULT_LOCALE: section.name},
        "description": {DEFAULT_LOCALE: section.description},
    }
    if section.icon is not None:
        repo["icon"] = {DEFAULT_LOCALE: section.icon.to_json()}
    repo["address"] = section.address
    if section.mirrors:
        repo["mirrors"] = [{"isPrimary": True, "url": section.address}] + [
            {"url": mirror} for mirror in section.mirrors if mirror != section.address
        ]
    repo["timestamp"] = section.timestamp
    if categories:
        repo["categories"] = {category: {"name": {DEFAULT_LOCALE: category}} for category in categories}
    return repo


def _package(app: IndexedApp) -> dict[str, Any]:
    return {
        "metadata": _metadata(app),
        "versions": {version.scan.sha256: _version(version, app) for version in app.versions},
    }


def _metadata(app: IndexedApp) -> dict[str, Any]:
    meta = app.metadata
    result: dict[str, Any] = {}
    for key, value in (
        ("added", app.added),
        ("categories", list(meta.categories)),
        ("changelog", meta.changelog),
        ("issueTracker", meta.issue_tracker),
        ("lastUpdated", app.last_updated),
        ("license", meta.license),
        ("sourceCode", meta.source_code),
        ("translation", meta.translation),
        ("webSite", meta.website),
        ("authorEmail", meta.author_email),
        ("authorName", meta.author_name),
        ("authorWebSite", meta.author_website),
        ("bitcoin", meta.bitcoin),
        ("liberapay", meta.liberapay),
        ("litecoin", meta.litecoin),
        ("openCollective", meta.open_collective),
    ):
        if value:
            result[key] = value
    name = meta.name or _label(app) or app.package
    result["name"] = {DEFAULT_LOCALE: name}
    if meta.summary:
        result["summary"] = {DEFAULT_LOCALE: meta.summary}
    if meta.description:
        result["description"] = {DEFAULT_LOCALE: meta.description}
    if result.get("license") == "Unknown":
        del result["license"]
    if meta.donate:
        result["donate"] = [meta.donate]
    if app.icon is not None:
        result["icon"] = {DEFAULT_LOCALE: app.icon.to_json()}
    if app.preferred_signer:
        result["preferredSigner"] = app.preferred_signer
    return result


def _label(app: IndexedApp) -> str:
    """The newest APK's label, where the manifest gives it as text (a resource reference is not a name)."""
    newest = max(app.versions, key=lambda version: version.scan.version_code, default=None)
    return newest.scan.label if newest is not None else ""


def _version(version: IndexedVersion, app: IndexedApp) -> dict[str, Any]:
    scan = version.scan
    result: dict[str, Any] = {
        "added": version.added,
        "file": {"name": f"/{scan.name}", "sha256": scan.sha256, "size": scan.size},
        "manifest": manifest_v2(scan),
    }
    anti_features = dict(app.metadata.anti_features)
    if anti_features:
        result["antiFeatures"] = {name: dict(sorted(anti_features[name].items())) for name in sorted(anti_features)}
    if scan.version_code > app.current_version_code:
        result["releaseChannels"] = ["Beta"]
    return result


def manifest_v2(scan: ScannedApk) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    if scan.native_abis:
        manifest["nativecode"] = sorted(scan.native_abis)
    manifest["versionName"] = scan.version_name
    if scan.max_sdk is not None:
        manifest["maxSdkVersion"] = scan.max_sdk
    manifest["versionCode"] = scan.version_code
    if scan.features:
        manifest["features"] = [{"name": feature} for feature in scan.features]
    manifest["usesSdk"] = {
        "minSdkVersion": scan.min_sdk,
        "targetSdkVersion": scan.target_sdk if scan.target_sdk is not None else scan.min_sdk,
    }
    if scan.signers:
        manifest["signer"] = {"sha256": list(scan.signers)}
    for key, permissions in (
        ("usesPermission", index_permissions(scan)),
        ("usesPermissionSdk23", list(scan.permissions_sdk23)),
    ):
        if permissions:
            manifest[key] = [
                {"name": name, "maxSdkVersion": limit} if limit else {"name": name} for name, limit in permissions
            ]
    return manifest


_WRITE_EXTERNAL = "android.permission.WRITE_EXTERNAL_STORAGE"
_READ_EXTERNAL = "android.permission.READ_EXTERNAL_STORAGE"
_READ_PHONE_STATE = "android.permission.READ_PHONE_STATE"
_READ_CONTACTS, _READ_CALL_LOG = "android.permission.READ_CONTACTS", "android.permission.READ_CALL_LOG"
_WRITE_CONTACTS, _WRITE_CALL_LOG = "android.permission.WRITE_CONTACTS", "android.permission.WRITE_CALL_LOG"


def index_permissions(scan: ScannedApk) -> list[tuple[str, int | None]]:
    """The manifest's uses-permission list (in order, repeats kept) plus those Android implies for old targets.

    Android grants an app targeting API < 4 storage and phone-state access it never asked for, and read access with
    write access; the index lists them (as fdroidserver and aapt do) so that users see what the app really gets.
    """
    declared = list(scan.permissions)
    names = {name for name, _ in (*declared, *scan.permissions_sdk23)}
    target = scan.target_sdk if scan.target_sdk is not None else scan.min_sdk
    implied: list[tuple[str, int | None]] = []
    implied_write = False
    if target < 4:
        if _WRITE_EXTERNAL not in names:
            implied.append((_WRITE_EXTERNAL, None))
            implied_write = True
        if _READ_PHONE_STATE not in names:
            implied.append((_READ_PHONE_STATE, None))
    if (_WRITE_EXTERNAL in names or implied_write) and _READ_EXTERNAL not in names:
        limit = next((limit for name, limit in declared if name == _WRITE_EXTERNAL), None)
        implied.append((_READ_EXTERNAL, limit))
    if target < 16:
        if _READ_CONTACTS in names and _READ_CALL_LOG not in names:
            implied.append((_READ_CALL_LOG, None))
        if _WRITE_CONTACTS in names and _WRITE_CALL_LOG not in names:
            implied.append((_WRITE_CALL_LOG, None))
    return declared + implied


def build_entry(
    timestamp: int, index: FileEntry, package_count: int, diffs: Mapping[int, tuple[FileEntry, int]]
) -> dict[str, Any]:
    """entry.json: what a client fetches first, signed, naming the index (and diffs) by hash."""
    return {
        "timestamp": timestamp,
        "version": INDEX_VERSION,
        "index": {**index.to_json(), "numPackages": package_count},
        "diffs": {
            str(stamp): {**entry.to_json(), "numPackages": count} for stamp, (entry, count) in sorted(diffs.items())
        },
    }


def merge_patch(source: Any, target: Any) -> Any:
    """RFC 7386 JSON merge patch from `source` to `target`: removed keys first (as null), then added or changed."""
    if not isinstance(source, dict) or not isinstance(target, dict):
        return target
    patch: dict[str, Any] = {key: None for key in source if key not in target}
    for key, value in target.items():
        if key not in source:
            patch[key] = value
        elif value != source[key]:
            patch[key] = merge_patch(source[key], value)
    return patch


def without_timestamps(index: Mapping[str, Any]) -> dict[str, Any]:
    """The index minus its timestamp: what decides whether a rerun changed anything."""
    repo = {key: value for key, value in index.get("repo", {}).items() if key != "timestamp"}
    return {**index, "repo": repo}
