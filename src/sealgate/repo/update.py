"""`repo update`: scan, check, archive and index a repository, and sign its index when the key is at hand.

The order of work is the order of trust: every APK is verified and checked (`checks`) before any index mentions
it; the archive policy moves files only between the repository's own folders; each section's index-v2.json and
diffs are written first, then entry.json naming them by hash, re-read and re-hashed from disk before entry.jar is
signed over it. A rerun that changes nothing writes nothing, so the published bytes (timestamps included) stay
the same and mirrors see no change.

Every file is replaced atomically, but a run that dies half-way can leave DIR's index files from two runs: DIR is
the working copy, and `repo publish` checks the whole set before it switches the web root to it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.durable import replace_file
from sealgate.errors import MetadataError, RepoError
from sealgate.repo import index_jar, uptodate
from sealgate.repo.checks import Located, Refusal, check_apks
from sealgate.repo.config import RepoConfig
from sealgate.repo.icons import ICONS, extract_icons
from sealgate.repo.index_v1 import INDEX_V1, build_index_v1, dumps_v1
from sealgate.repo.index_v2 import (
    DIFF_DIR,
    ENTRY,
    INDEX_V2,
    build_entry,
    build_index_v2,
    dumps,
    merge_patch,
    without_timestamps,
)
from sealgate.repo.metadata import AppMetadata, load_all_metadata, load_metadata, metadata_path, new_metadata_yaml
from sealgate.repo.model import FileEntry, IndexedApp, IndexedVersion, Section, sort_versions
from sealgate.repo.reproducible import developer_signer
from sealgate.repo.scan import ScanCache, ScannedApk, StatKey, scan_directory
from sealgate.signing import Signer

#: Earlier indexes kept per section to offer diffs against (fdroidserver keeps ten).
MAX_DIFFS = 10
SECTIONS = ("repo", "archive")


@dataclass(frozen=True)
class UpdateOptions:
    pretty: bool = False
    #: Write metadata/<package>.yml (signer pinned) for APKs of apps that have none, instead of refusing them.
    create_metadata: bool = False
    workers: int | None = None
    #: The index timestamp in seconds; None: now (or SOURCE_DATE_EPOCH when set, for reproducible runs).
    timestamp: int | None = None
    progress: Callable[[str, int, int], None] | None = None


@dataclass
class SectionReport:
    kind: str
    apps: int
    versions: int
    changed: bool
    signed: bool
    files: list[str] = field(default_factory=list)


@dataclass
class UpdateReport:
    scanned: int = 0
    cached: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    metadata_errors: list[MetadataError] = field(default_factory=list)
    created_metadata: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    sections: list[SectionReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The request for the offline custodian, when the index was left unsigned for them to sign.
    signing_request: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "cached": self.cached,
            "refused": [refusal.to_json() for refusal in self.refusals],
            "metadata_errors": [str(error) for error in self.metadata_errors],
            "created_metadata": self.created_metadata,
            "moved": [{"from": source, "to": target} for source, target in self.moved],
            "sections": [
                {
                    "section": section.kind,
                    "apps": section.apps,
                    "versions": section.versions,
                    "changed": section.changed,
                    "signed": section.signed,
                    "files": section.files,
                }
                for section in self.sections
            ],
            "warnings": self.warnings,
            "signing_request": self.signing_request,
            "seconds": round(self.seconds, 3),
        }


def update_repository(
    config: RepoConfig,
    signer: Signer | Callable[[], Signer] | None,
    options: UpdateOptions = UpdateOptions(),
) -> UpdateReport:
    """Bring the indexes of `config`'s repository up to date with its APKs and metadata; see the module docstring.

    `signer` None writes the unsigned JSON only (`--nosign`): the JARs are then made on the offline machine. A
    callable is called only when there is work to do, so that a rerun with nothing changed asks for no passphrase
    and unlocks no key; config.yml's `signing` section then identifies the key.
    """
    with _update_lock(config), _collector_paused():
        return _update_repository(config, signer, options)


@contextlib.contextmanager
def _update_lock(config: RepoConfig) -> Iterator[None]:
    """One update at a time per repository: two would interleave their index files and caches."""
    import fcntl

    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(config.state_dir / "update.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RepoError(f"cannot lock {config.root} for the update: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RepoError(
                f"another `repo update` is running in {config.root}; try again when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the run.

    An update builds tens of thousands of small objects (scans, index dicts) that live until it ends and form no
    cycles; the collector would walk all of them again and again as they pile up, which measured as a quarter of
    the time of a one-APK update of a 1,000-APK repository. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _update_repository(
    config: RepoConfig, signer: Signer | Callable[[], Signer] | None, options: UpdateOptions
) -> UpdateReport:
    started = time.monotonic()
    if signer is None:
        identity = None
    elif callable(signer):
        identity = _configured_key_identity(config)
    else:
        identity = signer.certificate.sha256
    settings = {"pretty": options.pretty, "create_metadata": options.create_metadata}
    digest = uptodate.input_digest(config, identity, settings)
    stored = uptodate.load_result(config, digest)
    if stored is not None:
        return _unchanged(stored, time.monotonic() - started)
    uptodate.forget(config)
    loaded = signer() if callable(signer) else signer
    if loaded is not None:
        _check_signer(config, loaded)
    report = _update(config, loaded, options)
    outputs = [path for section in report.sections for path in _section_outputs(config.root / section.kind)]
    # The inputs change under an update only when it moves APKs or writes metadata files.
    changed_inputs = report.moved or report.created_metadata
    final_digest = uptodate.input_digest(config, identity, settings) if changed_inputs else digest
    try:
        uptodate.save_result(config, final_digest, outputs, _stored(report))
    except OSError as exc:
        report.warnings.append(f"cannot record this update for the next run ({exc.strerror}); it will redo the work")
    report.seconds = time.monotonic() - started
    return report


def _update(config: RepoConfig, signer: Signer | None, options: UpdateOptions) -> UpdateReport:
    report = UpdateReport(warnings=list(config.warnings))
    config.repo_dir.mkdir(parents=True, exist_ok=True)
    # An archive section exists when the policy asks for one, or while archive/ still holds APKs (which a policy
    # of 0, "keep every version in repo/", then moves back).
    archive_enabled = config.archive_older > 0 or any(config.archive_dir.glob("*.apk"))
    if archive_enabled:
        config.archive_dir.mkdir(exist_ok=True)
    metadata, report.metadata_errors = load_all_metadata(config.metadata_dir, config.state_dir / "metadata-cache.json")
    cache = ScanCache(config.state_dir / "scan-cache.json")
    if cache.discarded_reason:
        report.warnings.append(cache.discarded_reason)
    located = _scan(config, cache, archive_enabled, options, report)
    previous = {kind: _read_previous(config, kind) for kind in SECTIONS}
    published = frozenset(
        version for index in previous.values() for package in index.get("packages", {}).values()
        for version in package.get("versions", {})
    )  # fmt: skip
    if options.create_metadata:
        metadata = _create_missing_metadata(config, located, metadata, report)
    with_metadata = [item for item in located if item.scan.package in metadata or not item.scan.verified]
    for item in located:
        if item.scan.verified and item.scan.package not in metadata:
            report.refusals.append(_no_metadata(item, config))
    accepted, refusals = check_apks(with_metadata, metadata, published)
    report.refusals.extend(refusals)
    report.refusals.sort(key=lambda refusal: refusal.name)
    placed = _apply_archive_policy(config, accepted, metadata, cache, archive_enabled, report)
    cache.retain(f"{item.section}/{item.scan.name}" for item in located)
    cache.save()
    now_ms = _timestamp_ms(options)
    added = _added_dates(previous, now_ms)
    for kind in SECTIONS if archive_enabled else ("repo",):
        section = _section(config, kind, placed, metadata, added, now_ms)
        report.sections.append(_write_section(config, section, previous[kind], signer, options))
    unsigned = signer is None and any(not _signed(config.root / s.kind) for s in report.sections)
    if unsigned and config.repo_certificate is not None:
        from sealgate.repo.offline_index import prepare_signing_request

        prepared = prepare_signing_request(config, [s.kind for s in report.sections], timestamp_ms=now_ms)
        report.signing_request = str(prepared.path)
    return report


def _configured_key_identity(config: RepoConfig) -> str:
    """The signing key config.yml names, as a string that changes when the key does (its certificate's stat)."""
    signing = config.signing
    if signing.pkcs11 is not None:
        return f"pkcs11:{signing.pkcs11}"
    certificate = (signing.keystore / f"{signing.key}.x509.pem") if signing.keystore is not None else None
    keys = uptodate.stat_keys([str(certificate)]) if certificate is not None else None
    return f"keystore:{signing.keystore}:{signing.key}:{keys}"


def _section_outputs(directory: Path) -> list[str]:
    names = [INDEX_V2, ENTRY, INDEX_V1, index_jar.ENTRY_JAR, index_jar.INDEX_V1_JAR]
    paths = [str(directory / name) for name in names if (directory / name).is_file()]
    for folder in (DIFF_DIR, ICONS):
        if (directory / folder).is_dir():
            paths += sorted(str(path) for path in (directory / folder).glob("*.*"))
    return paths


def _stored(report: UpdateReport) -> dict[str, Any]:
    document = report.to_json()
    document["metadata_errors"] = [[error.path, error.line, error.message] for error in report.metadata_errors]
    return document


def _unchanged(stored: Mapping[str, Any], seconds: float) -> UpdateReport:
    """The report of the last update, for a rerun whose inputs and outputs are exactly as that update left them."""
    return UpdateReport(
        scanned=0,
        cached=int(stored["scanned"]) + int(stored["cached"]),
        refusals=[Refusal(item["file"], item["code"], item["reason"]) for item in stored["refused"]],
        metadata_errors=[MetadataError(path, line, message) for path, line, message in stored["metadata_errors"]],
        sections=[
            SectionReport(item["section"], item["apps"], item["versions"], changed=False, signed=item["signed"])
            for item in stored["sections"]
        ],
        warnings=list(stored["warnings"]),
        seconds=seconds,
    )


# -- scanning and metadata ------------------------------------------------------------------------------------------


def _scan(
    config: RepoConfig, cache: ScanCache, archive_enabled: bool, options: UpdateOptions, report: UpdateReport
) -> list[Located]:
    located: list[Located] = []
    for kind in SECTIONS if archive_enabled else ("repo",):
        directory = config.root / kind

        def progress(done: int, total: int, kind: str = kind) -> None:
            if options.progress is not None:
                options.progress(f"scanning {kind}/", done, total)

        result = scan_directory(directory, cache, prefix=f"{kind}/", workers=options.workers, progress=progress)
        report.scanned += result.scanned
        report.cached += result.cached
        located.extend(Located(kind, scan) for _, scan in sorted(result.scans.items()))
    return located


def _no_metadata(item: Located, config: RepoConfig) -> Refusal:
    return Refusal(
        item.key,
        "NO_METADATA",
        f"{item.scan.package} has no metadata file ({metadata_path(config.metadata_dir, item.scan.package)}); "
        "create it with `sealgate repo metadata new` or run `repo update --create-metadata`",
    )


def _create_missing_metadata(
    config: RepoConfig, located: Sequence[Located], metadata: dict[str, AppMetadata], report: UpdateReport
) -> dict[str, AppMetadata]:
    """Start a metadata file for each app that has none, pinning the signer of its newest verified APK."""
    newest: dict[str, ScannedApk] = {}
    for item in located:
        scan = item.scan
        wanted = scan.verified and scan.package not in metadata and scan.signers
        if wanted and (scan.package not in newest or scan.version_code > newest[scan.package].version_code):
            newest[scan.package] = scan
    if not newest:
        return metadata
    config.metadata_dir.mkdir(parents=True, exist_ok=True)
    result = dict(metadata)
    for package, scan in sorted(newest.items()):
        path = metadata_path(config.metadata_dir, package)
        text = new_metadata_yaml(package, name=scan.label or None, signer_sha256=scan.signers[0], version_code=0)
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text.replace("CurrentVersionCode: 0\n", ""))
        except FileExistsError:
            continue  # written meanwhile, or a file with errors: never overwrite what a person wrote
        except OSError as exc:
            raise RepoError(f"cannot write {path}: {exc.strerror}") from None
        result[package] = load_metadata(path)
        report.created_metadata.append(str(path))
    return result


# -- archive policy -------------------------------------------------------------------------------------------------


def _apply_archive_policy(
    config: RepoConfig,
    accepted: Sequence[Located],
    metadata: Mapping[str, AppMetadata],
    cache: ScanCache,
    archive_enabled: bool,
    report: UpdateReport,
) -> list[Located]:
    """Keep each app's newest versions in repo/ (the suggested one first) and move the rest to archive/."""
    if not archive_enabled:
        return list(accepted)
    by_package: dict[str, list[Located]] = {}
    for item in accepted:
        by_package.setdefault(item.scan.package, []).append(item)
    placed: list[Located] = []
    for package, items in sorted(by_package.items()):
        app = metadata[package]
        keep = app.archive_policy if app.archive_policy is not None else config.archive_older
        current = app.current_version_code
        ranked = sorted(items, key=lambda i: (i.scan.version_code != current, -i.scan.version_code, i.key))
        for rank, item in enumerate(ranked):
            wanted = "repo" if keep == 0 or rank < keep else "archive"
            placed.append(_move(config, item, wanted, cache, report) if wanted != item.section else item)
    return placed


def _move(config: RepoConfig, item: Located, section: str, cache: ScanCache, report: UpdateReport) -> Located:
    source = config.root / item.section / item.scan.name
    target = config.root / section / item.scan.name
    if target.exists():
        raise RepoError(f"cannot move {source} to {section}/: {target} already exists (a different file?)")
    try:
        os.rename(source, target)
    except OSError as exc:
        raise RepoError(f"cannot move {source} to {target}: {exc.strerror}") from None
    moved = Located(section, item.scan)
    cache.put(moved.key, StatKey.of(target), item.scan)
    report.moved.append((item.key, moved.key))
    return moved


# -- building the sections ------------------------------------------------------------------------------------------


def _timestamp_ms(options: UpdateOptions) -> int:
    seconds = options.timestamp
    if seconds is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
        seconds = int(epoch) if epoch.isdigit() else int(time.time())
    return seconds * 1000


def _added_dates(previous: Mapping[str, dict[str, Any]], now_ms: int) -> dict[str, int]:
    """When each file was first indexed, from the current indexes (fdroidserver's only memory of it)."""
    added: dict[str, int] = {}
    for index in previous.values():
        for package in index.get("packages", {}).values():
            for version in package.get("versions", {}).values():
                name = str(version.get("file", {}).get("name", "")).lstrip("/")
                stamp = version.get("added")
                if name and isinstance(stamp, int):
                    added[name] = stamp
    return {"": now_ms, **added}


def _section(
    config: RepoConfig,
    kind: str,
    placed: Sequence[Located],
    metadata: Mapping[str, AppMetadata],
    added: Mapping[str, int],
    now_ms: int,
) -> Section:
    directory = config.root / kind
    dates: dict[str, list[int]] = {}
    versions: dict[str, list[IndexedVersion]] = {}
    for item in placed:
        stamp = added.get(item.scan.name, added[""])
        dates.setdefault(item.scan.package, []).append(stamp)
        if item.section == kind:
            versions.setdefault(item.scan.package, []).append(IndexedVersion(item.scan, stamp))
    apps = []
    for package in sorted(versions):
        ordered = sort_versions(versions[package], developer_signer(config.metadata_dir, package))
        highest = max(version.scan.version_code for version in ordered)
        current = metadata[package].current_version_code
        newest = max(ordered, key=lambda version: (version.scan.version_code, version.scan.name))
        apps.append(
            IndexedApp(
                metadata=metadata[package],
                versions=tuple(ordered),
                added=min(dates[package]),
                last_updated=max(dates[package]),
                current_version_code=current if current is not None else highest,
                icon=extract_icons(directory, newest.scan),
            )
        )
    icon_name = config.icon
    icon = _icon_entry(directory / "icons" / icon_name)
    is_repo = kind == "repo"
    archive_address = config.archive_url or (
        config.url[: -len("repo")] + "archive" if config.url.endswith("/repo") else ""
    )
    return Section(
        kind=kind,
        name=config.name if is_repo else (config.archive_name or f"{config.name} (archive)"),
        description=config.description if is_repo else (config.archive_description or config.description),
        address=config.url if is_repo else archive_address,
        icon=icon,
        icon_name=icon_name,
        mirrors=tuple(_section_mirror(mirror, kind) for mirror in config.mirrors),
        timestamp=now_ms,
        apps=tuple(apps),
    )


def _archive_url(repo_url: str) -> str:
    """fdroidserver's default: the repo address with its last folder renamed archive."""
    return repo_url.rsplit("/", 1)[0] + "/archive"


def _section_mirror(mirror: str, kind: str) -> str:
    """Mirrors are configured as their fdroid/ folder; each section is served below it."""
    if mirror.endswith(("/repo", "/archive")):
        mirror = mirror.rsplit("/", 1)[0]
    return f"{mirror}/{kind}"


def _icon_entry(path: Path) -> FileEntry | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return FileEntry.of_bytes(f"/icons/{path.name}", data)


# -- writing --------------------------------------------------------------------------------------------------------


def _read_previous(config: RepoConfig, kind: str) -> dict[str, Any]:
    path = config.root / kind / INDEX_V2
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RepoError(f"cannot read the current index {path}: {exc}; move it aside to start afresh") from None
    return document if isinstance(document, dict) else {}


def _write_section(
    config: RepoConfig, section: Section, previous: Mapping[str, Any], signer: Signer | None, options: UpdateOptions
) -> SectionReport:
    directory = config.root / section.kind
    index = build_index_v2(section)
    version_count = sum(len(app.versions) for app in section.apps)
    report = SectionReport(section.kind, len(section.apps), version_count, changed=True, signed=signer is not None)
    if previous and without_timestamps(previous) == without_timestamps(index) and _complete(directory, signer):
        report.changed = False
        return report
    index_bytes = dumps(index, pretty=options.pretty)
    history = _history(config, section.kind, previous)
    diffs: dict[int, tuple[FileEntry, int]] = {}
    diff_dir = directory / DIFF_DIR
    _clear_diffs(diff_dir)
    for stamp, old in history:
        patch = merge_patch(old, index)
        patch_bytes = dumps(patch, pretty=options.pretty)
        diff_dir.mkdir(exist_ok=True)
        _write(diff_dir / f"{stamp}.json", patch_bytes, report)
        diffs[stamp] = (FileEntry.of_bytes(f"/{DIFF_DIR}/{stamp}.json", patch_bytes), len(patch.get("packages", {})))
    _write(directory / INDEX_V2, index_bytes, report)
    entry = build_entry(section.timestamp, FileEntry.of_bytes(f"/{INDEX_V2}", index_bytes), len(section.apps), diffs)
    entry_bytes = dumps(entry, pretty=options.pretty)
    _write(directory / ENTRY, entry_bytes, report)
    v1_bytes = dumps_v1(build_index_v1(section), pretty=options.pretty)
    _write(directory / INDEX_V1, v1_bytes, report)
    if signer is not None:
        _check_entry_against_disk(directory, entry)
        entry_jar = index_jar.sign_index_jar(ENTRY, entry_bytes, signer, timestamp_ms=section.timestamp, sha1=False)
        v1_jar = index_jar.sign_index_jar(INDEX_V1, v1_bytes, signer, timestamp_ms=section.timestamp, sha1=True)
        _write(directory / index_jar.INDEX_V1_JAR, v1_jar, report)
        _write(directory / index_jar.ENTRY_JAR, entry_jar, report)
    _save_history(config, section.kind, section.timestamp, index_bytes)
    return report


def _signed(directory: Path) -> bool:
    """Whether the section's JARs are there and entry.jar signs the entry.json beside it (by whatever key)."""
    return _complete(directory, None, any_key=True)


def _complete(directory: Path, signer: Signer | None, *, any_key: bool = False) -> bool:
    """Whether a rerun may leave the section alone: every file there and all from one run (a run killed between
    two files leaves them disagreeing), entry.json naming index-v2.json and the diffs by their hashes, and the
    JARs signing exactly the JSON beside them with this run's key (a new repo key re-signs an unchanged index)."""
    names = [INDEX_V2, ENTRY, INDEX_V1]
    signed = signer is not None or any_key
    if signed:
        names += [index_jar.ENTRY_JAR, index_jar.INDEX_V1_JAR]
    try:
        files = {name: (directory / name).read_bytes() for name in names}
        entry = json.loads(files[ENTRY])
        stamps = {
            entry["timestamp"],
            json.loads(files[INDEX_V1])["repo"]["timestamp"],
            json.loads(files[INDEX_V2])["repo"]["timestamp"],
        }
        _check_entry_against_disk(directory, entry)
    except (OSError, ValueError, KeyError, TypeError, RepoError):
        return False
    if len(stamps) != 1:
        return False
    if not signed:
        return True
    try:
        entry_jar = index_jar.read_index_jar(directory / index_jar.ENTRY_JAR, ENTRY)
        v1_jar = index_jar.read_index_jar(directory / index_jar.INDEX_V1_JAR, INDEX_V1)
    except RepoError:
        return False
    if entry_jar.data != files[ENTRY] or v1_jar.data != files[INDEX_V1]:
        return False
    return signer is None or entry_jar.certificate.der == signer.certificate.der


def _check_entry_against_disk(directory: Path, entry: Mapping[str, Any]) -> None:
    """Before signing: every file entry.json names must be on disk with exactly that hash and size."""
    named = [entry["index"], *entry["diffs"].values()]
    for item in named:
        path = directory / str(item["name"]).lstrip("/")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RepoError(f"cannot re-read {path} before signing: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != item["sha256"] or len(data) != item["size"]:
            raise RepoError(f"{path} changed after it was written; entry.json was not signed")


def _history(config: RepoConfig, kind: str, current: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
    """Earlier indexes of the section (newest MAX_DIFFS), oldest first, as (timestamp, parsed index).

    One at a time (an index of 10,000 APKs is a hundred MB as Python objects), and the newest, usually the index
    now in place, is the `current` one already parsed rather than a second parse."""
    current_stamp = current.get("repo", {}).get("timestamp") if current else None
    directory = config.state_dir / "history"
    found: list[tuple[int, Path]] = []
    if directory.is_dir():
        for path in directory.glob(f"{kind}_*.json"):
            digits = path.stem.split("_", 1)[1]
            if digits.isdigit():
                found.append((int(digits), path))
    found.sort()
    for _, stale in found[:-MAX_DIFFS]:
        stale.unlink(missing_ok=True)
    for stamp, path in found[-MAX_DIFFS:]:
        if stamp == current_stamp:
            yield stamp, current
            continue
        try:
            old = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # a damaged earlier index only costs its diff
        yield stamp, old
        del old


def _save_history(config: RepoConfig, kind: str, timestamp: int, index_bytes: bytes) -> None:
    directory = config.state_dir / "history"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        replace_file(directory / f"{kind}_{timestamp}.json", index_bytes)
    except OSError as exc:
        raise RepoError(f"cannot keep the index for later diffs in {directory}: {exc.strerror}") from None


def _clear_diffs(diff_dir: Path) -> None:
    if diff_dir.is_dir():
        for path in diff_dir.glob("*.json"):
            path.unlink(missing_ok=True)


def _write(path: Path, data: bytes, report: SectionReport) -> None:
    try:
        replace_file(path, data)
    except OSError as exc:
        raise RepoError(f"cannot write {path}: {exc.strerror}") from None
    report.files.append(str(path))


def _check_signer(config: RepoConfig, signer: Signer) -> None:
    expected = config.certificate()
    if expected is not None and expected.der != signer.certificate.der:
        raise RepoError(
            f"the signing key {signer.name!r} has certificate {signer.certificate.sha256}, but config.yml names "
            f"{expected.sha256} ({config.repo_certificate}) as the repo key: clients pinned to it would refuse"
        )
