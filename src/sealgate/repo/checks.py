"""The verification steps every APK passes before it is indexed, each with a stable code and a reason.

The first install of an app trusts whatever signer the repository offers, and every later update must come from
that signer: so what a repository indexes decides what millions of devices will accept. The steps:

1. VERIFY: the APK verifies as Android verifies it, over its own SDK range (the project's verifier).
2. SIGNER_NOT_ALLOWED: when the app's metadata pins signers (AllowedAPKSigningKeys), every certificate Android
   would use at any level of the APK's range is one of them.
3. SIGNER_CHANGE: the APK can update every earlier version in the repository, and every later version can update
   it, by Android's update rule at each SDK level both install on (a key rotation is accepted with its proof).
   Versions already published are settled first, so a new file cannot push a published one out of the repository.
4. FILE_NAME_MISMATCH, DUPLICATE, DUPLICATE_VERSION: a name of the form <package>_<versionCode>.apk must say what
   the APK is; the same file twice is indexed once; two different files with one package and version code are not
   both indexed (the published one, else the first by name, wins).
   TEST_ONLY: Android's installer refuses testOnly APKs outside adb, so no store should offer them.

A refused APK is reported with its reason and left out; it never stops the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sealgate.repo.metadata import AppMetadata
from sealgate.repo.scan import ScannedApk

_FILE_NAME = re.compile(r"^(?P<package>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+)_(?P<code>\d+)\.apk$")


@dataclass(frozen=True)
class Refusal:
    """Why an APK is not indexed."""

    name: str
    code: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.name, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class Located:
    """A scan and the folder the file is in ("repo" or "archive")."""

    section: str
    scan: ScannedApk

    @property
    def key(self) -> str:
        return f"{self.section}/{self.scan.name}"


def check_apks(
    apks: Sequence[Located], metadata: Mapping[str, AppMetadata], published: frozenset[str]
) -> tuple[list[Located], list[Refusal]]:
    """The APKs that pass every step, and a refusal for each one that does not.

    `published` holds the SHA-256 of the files the current index already lists: they are settled first.
    """
    refusals: list[Refusal] = []
    candidates: list[Located] = []
    for item in apks:
        refusal = _check_alone(item, metadata.get(item.scan.package))
        if refusal is not None:
            refusals.append(refusal)
        else:
            candidates.append(item)
    candidates, duplicates = _drop_duplicates(candidates, published)
    refusals.extend(duplicates)
    accepted: list[Located] = []
    by_package: dict[str, list[Located]] = {}
    # Published versions first (oldest first), then new ones (oldest first): history is settled before news.
    for item in sorted(candidates, key=lambda i: (i.scan.sha256 not in published, i.scan.version_code, i.key)):
        earlier = by_package.setdefault(item.scan.package, [])
        conflict = _update_conflict(item.scan, [other.scan for other in earlier])
        if conflict is not None:
            refusals.append(Refusal(item.key, "SIGNER_CHANGE", conflict))
            continue
        earlier.append(item)
        accepted.append(item)
    accepted.sort(key=lambda i: (i.scan.package, -i.scan.version_code, i.key))
    refusals.sort(key=lambda refusal: refusal.name)
    return accepted, refusals


def _check_alone(item: Located, metadata: AppMetadata | None) -> Refusal | None:
    scan = item.scan
    if not scan.verified:
        reason = "; ".join(scan.errors[:3]) or "it does not verify"
        return Refusal(item.key, "VERIFY", f"does not verify as Android verifies it: {reason}")
    match = _FILE_NAME.match(scan.name)
    if match is not None and (match["package"] != scan.package or int(match["code"]) != scan.version_code):
        return Refusal(
            item.key,
            "FILE_NAME_MISMATCH",
            f"the file name says {match['package']} version {match['code']}, "
            f"the APK is {scan.package} version {scan.version_code}",
        )
    if scan.test_only:
        return Refusal(item.key, "TEST_ONLY", "the APK is marked testOnly; Android installs it only through adb")
    if metadata is not None and metadata.allowed_signers:
        used = {certificate for identity in scan.identities for certificate in identity.certificates}
        for der in sorted(used):
            fingerprint = _sha256(der)
            if fingerprint not in metadata.allowed_signers:
                return Refusal(
                    item.key,
                    "SIGNER_NOT_ALLOWED",
                    f"signed by {fingerprint}, which is not in AllowedAPKSigningKeys of {metadata.path}",
                )
    return None


def _drop_duplicates(candidates: Iterable[Located], published: frozenset[str]) -> tuple[list[Located], list[Refusal]]:
    by_version: dict[tuple[str, int], list[Located]] = {}
    for item in candidates:
        by_version.setdefault((item.scan.package, item.scan.version_code), []).append(item)
    kept: list[Located] = []
    refusals: list[Refusal] = []
    for (package, code), items in sorted(by_version.items()):
        # The published file wins, then one in repo/, then the one named <package>_<versionCode>.apk.
        items.sort(key=lambda i: (i.scan.sha256 not in published, i.section != "repo", not _canonical(i.scan), i.key))
        winner = items[0]
        kept.append(winner)
        for other in items[1:]:
            if other.scan.sha256 == winner.scan.sha256:
                refusals.append(Refusal(other.key, "DUPLICATE", f"the same file as {winner.key}"))
            else:
                refusals.append(
                    Refusal(
                        other.key,
                        "DUPLICATE_VERSION",
                        f"{package} version {code} is already {winner.key}, a different file; "
                        "one version code must mean one APK",
                    )
                )
    return kept, refusals


def _canonical(scan: ScannedApk) -> bool:
    return scan.name == f"{scan.package}_{scan.version_code}.apk"


def _update_conflict(candidate: ScannedApk, others: Sequence[ScannedApk]) -> str | None:
    """Why `candidate` and one of `others` (same package) could not follow each other on a device, or None."""
    from sealgate.apk.update_rules import decide_update

    for other in others:
        older, newer = (other, candidate) if other.version_code <= candidate.version_code else (candidate, other)
        low = max(older.min_sdk, newer.min_sdk)
        levels = sorted({low, *(level for level in (*older.levels(), *newer.levels()) if level >= low)})
        for level in levels:
            installed_raw, update_raw = older.raw_identity_at(level), newer.raw_identity_at(level)
            if installed_raw is None or update_raw is None:
                continue
            if installed_raw.certificates == update_raw.certificates:
                continue  # the same signer set: Android's first and commonest acceptance, decided without parsing
            decision = decide_update(installed_raw.identity(), update_raw.identity())
            if not decision.accepted:
                return (
                    f"version {newer.version_code} ({newer.name}) cannot update version {older.version_code} "
                    f"({older.name}) on Android API {level}: {decision.reason}"
                )
    return None


def _sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()
