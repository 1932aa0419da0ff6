"""`repo publish DEST`: switch a web root to the repository's new state in one atomic step.

Readers must see the old repository or the new one, never a mix, and a crash at any moment must leave one of the
two. So nothing that is served is ever changed in place:

    DEST/repo -> .sealgate/current/repo            (symlinks made once; what the web server serves)
    DEST/archive -> .sealgate/current/archive
    DEST/.sealgate/current -> releases/<id>        (the one pointer a publish replaces, by rename)
    DEST/.sealgate/releases/<id>/{repo,archive}/   (a complete tree per publish, hard links into objects/)
    DEST/.sealgate/objects/<sha256>                (every published file once, read-only, named by its hash)

A publish first checks the working copy as a client would (entry.jar verifies with the repository's key, names
index-v2.json and every diff by hash; index-v1.jar verifies and holds index-v1.json; every APK and icon the
indexes name is present with that hash), copies each new file into objects/ (hashing as it copies, fsynced),
links the new release together, fsyncs it, and only then renames the `current` pointer. A release also keeps
the files that the previous releases' indexes named, so a client that read an older index can still download
what it lists. The last KEEP_RELEASES releases stay; older ones and unreferenced objects are removed after the
switch.

A signing key never changes silently: a release signed by another key than the one published is refused unless
the caller says the key rotation is intended.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.durable import ChangedWhileCopyingError, copy_checked, exclusive_lock, fsync_directory
from sealgate.errors import RepoError
from sealgate.repo import index_jar
from sealgate.repo.index_v1 import INDEX_V1
from sealgate.repo.index_v2 import ENTRY, INDEX_V2
from sealgate.repo.scan import hash_file

STORE = ".sealgate"
KEEP_RELEASES = 10
SECTIONS = ("repo", "archive")


@dataclass
class PublishReport:
    release: str
    fingerprint: str
    files: int = 0
    copied: int = 0
    copied_bytes: int = 0
    kept_from_earlier: int = 0
    removed_releases: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "fingerprint": self.fingerprint,
            "files": self.files,
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "kept_from_earlier": self.kept_from_earlier,
            "removed_releases": self.removed_releases,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class CheckedSection:
    """A section of a working copy or release that passed the client's checks: its files by path."""

    kind: str
    fingerprint: str
    #: Relative path within the section -> (sha256, size).
    files: dict[str, tuple[str, int]]


def check_section(directory: Path, kind: str, expected_fingerprint: str | None = None) -> CheckedSection:
    """What a client checks, from the files alone; RepoError naming the first problem."""
    entry_jar = directory / index_jar.ENTRY_JAR
    if not entry_jar.is_file():
        raise RepoError(f"{directory} has no {index_jar.ENTRY_JAR}: the index is not signed (run `repo update`)")
    verified = index_jar.read_index_jar(entry_jar, ENTRY, expected_fingerprint=expected_fingerprint)
    fingerprint = verified.fingerprint
    try:
        entry = json.loads(verified.data)
        named = [entry["index"], *entry.get("diffs", {}).values()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RepoError(f"{entry_jar}: entry.json is not an F-Droid entry file: {exc}") from None
    files: dict[str, tuple[str, int]] = {}
    for item in named:
        name = _relative(str(item.get("name", "")), entry_jar)
        digest, size = _hash_file(directory / name)
        if (digest, size) != (item.get("sha256"), item.get("size")):
            raise RepoError(f"{directory / name} is not the file entry.json names (hash or size differ)")
        files[name] = (digest, size)
    v1 = index_jar.read_index_jar(directory / index_jar.INDEX_V1_JAR, INDEX_V1, expected_fingerprint=fingerprint)
    if (directory / INDEX_V1).read_bytes() != v1.data:
        raise RepoError(f"{directory / INDEX_V1} differs from the one signed in {index_jar.INDEX_V1_JAR}")
    for name in (ENTRY, INDEX_V1, index_jar.ENTRY_JAR, index_jar.INDEX_V1_JAR):
        files[name] = _hash_file(directory / name)
    # Per-density icons: index-v1 clients fetch icons-<dpi>/<package>.<versionCode>.png without an index entry.
    for folder in sorted(directory.glob("icons-*")):
        for path in sorted(folder.glob("*.png")):
            files[f"{folder.name}/{path.name}"] = _hash_file(path)
    index = json.loads((directory / INDEX_V2).read_bytes())
    for name, digest, size in _indexed_files(index):
        path = directory / _relative(name, directory / INDEX_V2)
        if not path.is_file():
            raise RepoError(f"{path} is named by {INDEX_V2} but missing")
        files[_relative(name, directory / INDEX_V2)] = (digest, size)
    return CheckedSection(kind, fingerprint, files)


def publish(
    working: Path,
    dest: Path,
    *,
    expected_fingerprint: str | None = None,
    allow_new_key: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> PublishReport:
    """Publish the working copy `working` (holding repo/ and maybe archive/) to the web root `dest`."""
    started = time.monotonic()
    sections = [
        check_section(working / kind, kind, expected_fingerprint)
        for kind in SECTIONS
        if (working / kind / index_jar.ENTRY_JAR).is_file() or kind == "repo"
    ]
    fingerprint = sections[0].fingerprint
    if any(section.fingerprint != fingerprint for section in sections):
        raise RepoError("repo/ and archive/ are signed by different keys; refusing to publish a mixed repository")
    store = dest / STORE
    _prepare(dest, store)
    with _publish_lock(store):
        return _publish_locked(working, store, sections, fingerprint, allow_new_key, progress, started)


def _publish_locked(
    working: Path,
    store: Path,
    sections: list[CheckedSection],
    fingerprint: str,
    allow_new_key: bool,
    progress: Callable[[str, int, int], None] | None,
    started: float,
) -> PublishReport:
    dest = store.parent
    previous = _current_release(store)
    if previous is not None and not allow_new_key:
        published = _release_fingerprint(store / "releases" / previous)
        if published is not None and published != fingerprint:
            raise RepoError(
                f"the index is signed by {fingerprint}, but {dest} is published under {published}: every client "
                "pinned to the published key would refuse it (pass --new-key if the key change is intended)"
            )
    release = _new_release_name(store)
    report = PublishReport(release=release, fingerprint=fingerprint)
    staging = store / "releases" / f".{release}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    earlier = _earlier_files(store, _releases(store)[-KEEP_RELEASES:])
    total = sum(len(section.files) for section in sections)
    done = 0
    for section in sections:
        for name, (digest, size) in sorted(section.files.items()):
            source = working / section.kind / name
            copied = _ensure_object(store, source, digest, size)
            report.copied += copied
            report.copied_bytes += size if copied else 0
            _link(store / "objects" / digest, staging / section.kind / name)
            done += 1
            if progress is not None:
                progress("publishing", done, total)
        for name, digest in sorted(earlier.get(section.kind, {}).items()):
            if name not in section.files and (store / "objects" / digest).is_file():
                _link(store / "objects" / digest, staging / section.kind / name)
                report.kept_from_earlier += 1
    report.files = total
    _fsync_tree(staging)
    final = store / "releases" / release
    os.rename(staging, final)
    fsync_directory(store / "releases")
    _switch(store, release)
    report.removed_releases = _collect_garbage(store)
    report.seconds = time.monotonic() - started
    return report


def published_sections(dest: Path) -> list[CheckedSection]:
    """Check what `dest` serves now, as a client would (for `repo publish --check` and the tests)."""
    result = []
    for kind in SECTIONS:
        directory = dest / kind
        if (directory / index_jar.ENTRY_JAR).is_file():
            section = check_section(directory, kind)
            for name, (digest, size) in section.files.items():
                if _hash_file(directory / name) != (digest, size):
                    raise RepoError(f"{directory / name} is published with another hash than its index names")
            result.append(section)
    return result


# -- internals ------------------------------------------------------------------------------------------------------


def _prepare(dest: Path, store: Path) -> None:
    try:
        for folder in (dest, store, store / "objects", store / "releases"):
            folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise RepoError(f"cannot prepare {dest} for publishing: {exc.strerror}") from None
    for kind in SECTIONS:
        link = dest / kind
        target = f"{STORE}/current/{kind}"
        if link.is_symlink():
            if os.readlink(link) != target:
                raise RepoError(f"{link} is a symbolic link to {os.readlink(link)}, not to {target}; not publishing")
            continue
        if link.exists():
            raise RepoError(
                f"{link} exists and is not sealgate's link; move it away (sealgate publishes {kind}/ as a link to "
                "its releases so that every switch is atomic)"
            )
        os.symlink(target, link)
    fsync_directory(dest)


def _publish_lock(store: Path) -> contextlib.AbstractContextManager[None]:
    """One publish at a time per web root: garbage collection must not race another publish's new objects."""
    busy = RepoError(f"another publish to {store.parent} is running; try again when it has finished")
    return exclusive_lock(store / "lock", busy)


def _current_release(store: Path) -> str | None:
    try:
        return os.readlink(store / "current").split("/", 1)[1]
    except (OSError, IndexError):
        return None


def _release_fingerprint(release: Path) -> str | None:
    try:
        return index_jar.read_index_jar(release / "repo" / index_jar.ENTRY_JAR, ENTRY).fingerprint
    except RepoError:
        return None


def _releases(store: Path) -> list[str]:
    directory = store / "releases"
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def _new_release_name(store: Path) -> str:
    """<sequence>-<UTC time>: names sort in publishing order, whatever the clock does."""
    numbers = [int(name.split("-", 1)[0]) for name in _releases(store) if name.split("-", 1)[0].isdigit()]
    sequence = max(numbers, default=0) + 1
    return f"{sequence:08d}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _earlier_files(store: Path, releases: Iterable[str]) -> dict[str, dict[str, str]]:
    """Files the earlier releases' index-v2.json named, by section: a client may still be reading those."""
    kept: dict[str, dict[str, str]] = {}
    for release in releases:
        for kind in SECTIONS:
            path = store / "releases" / release / kind / INDEX_V2
            try:
                index = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            for name, digest, _ in _indexed_files(index):
                kept.setdefault(kind, {})[_relative(name, path)] = digest
    return kept


def _indexed_files(index: Mapping[str, Any]) -> Iterable[tuple[str, str, int]]:
    """(name, sha256, size) of every file an index-v2 names: APKs, and icons of the repository and its apps."""
    icon = index.get("repo", {}).get("icon", {})
    for entry in icon.values():
        yield entry["name"], entry["sha256"], entry["size"]
    for package in index.get("packages", {}).values():
        for entry in package.get("metadata", {}).get("icon", {}).values():
            yield entry["name"], entry["sha256"], entry["size"]
        for version in package.get("versions", {}).values():
            item = version["file"]
            yield item["name"], item["sha256"], item["size"]


def _relative(name: str, where: Path) -> str:
    """An index's file name ("/x.apk") as a safe relative path: nothing may point outside the section."""
    relative = name.lstrip("/")
    parts = relative.split("/")
    if not relative or any(part in ("", ".", "..") for part in parts):
        raise RepoError(f"{where} names the file {name!r}, which is not a plain path inside the repository")
    return relative


def _hash_file(path: Path) -> tuple[str, int]:
    size, digest = hash_file(path)
    return digest, size


def _ensure_object(store: Path, source: Path, digest: str, size: int) -> bool:
    """Copy `source` into objects/<digest> unless it is there; True when copied. The copy is hashed as written."""
    try:
        return copy_checked(source, store / "objects" / digest, digest, size)
    except ChangedWhileCopyingError:
        raise RepoError(f"{source} changed while it was being published; nothing was switched") from None
    except OSError as exc:
        hint = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise RepoError(f"cannot copy {source} into {store}: {exc.strerror}{hint}; nothing was switched") from None


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError as exc:
        raise RepoError(f"cannot link {target}: {exc.strerror}; nothing was switched") from None


def _fsync_tree(root: Path) -> None:
    for directory, _, _ in os.walk(root, topdown=False):
        fsync_directory(directory)


def _switch(store: Path, release: str) -> None:
    """The one step readers notice: `current` now names the new release (a rename, so atomic)."""
    pointer = store / "current"
    temporary = store / ".current.new"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(f"releases/{release}", temporary)
    os.replace(temporary, pointer)
    fsync_directory(store)


def _collect_garbage(store: Path) -> list[str]:
    """Remove releases beyond the newest KEEP_RELEASES, interrupted stagings, and objects no release links."""
    current = _current_release(store)
    releases = _releases(store)
    removed = [name for name in releases[:-KEEP_RELEASES] if name != current]
    for name in removed:
        shutil.rmtree(store / "releases" / name, ignore_errors=True)
    for name in os.listdir(store / "releases"):
        if name.startswith(".") and name.endswith(".partial"):
            shutil.rmtree(store / "releases" / name, ignore_errors=True)
    for entry in os.scandir(store / "objects"):
        if entry.name.endswith(".partial") or entry.stat().st_nlink == 1:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    return removed
