"""Reading a repository over HTTP(S) as an F-Droid client does: entry.jar first, verified, then the index by hash.

The fingerprint (SHA-256 of the index signing certificate) is the only trust anchor: the JAR must be signed by
exactly that certificate, and every later file is accepted only if its SHA-256 is the one the signed entry.json
names. Sizes are bounded before anything is parsed, and nothing is written to disk but a private temporary file
for the JAR check. This is the read side that `repo fetch` prints and the device's store client builds on.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from sealgate.errors import RepoError
from sealgate.repo.index_jar import ENTRY_JAR, INDEX_V1_JAR, normalise_fingerprint, read_index_jar_bytes

#: entry.jar is a few KiB; anything far larger is not an entry file.
MAX_ENTRY_JAR = 16 * 1024 * 1024
#: index-v2.json of f-droid.org is about 30 MB; a bound keeps a hostile server from exhausting memory.
MAX_INDEX = 512 * 1024 * 1024
USER_AGENT = "sealgate"


@dataclass(frozen=True)
class FetchedIndex:
    address: str
    fingerprint: str
    entry: dict[str, Any]
    index: dict[str, Any]
    #: "v2" (entry.jar + index-v2.json) or "v1" (index-v1.jar, for repositories made before index-v2).
    format: str = "v2"


def fetch_index(url: str, fingerprint: str | None = None, *, timeout: float = 30.0) -> FetchedIndex:
    """Download and verify the index-v2 of the repository at `url` (which may carry ?fingerprint=...)."""
    base, from_url = _split(url)
    wanted = normalise_fingerprint(fingerprint or from_url or "")
    if len(wanted) != 64:
        raise RepoError("give the repository's fingerprint (64 hexadecimal digits): --fingerprint or ?fingerprint=")
    try:
        jar = _get(f"{base}/{ENTRY_JAR}", MAX_ENTRY_JAR, timeout)
    except _NotFound:
        return _fetch_v1(base, wanted, timeout)
    verified = read_index_jar_bytes(jar, "entry.json", expected_fingerprint=wanted, label=f"{base}/{ENTRY_JAR}")
    try:
        entry = json.loads(verified.data)
        named = entry["index"]
        name, digest, size = str(named["name"]), str(named["sha256"]), int(named["size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RepoError(f"{base}/{ENTRY_JAR}: entry.json is not an F-Droid entry file: {exc}") from None
    if not name.startswith("/") or ".." in name.split("/"):
        raise RepoError(f"{base}/{ENTRY_JAR} names the index {name!r}, which is not a path inside the repository")
    if size > MAX_INDEX:
        raise RepoError(f"the index is {size} bytes, over the {MAX_INDEX >> 20} MiB limit")
    data = _get(base + name, size, timeout)
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise RepoError(f"{base}{name} is not the file the signed entry.json names (hash or size differ)")
    try:
        index = json.loads(data)
    except ValueError as exc:
        raise RepoError(f"{base}{name} is not JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("packages"), dict):
        raise RepoError(f"{base}{name} is not an index-v2 file")
    return FetchedIndex(base, verified.fingerprint, entry, index)


def _fetch_v1(base: str, fingerprint: str, timeout: float) -> FetchedIndex:
    """A repository without entry.jar: its index-v1.jar, verified the same way (one signer, that fingerprint)."""
    jar = _get(f"{base}/{INDEX_V1_JAR}", MAX_INDEX, timeout)
    verified = read_index_jar_bytes(
        jar, "index-v1.json", expected_fingerprint=fingerprint, label=f"{base}/{INDEX_V1_JAR}"
    )
    try:
        index = json.loads(verified.data)
    except ValueError as exc:
        raise RepoError(f"{base}/{INDEX_V1_JAR} does not hold JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("packages"), dict):
        raise RepoError(f"{base}/{INDEX_V1_JAR} is not an index-v1 file")
    return FetchedIndex(base, verified.fingerprint, {}, index, format="v1")


class _NotFound(RepoError):
    """The server has no such file (HTTP 404)."""


def _split(url: str) -> tuple[str, str | None]:
    """The repository's base address, and the fingerprint an F-Droid URL may carry in its query."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RepoError(f"{url!r} is not an http(s) address")
    query = urllib.parse.parse_qs(parts.query)
    values = query.get("fingerprint")
    fingerprint = values[0] if values else None
    path = parts.path.rstrip("/")
    for suffix in ("/entry.jar", "/index-v2.json", "/index-v1.jar"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), fingerprint


def _get(url: str, limit: int, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        error = _NotFound if exc.code == 404 else RepoError
        raise error(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RepoError(f"{url}: cannot download: {reason}") from None
    if len(data) > limit:
        raise RepoError(f"{url} is larger than the {limit}-byte limit; refusing it")
    return data


def summarise(fetched: FetchedIndex) -> list[dict[str, Any]]:
    """One line per app: package, name, newest version, its signer (for `repo fetch`)."""
    if fetched.format == "v1":
        return _summarise_v1(fetched.index)
    rows = []
    for package, value in sorted(fetched.index["packages"].items()):
        versions = list(value.get("versions", {}).values())
        newest = max(versions, key=lambda v: v.get("manifest", {}).get("versionCode", 0), default=None)
        manifest = newest.get("manifest", {}) if newest else {}
        name = value.get("metadata", {}).get("name", {})
        rows.append(
            {
                "package": package,
                "name": name.get("en-US") or next(iter(name.values()), package),
                "versions": len(versions),
                "version_code": manifest.get("versionCode"),
                "version_name": manifest.get("versionName"),
                "signer": (manifest.get("signer", {}).get("sha256") or [None])[0],
            }
        )
    return rows


def _summarise_v1(index: dict[str, Any]) -> list[dict[str, Any]]:
    names = {
        app.get("packageName"): app.get("name") or app.get("localized", {}).get("en-US", {}).get("name")
        for app in index.get("apps", [])
        if isinstance(app, dict)
    }
    rows = []
    for package, versions in sorted(index["packages"].items()):
        listed = [version for version in versions if isinstance(version, dict)] if isinstance(versions, list) else []
        newest = max(listed, key=lambda v: v.get("versionCode", 0), default={})
        rows.append(
            {
                "package": package,
                "name": names.get(package) or package,
                "versions": len(listed),
                "version_code": newest.get("versionCode"),
                "version_name": newest.get("versionName"),
                "signer": newest.get("signer"),
            }
        )
    return rows
