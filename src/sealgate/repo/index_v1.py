"""index-v1.json as fdroidserver 2.4.5 writes it, for F-Droid clients that predate index-v2.

fdroidserver builds each app and version object by sorting its internal field names (CamelCase metadata fields
before lowercase computed ones) and dropping empty values, then renames a few fields to the client's names; the
order of keys below follows from that. Serialisation is `json.dump` with ASCII escapes, indented with --pretty.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sealgate.repo.index_v2 import index_permissions
from sealgate.repo.model import DEFAULT_LOCALE, INDEX_VERSION, IndexedApp, IndexedVersion, Section

INDEX_V1 = "index-v1.json"


def dumps_v1(document: Any, *, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(document, indent=2).encode("ascii")
    return json.dumps(document).encode("ascii")


def build_index_v1(section: Section) -> dict[str, Any]:
    repo: dict[str, Any] = {"timestamp": section.timestamp, "version": INDEX_VERSION, "name": section.name}
    repo["icon"] = section.icon_name
    # fdroidserver's repo and archive sections really do order these two differently.
    pairs = (("address", section.address), ("description", section.description))
    for key, value in pairs if section.kind == "repo" else reversed(pairs):
        repo[key] = value
    mirrors = [mirror for mirror in section.mirrors if mirror != section.address]
    if mirrors:
        repo["mirrors"] = mirrors
    apps = sorted(section.apps, key=lambda app: (_display_name(app).upper(), app.package))
    return {
        "repo": repo,
        "requests": {"install": [], "uninstall": []},
        "apps": [_app(app) for app in apps],
        "packages": {app.package: [_version(version) for version in app.versions] for app in section.apps},
    }


def _display_name(app: IndexedApp) -> str:
    meta = app.metadata
    if meta.name:
        return meta.name
    label = _newest_label(app)
    return label or app.package


def _newest_label(app: IndexedApp) -> str:
    newest = max(app.versions, key=lambda version: version.scan.version_code, default=None)
    return newest.scan.label if newest is not None else ""


def _app(app: IndexedApp) -> dict[str, Any]:
    meta = app.metadata
    newest = max(app.versions, key=lambda version: version.scan.version_code, default=None)
    current = next((v for v in app.versions if v.scan.version_code == app.current_version_code), newest)
    fields: dict[str, Any] = {
        "AllowedAPKSigningKeys": sorted(meta.allowed_signers),
        "AntiFeatures": sorted(meta.anti_features),
        "AuthorEmail": meta.author_email,
        "AuthorName": meta.author_name,
        "AuthorWebSite": meta.author_website,
        "Bitcoin": meta.bitcoin,
        "Categories": list(meta.categories),
        "Changelog": meta.changelog,
        "CurrentVersion": meta.current_version or (current.scan.version_name if current is not None else ""),
        "CurrentVersionCode": str(app.current_version_code),
        "Description": meta.description,
        "Donate": meta.donate,
        "IssueTracker": meta.issue_tracker,
        "Liberapay": meta.liberapay,
        "License": meta.license or "Unknown",
        "Litecoin": meta.litecoin,
        "Name": meta.name,
        "OpenCollective": meta.open_collective,
        "SourceCode": meta.source_code,
        "Summary": meta.summary,
        "Translation": meta.translation,
        "WebSite": meta.website,
        "added": app.added,
        "icon": app.icon.name.rsplit("/", 1)[-1] if app.icon is not None else "",
        "id": app.package,
        "lastUpdated": app.last_updated,
    }
    label = _newest_label(app)
    if label:
        fields["localized"] = {DEFAULT_LOCALE: {"name": label}}
    result: dict[str, Any] = {}
    for key in sorted(fields):
        value = fields[key]
        if not value:
            continue
        if key == "id":
            result["packageName"] = value
        elif key == "CurrentVersionCode":
            result["suggestedVersionCode"] = value
        elif key == "CurrentVersion":
            result["suggestedVersionName"] = value
        else:
            result[key[:1].lower() + key[1:]] = value
    return result


def _version(version: IndexedVersion) -> dict[str, Any]:
    scan = version.scan
    signer_der = _first_signer_der(version)
    fields: dict[str, Any] = {
        "added": version.added,
        "apkName": scan.name,
        "features": list(scan.features),
        "hash": scan.sha256,
        "hashType": "sha256",
        "maxSdkVersion": scan.max_sdk,
        "minSdkVersion": scan.min_sdk,
        "nativecode": sorted(scan.native_abis),
        "packageName": scan.package,
        "sig": hashlib.md5(signer_der.hex().encode("ascii"), usedforsecurity=False).hexdigest() if signer_der else "",
        "signer": version.signer,
        "size": scan.size,
        "targetSdkVersion": scan.target_sdk,
        "uses-permission": [[name, limit] for name, limit in index_permissions(scan)],
        "uses-permission-sdk-23": [[name, limit] for name, limit in scan.permissions_sdk23],
        "versionCode": scan.version_code,
        "versionName": scan.version_name,
    }
    return {key: fields[key] for key in sorted(fields) if fields[key]}


def _first_signer_der(version: IndexedVersion) -> bytes:
    """The certificate behind `signer` (the first one Android uses at the newest level)."""
    identities = version.scan.identities
    if not identities or not identities[-1].certificates:
        return b""
    return identities[-1].certificates[0]
