"""Scanning APKs for the index: one verification per file, on every core, cached like a build system.

A scan runs the project's verifier (the one path that both verifies an APK and names its signer) over the APK's
own SDK range, and keeps what the index and the later checks need: the manifest fields, the file's SHA-256 and
size, and the verified signing identity per SDK range (certificates and lineage as bytes, so that the update rule
can be applied later without opening the APK again).

Scans are cached in .sealgate/scan-cache.json, keyed by the file's path, size, mtime and inode: a rerun where
nothing changed opens no APK. A file whose key changed is scanned again; the cache keeps its content hash, so a
file that was merely touched is still recognised by its hash in the index. Verification is mostly hashing, which
releases the GIL, but parsing the ZIP, the manifest and the signatures is Python: a pool of processes keeps every
core busy on a repository of thousands of small APKs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealgate.durable import replace_file, sha256_file
from sealgate.errors import RepoError, SealgateError

if TYPE_CHECKING:
    from sealgate.apk.update_rules import SigningIdentity

CACHE_FORMAT = "sealgate-scan-cache"
#: Bump when ScannedApk changes meaning, so that an older cache is rebuilt instead of misread.
CACHE_VERSION = 3


@functools.lru_cache(maxsize=4096)
def _parsed_identity(certificates: tuple[bytes, ...], lineage: bytes | None) -> SigningIdentity:
    """Certificates and lineages parsed once per run, however many versions of an app share them."""
    from sealgate.apk.certificate import Certificate
    from sealgate.apk.lineage import parse_lineage_attribute
    from sealgate.apk.update_rules import SigningIdentity

    parsed = parse_lineage_attribute(lineage) if lineage is not None else None
    return SigningIdentity(tuple(Certificate.from_der(der) for der in certificates), parsed)


@dataclass(frozen=True)
class SdkIdentity:
    """The signers Android uses over [min_sdk, max_sdk], as certificate DER bytes, with the lineage if any."""

    min_sdk: int
    max_sdk: int
    scheme: int
    certificates: tuple[bytes, ...]
    lineage: bytes | None = None

    def identity(self) -> SigningIdentity:
        return _parsed_identity(self.certificates, self.lineage)


@dataclass(frozen=True)
class ScannedApk:
    """One APK file as the verifier saw it."""

    name: str
    size: int
    sha256: str
    verified: bool
    errors: tuple[str, ...] = ()
    package: str = ""
    version_code: int = 0
    version_name: str = ""
    #: The application label when the manifest gives it as text (not a resource reference).
    label: str = ""
    min_sdk: int = 1
    target_sdk: int | None = None
    max_sdk: int | None = None
    permissions: tuple[tuple[str, int | None], ...] = ()
    permissions_sdk23: tuple[tuple[str, int | None], ...] = ()
    features: tuple[str, ...] = ()
    native_abis: tuple[str, ...] = ()
    debuggable: bool = False
    test_only: bool = False
    #: The launcher icon's PNG files in the APK, as (density in dpi, 0 for the default configuration; path).
    icons: tuple[tuple[int, str], ...] = ()
    #: SHA-256 of the certificates Android uses at the newest level: the index's `signer`.
    signers: tuple[str, ...] = ()
    identities: tuple[SdkIdentity, ...] = field(default_factory=tuple)

    def identity_at(self, sdk: int) -> SigningIdentity | None:
        raw = self.raw_identity_at(sdk)
        return raw.identity() if raw is not None else None

    def raw_identity_at(self, sdk: int) -> SdkIdentity | None:
        for entry in self.identities:
            if entry.min_sdk <= sdk <= entry.max_sdk:
                return entry
        return None

    def levels(self) -> list[int]:
        """The first level of every SDK range with its own signers: where the update rule must be checked."""
        return [entry.min_sdk for entry in self.identities]

    def to_json(self, certificates: dict[str, str]) -> dict[str, Any]:
        """The scan as JSON, its certificates by SHA-256 (their base64 DER added to `certificates`): a developer's
        key is stored once for all of their APKs, which keeps the cache small enough to rewrite on every update."""
        # Field by field (dataclasses.asdict deep-copies, which costs more than the rest of a rerun).
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["identities"] = [
            {
                "min_sdk": entry.min_sdk,
                "max_sdk": entry.max_sdk,
                "scheme": entry.scheme,
                "certificates": [_certificate_reference(der, certificates) for der in entry.certificates],
                "lineage": base64.b64encode(entry.lineage).decode("ascii") if entry.lineage is not None else None,
            }
            for entry in self.identities
        ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], certificates: dict[str, bytes]) -> ScannedApk:
        """The scan from its JSON, certificates looked up (by SHA-256) in `certificates`."""

        def certificate(reference: str) -> bytes:
            return certificates[reference]

        values = dict(data)
        values["errors"] = tuple(values["errors"])
        values["permissions"] = tuple((name, limit) for name, limit in values["permissions"])
        values["permissions_sdk23"] = tuple((name, limit) for name, limit in values["permissions_sdk23"])
        values["icons"] = tuple((density, path) for density, path in values.get("icons", ()))
        for key in ("features", "native_abis", "signers"):
            values[key] = tuple(values[key])
        values["identities"] = tuple(
            SdkIdentity(
                min_sdk=entry["min_sdk"],
                max_sdk=entry["max_sdk"],
                scheme=entry["scheme"],
                certificates=tuple(certificate(der) for der in entry["certificates"]),
                lineage=base64.b64decode(entry["lineage"]) if entry["lineage"] is not None else None,
            )
            for entry in values["identities"]
        )
        return cls(**values)


def _certificate_reference(der: bytes, table: dict[str, str]) -> str:
    digest = hashlib.sha256(der).hexdigest()
    if digest not in table:
        table[digest] = base64.b64encode(der).decode("ascii")
    return digest


def scan_apk(path: str | os.PathLike[str], name: str) -> ScannedApk:
    """Verify one APK and read what the index needs; a bad APK is a record with errors, never an exception."""
    from sealgate.apk.verifier import verify_apk

    file = Path(path)
    try:
        size, sha256 = hash_file(file)
    except RepoError as exc:
        return ScannedApk(name=name, size=0, sha256="", verified=False, errors=(f"UNREADABLE: {exc}",))
    try:
        report = verify_apk(file)
    except SealgateError as exc:
        return ScannedApk(name=name, size=size, sha256=sha256, verified=False, errors=(f"MALFORMED_APK: {exc}",))
    manifest = report.manifest
    errors = tuple(f"{issue.code}: {issue.message}" for issue in report.errors)
    if manifest is None:
        return ScannedApk(name=name, size=size, sha256=sha256, verified=False, errors=errors or ("NO_MANIFEST",))
    identities = tuple(
        SdkIdentity(
            min_sdk=entry.min_sdk,
            max_sdk=entry.max_sdk,
            scheme=int(entry.scheme),
            certificates=tuple(certificate.der for certificate in entry.signers),
            lineage=entry.lineage.to_attribute_bytes() if entry.lineage is not None else None,
        )
        for entry in report.sdk_signers
    )
    return ScannedApk(
        name=name,
        size=size,
        sha256=sha256,
        verified=report.verified,
        errors=errors,
        package=manifest.package,
        version_code=manifest.version_code,
        version_name=manifest.version_name or "",
        label=manifest.label if manifest.label and not manifest.label.startswith("@") else "",
        min_sdk=manifest.min_sdk,
        target_sdk=manifest.target_sdk,
        max_sdk=manifest.max_sdk,
        permissions=tuple((item.name, item.max_sdk) for item in manifest.permissions),
        permissions_sdk23=tuple((item.name, item.max_sdk) for item in manifest.permissions_sdk23),
        features=tuple(feature.name for feature in manifest.features if feature.name),
        native_abis=manifest.native_abis,
        debuggable=manifest.debuggable,
        test_only=manifest.test_only,
        icons=_icon_files(file, manifest.icon) if report.verified else (),
        signers=tuple(certificate.sha256 for certificate in report.signers) if report.verified else (),
        identities=identities if report.verified else (),
    )


def _icon_files(path: Path, icon: str | None) -> tuple[tuple[int, str], ...]:
    """The PNG files the manifest's application icon resolves to, by density (adaptive XML icons are left out)."""
    from sealgate.apk.manifest import MAX_RESOURCE_TABLE_SIZE, RESOURCE_TABLE_ENTRY, resolve_file_variants
    from sealgate.ziparchive import ZipArchive

    if icon is None:
        return ()
    try:
        with ZipArchive.open(path) as archive:
            if not icon.startswith("@0x"):
                variants = {0: icon}
            else:
                table = archive.entry(RESOURCE_TABLE_ENTRY)
                if table is None:
                    return ()
                variants = resolve_file_variants(
                    archive.read(table, max_size=MAX_RESOURCE_TABLE_SIZE), int(icon[3:], 16)
                )
            present = {entry.name for entry in archive.entries}
    except (SealgateError, ValueError):
        return ()
    return tuple(
        sorted((density, name) for density, name in variants.items() if name.endswith(".png") and name in present)
    )


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB blocks; RepoError when it cannot be read."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise RepoError(f"cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class StatKey:
    """What says a file is unchanged without reading it: as make and ninja decide, plus the inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> StatKey:
        info = path.stat()
        return cls(info.st_size, info.st_mtime_ns, info.st_ino)


class ScanCache:
    """Scans by file name, valid while the file's StatKey is unchanged; written atomically after each update."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: dict[str, tuple[StatKey, ScannedApk]] = {}
        #: The JSON of each entry as read or last put: saving re-encodes only what changed.
        self._documents: dict[str, dict[str, Any]] = {}
        #: Certificates by SHA-256, as base64 DER, shared by the entries.
        self._certificates: dict[str, str] = {}
        self._dirty = False
        self.discarded_reason: str | None = None
        self._load()

    def get(self, name: str, key: StatKey) -> ScannedApk | None:
        cached = self._entries.get(name)
        if cached is None or cached[0] != key:
            return None
        return cached[1]

    def put(self, name: str, key: StatKey, scanned: ScannedApk) -> None:
        if self._entries.get(name) != (key, scanned):
            self._entries[name] = (key, scanned)
            self._documents[name] = {
                "size": key.size, "mtime_ns": key.mtime_ns, "inode": key.inode,
                "scan": scanned.to_json(self._certificates),
            }  # fmt: skip
            self._dirty = True

    def retain(self, names: Iterable[str]) -> None:
        """Forget files that are gone, so the cache does not grow forever."""
        keep = set(names)
        kept = {name: entry for name, entry in self._entries.items() if name in keep}
        self._dirty = self._dirty or len(kept) != len(self._entries)
        self._entries = kept
        self._documents = {name: document for name, document in self._documents.items() if name in keep}

    def save(self) -> None:
        """Write the cache if anything changed since it was read."""
        if not self._dirty:
            return
        document = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "certificates": self._used_certificates(),
            "files": {name: self._documents[name] for name in sorted(self._documents)},
        }
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self._path, json.dumps(document, separators=(",", ":")).encode("utf-8"))
        except OSError as exc:
            raise RepoError(f"cannot write the scan cache {self._path}: {exc.strerror}") from None
        self._dirty = False

    def _used_certificates(self) -> dict[str, str]:
        used = {
            reference
            for document in self._documents.values()
            for identity in document["scan"]["identities"]
            for reference in identity["certificates"]
        }
        return {digest: text for digest, text in sorted(self._certificates.items()) if digest in used}

    def _load(self) -> None:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.discarded_reason = f"cannot read {self._path}: {exc.strerror}"
            return
        try:
            document = json.loads(raw)
            if document.get("format") != CACHE_FORMAT or document.get("version") != CACHE_VERSION:
                self.discarded_reason = f"{self._path} is of another format or version; every APK is scanned again"
                return
            self._certificates = dict(document["certificates"])
            certificates = {digest: base64.b64decode(text) for digest, text in self._certificates.items()}
            for name, entry in document["files"].items():
                key = StatKey(entry["size"], entry["mtime_ns"], entry["inode"])
                self._entries[name] = (key, ScannedApk.from_json(entry["scan"], certificates))
                self._documents[name] = entry
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged cache costs a full scan, never a wrong index.
            self._entries = {}
            self._documents = {}
            self.discarded_reason = f"{self._path} is damaged ({exc}); every APK is scanned again"


@dataclass
class ScanResult:
    scans: dict[str, ScannedApk]
    scanned: int
    cached: int


def scan_directory(
    directory: Path,
    cache: ScanCache,
    *,
    prefix: str = "",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Scan every *.apk in `directory` (not recursively), reusing cached scans; cache keys are `prefix + name`."""
    names = sorted(entry.name for entry in os.scandir(directory) if entry.name.endswith(".apk") and entry.is_file())
    scans: dict[str, ScannedApk] = {}
    pending: list[tuple[str, StatKey]] = []
    for name in names:
        try:
            key = StatKey.of(directory / name)
        except OSError:
            continue  # gone since the listing: it is simply not part of this run
        cached = cache.get(prefix + name, key)
        if cached is not None:
            scans[name] = cached
        else:
            pending.append((name, key))
    done = len(scans)
    if progress is not None:
        progress(done, len(names))
    for (name, key), scanned in zip(
        pending, _scan_many(directory, [name for name, _ in pending], workers), strict=True
    ):
        scans[name] = scanned
        if not scanned.errors or not scanned.errors[0].startswith("UNREADABLE"):
            cache.put(prefix + name, key, scanned)  # an unreadable file is tried again next time
        done += 1
        if progress is not None:
            progress(done, len(names))
    return ScanResult(scans=scans, scanned=len(pending), cached=len(names) - len(pending))


def _scan_many(directory: Path, names: Sequence[str], workers: int | None) -> Iterable[ScannedApk]:
    """Scans in `names` order; in a process pool when there is enough work to pay for starting one."""
    count = workers or os.cpu_count() or 1
    if count == 1 or len(names) < 4:
        for name in names:
            yield scan_apk(directory / name, name)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=count) as pool:
        chunk = max(1, min(16, len(names) // (count * 4)))
        yield from pool.map(_scan_one, [(str(directory / name), name) for name in names], chunksize=chunk)


def _scan_one(job: tuple[str, str]) -> ScannedApk:
    return scan_apk(job[0], job[1])
