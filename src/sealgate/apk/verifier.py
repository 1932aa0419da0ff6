"""The one path that verifies an APK and names its signers.

Every part of sealgate that needs to know who signed an APK (the repository pinning signers, the device deciding
an install or an update) calls `verify_apk` and uses the identity it returns; nothing else reads certificates out
of an APK, because every published bypass of F-Droid's signer pinning came from a second code path reading a
certificate that the verifier had not checked.

The decision follows apksig's `ApkVerifier.verify` for an SDK window [min_sdk, max_sdk]: v3.1 on 33+, v3 on 28+,
v2 on 24+ unless v3 covers the whole window, v1 below 24 or when no signing-block scheme is present, then the
cross-scheme rules (v1 and v2 signers agree; v3 agrees with older schemes through its lineage), the
targetSandboxVersion and targetSdkVersion minimum-scheme rules, and the optional v4 signature. The APK's contents
are hashed once for all signing-block schemes, on every core.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealgate.apk.algorithms import ContentDigest
from sealgate.apk.content_digest import DigestedSections, compute_chunked_digests
from sealgate.apk.manifest import AndroidManifest, read_manifest
from sealgate.apk.report import Issue, Scheme, SchemeResult
from sealgate.apk.signer_blocks import MIN_SDK_WITH_V31_SUPPORT, planned_content_digests, v3_signer_sdk_ranges
from sealgate.apk.signing_block import V2_BLOCK_ID, V3_BLOCK_ID, V31_BLOCK_ID, SigningBlock, locate_signing_block
from sealgate.errors import ApkFormatError, UsageError, ZipFormatError
from sealgate.ziparchive import EOCD_SIZE, ZipArchive, not_a_zip_reason

# The cryptography-backed modules load only once hashing is under way (see _verify_archive).
if TYPE_CHECKING:
    from sealgate.apk.certificate import Certificate
    from sealgate.apk.lineage import Lineage
    from sealgate.apk.update_rules import SigningIdentity
    from sealgate.apk.v2v3 import BlockVerification

ANDROID_N = 24
ANDROID_O = 26
ANDROID_P = 28
ANDROID_R = 30
#: "The newest platform": apksig's default maximum, so that open-ended v3 signer ranges are judged as it judges them.
NEWEST_SDK = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class SdkSigners:
    """The signers Android uses, and the scheme it uses, for every level in [min_sdk, max_sdk]."""

    min_sdk: int
    max_sdk: int
    scheme: Scheme
    signers: tuple[Certificate, ...]
    #: The proof-of-rotation lineage of the v3/v3.1 signer used in this range, if it carries one.
    lineage: Lineage | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "min_sdk": self.min_sdk,
            "max_sdk": None if self.max_sdk == NEWEST_SDK else self.max_sdk,
            "scheme": int(self.scheme),
            "signers": [certificate.sha256 for certificate in self.signers],
        }


@dataclass(slots=True)
class ApkVerification:
    """The verdict on one APK over an SDK window, with the verified identity when it verified."""

    path: str
    min_sdk: int
    max_sdk: int
    verified: bool = False
    #: The signer certificates Android uses at the newest level of the window (apksig's `getSignerCertificates`).
    signers: list[Certificate] = field(default_factory=list)
    lineage: Lineage | None = None
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    scheme_results: dict[Scheme, SchemeResult] = field(default_factory=dict)
    sdk_signers: list[SdkSigners] = field(default_factory=list)
    manifest: AndroidManifest | None = None

    @property
    def schemes(self) -> list[int]:
        """The schemes that verified, as numbers (1, 2, 3, 31, 4)."""
        return [int(scheme) for scheme, result in sorted(self.scheme_results.items()) if result.verified]

    def identity_at(self, sdk: int) -> SigningIdentity:
        """The signing identity Android compares on a device at API level `sdk` (for `decide_update`)."""
        from sealgate.apk.update_rules import SigningIdentity

        if not self.verified:
            raise UsageError(f"{self.path} did not verify, so it has no signing identity")
        for entry in self.sdk_signers:
            if entry.min_sdk <= sdk <= entry.max_sdk:
                return SigningIdentity(entry.signers, entry.lineage)
        raise UsageError(f"SDK {sdk} lies outside the verified window {self.min_sdk}..{self.max_sdk}")

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "verified": self.verified,
            "schemes": self.schemes if self.verified else [],
            "signers": [{"sha256": c.sha256, "subject": c.subject, "key": c.key_description} for c in self.signers],
            "lineage": self.lineage.to_json() if self.lineage is not None else None,
            "sdk": [entry.to_json() for entry in self.sdk_signers],
            "errors": [issue.to_json() for issue in self.errors],
            "warnings": [issue.to_json() for issue in self.warnings],
        }


def verify_apk(
    path: str | os.PathLike[str],
    *,
    min_sdk: int | None = None,
    max_sdk: int | None = None,
    idsig: str | os.PathLike[str] | None = None,
) -> ApkVerification:
    """Verify the APK at `path` as Android does on every level of [min_sdk, max_sdk].

    `min_sdk` defaults to the APK's minSdkVersion and `max_sdk` to the newest platform. Raises ApkFormatError when
    the file is not an APK at all (not a ZIP, no AndroidManifest.xml, ZIP64) and UsageError for an impossible window;
    every other problem is an error in the returned report.
    """
    window_max = NEWEST_SDK if max_sdk is None else max_sdk
    if min_sdk is not None and min_sdk < 0:
        raise UsageError(f"--min-sdk must not be negative (got {min_sdk})")
    if min_sdk is not None and min_sdk > window_max:
        raise UsageError(f"--min-sdk {min_sdk} is above --max-sdk {window_max}")
    idsig_bytes = _read_idsig(idsig) if idsig is not None else None
    try:
        archive = ZipArchive.open(path)
    except ZipFormatError as exc:
        raise ApkFormatError(f"Malformed APK: {not_a_zip_reason(exc)}") from exc
    with archive:
        if archive.sections.zip64_eocd_offset is not None:
            raise ApkFormatError("ZIP64 APKs are not supported by Android's APK signature schemes")
        return _verify_archive(os.fspath(path), archive, min_sdk, window_max, idsig_bytes)


def _read_idsig(idsig: str | os.PathLike[str]) -> bytes:
    try:
        return Path(idsig).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read v4 signature file {os.fspath(idsig)!r}: {exc.strerror}") from exc


def _verify_archive(
    path: str, archive: ZipArchive, min_sdk: int | None, max_sdk: int, idsig: bytes | None
) -> ApkVerification:
    manifest: AndroidManifest | None = None
    if min_sdk is None or max_sdk >= ANDROID_O:
        manifest = read_manifest(archive)
    if min_sdk is None:
        assert manifest is not None
        min_sdk = manifest.min_sdk
        if min_sdk > max_sdk:
            raise UsageError(f"the APK's minSdkVersion {min_sdk} is above --max-sdk {max_sdk}")
    report = ApkVerification(path, min_sdk, max_sdk, manifest=manifest)
    report.errors.extend(Issue(v.code, v.message) for v in archive.violations)
    if any(v.code == "ZIP_OVERLAPPING_ENTRIES" for v in archive.violations):
        # Entries sharing bytes let a small file inflate without bound (one deflate bomb read through many
        # records); the verdict is already a rejection, so do not hash at all.
        return report

    block, _ = locate_signing_block(archive)
    plan = _plan_schemes(block, min_sdk, max_sdk) if max_sdk >= ANDROID_N and block is not None else _SchemePlan()
    found = plan.found
    # Hashing is nearly all the work, and the plan says which digests the signatures will need before any
    # cryptography is loaded: the background threads hash (v2/v3 chunks, v1 entries) on every core while this
    # thread loads the crypto libraries and checks the signatures.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="apk-verify") as background:
        digests = None
        if plan.digests:
            assert block is not None
            digests = background.submit(_content_digests, archive, block, frozenset(plan.digests))
        v1_result = None
        v1_window = _jar_window(min_sdk, max_sdk, found)
        if v1_window is not None:
            v1_result = background.submit(_verify_v1, archive, *v1_window, frozenset(found))
        phases = _verify_signatures(plan, min_sdk, max_sdk, report)
        if phases:
            assert block is not None
            _check_contents(archive, block, phases, digests)
            for phase in phases:
                report.scheme_results[phase.result.scheme] = phase.result
        if idsig is not None and max_sdk >= ANDROID_N:
            _verify_v4(archive, idsig, report)
        if v1_result is not None:
            report.scheme_results[Scheme.V1] = v1_result.result()

    if max_sdk >= ANDROID_O and manifest is not None and (manifest.target_sandbox_version or 1) > 1 and not found:
        report.errors.append(
            Issue(
                "NO_SIG_FOR_TARGET_SANDBOX_VERSION",
                f"targetSandboxVersion {manifest.target_sandbox_version} needs an APK Signature Scheme v2 or newer "
                "signature, and there is none",
            )
        )
    _collect(report)
    if not report.errors:
        _check_cross_scheme(report)
    if not report.errors:
        _check_min_scheme_for_target_sdk(report, archive)
    if not report.errors:
        _name_signers(report)
    return report


@dataclass(slots=True)
class _SchemePlan:
    """Which signing-block schemes Android would check in the window, found without any cryptography."""

    #: (scheme, block value) in apksig's order: v3.1, v3, v2.
    blocks: list[tuple[Scheme, bytes]] = field(default_factory=list)
    found: set[int] = field(default_factory=set)
    digests: set[ContentDigest] = field(default_factory=set)
    v31_without_v3: bool = False
    #: Where a v3.1 block's rotation starts when the window ends below it (the block itself is then not used).
    rotation_min_sdk: int | None = None


def _plan_schemes(block: SigningBlock, min_sdk: int, max_sdk: int) -> _SchemePlan:
    """apksig's order: v3.1 on 33+, v3 on 28+, and v2 only where v3 does not cover the whole window."""
    plan = _SchemePlan()
    windows = {
        Scheme.V31: (max(min_sdk, MIN_SDK_WITH_V31_SUPPORT), max_sdk),
        Scheme.V3: (max(min_sdk, ANDROID_P), max_sdk),
        Scheme.V2: (max(min_sdk, ANDROID_N), max_sdk),
    }
    if max_sdk >= MIN_SDK_WITH_V31_SUPPORT and (v31 := block.find(V31_BLOCK_ID)) is not None:
        starts = [low for low, _ in v3_signer_sdk_ranges(v31)]
        if starts and min(starts) > max_sdk:
            # Every v3.1 signer targets a platform above the window: those platforms pick no v3.1 signer and use
            # the v3 block, as Android 13 does for a rotation that starts at 34 (apksig refuses this window).
            plan.rotation_min_sdk = min(starts)
        else:
            plan.blocks.append((Scheme.V31, v31))
    if max_sdk >= ANDROID_P:
        if (v3 := block.find(V3_BLOCK_ID)) is not None:
            plan.blocks.append((Scheme.V3, v3))
        elif plan.blocks:
            plan.v31_without_v3 = True
    plan.found = {int(scheme) for scheme, _ in plan.blocks}
    if (min_sdk < ANDROID_P or not plan.found) and (v2 := block.find(V2_BLOCK_ID)) is not None:
        plan.blocks.append((Scheme.V2, v2))
    for scheme, value in plan.blocks:
        plan.digests |= planned_content_digests(scheme, value, *windows[scheme])
    plan.found = {int(scheme) for scheme, _ in plan.blocks}
    return plan


def _verify_signatures(
    plan: _SchemePlan, min_sdk: int, max_sdk: int, report: ApkVerification
) -> list[BlockVerification]:
    """First phase of every planned scheme: signatures, certificates, attributes (everything but the digests)."""
    from sealgate.apk.v2v3 import parse_scheme_block  # loads the cryptography libraries

    if plan.v31_without_v3:
        report.errors.append(
            Issue(
                "V31_BLOCK_FOUND_WITHOUT_V3_BLOCK",
                "the APK has a v3.1 signature but no v3 signature, which Android requires alongside it",
            )
        )
    phases: list[BlockVerification] = []
    rotation_min_sdk: int | None = plan.rotation_min_sdk
    found_before_v2 = frozenset(plan.found - {int(Scheme.V2)})
    for scheme, value in plan.blocks:
        if scheme is Scheme.V31:
            phase = parse_scheme_block(Scheme.V31, value, max(min_sdk, MIN_SDK_WITH_V31_SUPPORT), max_sdk)
            sdk_levels = [s.min_sdk for s in phase.result.signers if s.min_sdk is not None]
            rotation_min_sdk = min(sdk_levels) if sdk_levels else None
        elif scheme is Scheme.V3:
            phase = parse_scheme_block(
                Scheme.V3, value, max(min_sdk, ANDROID_P), max_sdk, rotation_min_sdk=rotation_min_sdk
            )
        else:
            phase = parse_scheme_block(
                Scheme.V2,
                value,
                max(min_sdk, ANDROID_N),
                max_sdk,
                found_scheme_ids=found_before_v2,
                supported_scheme_ids=frozenset({2, 3}) if max_sdk >= ANDROID_P else frozenset({2}),
            )
        phases.append(phase)
    return phases


def _jar_window(min_sdk: int, max_sdk: int, found: set[int]) -> tuple[int, int] | None:
    """The levels on which Android checks the JAR signature, or None when none does.

    apksig's rule (below 24, or no signing-block scheme at all), plus the levels apksig misses: Android 7.0 to 8.1
    know only v2 among the block schemes, so an APK with v3 but no v2 is checked there by its JAR signature.
    """
    if min_sdk < ANDROID_N or not found:
        return min_sdk, max_sdk
    if min_sdk < ANDROID_P and int(Scheme.V2) not in found:
        return min_sdk, min(max_sdk, ANDROID_P - 1)
    return None


def _verify_v1(archive: ZipArchive, min_sdk: int, max_sdk: int, found: frozenset[int]) -> SchemeResult:
    from sealgate.apk.v1 import verify_v1  # only platforms before Android 7.0 need the JAR machinery

    return verify_v1(archive, min_sdk, max_sdk, found_apk_sig_scheme_ids=found)


def _digested_sections(archive: ZipArchive, block: SigningBlock) -> DigestedSections:
    """What v2/v3 digest: the bytes before the signing block, the central directory, and the rewritten EOCD."""
    sections = archive.sections
    eocd = bytearray(archive.pread(sections.eocd_offset, EOCD_SIZE + len(sections.comment)))
    eocd[16:20] = block.offset.to_bytes(4, "little")
    return DigestedSections(archive.fileno, (0, block.offset), (sections.cd_offset, sections.cd_size), bytes(eocd))


def _content_digests(
    archive: ZipArchive, block: SigningBlock, algorithms: frozenset[ContentDigest]
) -> dict[ContentDigest, bytes]:
    return compute_chunked_digests(_digested_sections(archive, block), sorted(algorithms))


def _check_contents(
    archive: ZipArchive,
    block: SigningBlock,
    phases: list[BlockVerification],
    planned: Future[dict[ContentDigest, bytes]] | None,
) -> None:
    """Compare every digest the verified signatures need; the planned ones are already being computed."""
    needed: set[ContentDigest] = set()
    for phase in phases:
        if not phase.result.all_errors():
            needed |= phase.digests_needed
    actual: dict[ContentDigest, bytes] = dict(planned.result()) if planned is not None else {}
    missing = {algorithm for algorithm in needed if algorithm not in actual}
    if missing:
        actual.update(compute_chunked_digests(_digested_sections(archive, block), sorted(missing)))
        if ContentDigest.VERITY_CHUNKED_SHA256 in missing:
            _add_verity_digest(archive, block, _digested_sections(archive, block), actual, phases)
    for phase in phases:
        phase.finish({algorithm: actual[algorithm] for algorithm in needed if algorithm in actual})


def _add_verity_digest(
    archive: ZipArchive,
    block: SigningBlock,
    digested: DigestedSections,
    actual: dict[ContentDigest, bytes],
    phases: list[BlockVerification],
) -> None:
    block_size = archive.sections.cd_offset - block.offset
    if block.offset % 4096 or block_size % 4096:
        for phase in phases:
            if ContentDigest.VERITY_CHUNKED_SHA256 in phase.digests_needed:
                phase.result.error(
                    "V2_SIG_APK_DIGEST_DID_NOT_VERIFY"
                    if phase.result.scheme is Scheme.V2
                    else "V3_SIG_APK_DIGEST_DID_NOT_VERIFY",
                    "a verity-based signature needs the APK Signing Block aligned to and sized in 4096-byte pages",
                )
        return
    from sealgate.apk.verity import verity_content_digest

    actual[ContentDigest.VERITY_CHUNKED_SHA256] = verity_content_digest(
        [
            (digested.fd, *digested.before_block),
            (digested.fd, *digested.central_directory),
            digested.eocd,
        ]
    )


def _verify_v4(archive: ZipArchive, idsig: bytes, report: ApkVerification) -> None:
    """Check the .idsig against the signers apksig pairs it with: v3 (else v2), then v3.1 when present.

    As in apksig, the v4 signature names one signer: the scheme it refers to must have exactly one, and its first
    signer is the one compared.
    """
    from sealgate.apk.v4 import V4ReferenceSigner, verify_v4

    def reference(scheme: Scheme) -> V4ReferenceSigner | None:
        result = _verified(report, scheme)
        if result is None or not result.signers or result.signers[0].certificate is None:
            return None
        if len(result.signers) != 1:
            report.errors.append(
                Issue("V4_SIG_MULTIPLE_SIGNERS", f"a v4 signature needs exactly one {scheme.label} signer")
            )
        signer = result.signers[0]
        assert signer.certificate is not None
        return V4ReferenceSigner(signer.certificate, dict(signer.content_digests))

    v3 = reference(Scheme.V3)
    first = v3 or reference(Scheme.V2)
    if first is None:
        report.errors.append(
            Issue("V4_SIG_NO_V2_V3_SIGNATURE", "a v4 signature needs a verified v2 or v3 signature to refer to")
        )
        return
    references = [first]
    v31 = reference(Scheme.V31) if v3 is not None else None
    if v31 is not None:
        references.append(v31)
    report.scheme_results[Scheme.V4] = verify_v4(idsig, archive.fileno, archive.sections.file_size, references)


def _collect(report: ApkVerification) -> None:
    for result in report.scheme_results.values():
        report.errors.extend(result.all_errors())
        report.warnings.extend(result.all_warnings())


def _verified(report: ApkVerification, scheme: Scheme) -> SchemeResult | None:
    result = report.scheme_results.get(scheme)
    return result if result is not None and result.verified else None


def _check_cross_scheme(report: ApkVerification) -> None:
    v1 = _verified(report, Scheme.V1)
    v2 = _verified(report, Scheme.V2)
    v3 = _verified(report, Scheme.V3)
    if v1 is not None and v2 is not None:
        v1_certs = [s.certificate for s in v1.signers]
        v2_certs = [s.certificate for s in v2.signers]
        missing_in_v2 = next((c for c in v1_certs if c not in v2_certs), None)
        if missing_in_v2 is not None:
            report.errors.append(Issue("V2_SIG_MISSING", "a v1 (JAR) signer has no matching v2 signer"))
        missing_in_v1 = next((c for c in v2_certs if c not in v1_certs), None)
        if missing_in_v1 is not None:
            report.errors.append(Issue("JAR_SIG_MISSING", "a v2 signer has no matching v1 (JAR) signer"))
    if v3 is not None and (v1 is not None or v2 is not None):
        older = v1 if v1 is not None else v2
        assert older is not None
        if len(older.signers) != 1:
            report.errors.append(
                Issue("V3_SIG_MULTIPLE_PAST_SIGNERS", "v3 supports one signer, but the older scheme has several")
            )
        old_certificate = older.signers[0].certificate
        # apksig keeps the v3.1 lineage when there is one: the older scheme's signer must root that chain too.
        v31 = _verified(report, Scheme.V31)
        lineage = v31.lineage if v31 is not None and v31.lineage is not None else v3.lineage
        if lineage is None:
            if len(v3.signers) != 1:
                report.errors.append(
                    Issue("V3_SIG_MULTIPLE_SIGNERS", "several v3 signers without a lineage linking them")
                )
            if v3.signers[0].certificate != old_certificate:
                report.errors.append(
                    Issue(
                        "V3_SIG_PAST_SIGNERS_MISMATCH",
                        "the v3 signer differs from the v1/v2 signer and no lineage links them",
                    )
                )
        elif not lineage.nodes or old_certificate is None or lineage.nodes[0].certificate != old_certificate:
            report.errors.append(
                Issue(
                    "V3_SIG_PAST_SIGNERS_MISMATCH",
                    "the v1/v2 signer is not the first (oldest) certificate of the v3/v3.1 lineage",
                )
            )


def _check_min_scheme_for_target_sdk(report: ApkVerification, archive: ZipArchive) -> None:
    manifest = report.manifest
    if manifest is None:
        try:
            manifest = read_manifest(archive)
        except ApkFormatError:
            return
    target = manifest.target_sdk if manifest.target_sdk is not None else manifest.min_sdk
    if (
        target >= ANDROID_R
        and report.max_sdk >= target
        and not any(_verified(report, s) for s in (Scheme.V2, Scheme.V3, Scheme.V31))
    ):
        report.errors.append(
            Issue(
                "MIN_SIG_SCHEME_FOR_TARGET_SDK_NOT_MET",
                f"targetSdkVersion {target} needs an APK Signature Scheme v2 or newer signature, and the APK "
                "has only a v1 (JAR) signature",
            )
        )


def _name_signers(report: ApkVerification) -> None:
    report.verified = True
    v1 = _verified(report, Scheme.V1)
    v2 = _verified(report, Scheme.V2)
    v3 = _verified(report, Scheme.V3)
    v31 = _verified(report, Scheme.V31)
    newest = v31 or v3
    if newest is not None:
        report.signers = [c for c in [newest.signers[-1].certificate] if c is not None]
        report.lineage = newest.lineage
    elif v2 is not None:
        report.signers = [s.certificate for s in v2.signers if s.certificate is not None]
    elif v1 is not None:
        report.signers = [s.certificate for s in v1.signers if s.certificate is not None]
    report.sdk_signers = _signers_by_level(report, v1, v2, v3, v31)


def _signers_by_level(
    report: ApkVerification,
    v1: SchemeResult | None,
    v2: SchemeResult | None,
    v3: SchemeResult | None,
    v31: SchemeResult | None,
) -> list[SdkSigners]:
    """Which scheme and signers Android uses at each level of the window, merged into ranges."""
    boundaries = {report.min_sdk, ANDROID_N, ANDROID_P, MIN_SDK_WITH_V31_SUPPORT}
    for result in (v3, v31):
        for signer in result.signers if result else []:
            if signer.min_sdk is not None:
                boundaries.add(signer.min_sdk)
            if signer.max_sdk is not None and signer.max_sdk < NEWEST_SDK:
                boundaries.add(signer.max_sdk + 1)
    starts = sorted(b for b in boundaries if report.min_sdk <= b <= report.max_sdk)
    ranges: list[SdkSigners] = []
    for index, start in enumerate(starts):
        end = starts[index + 1] - 1 if index + 1 < len(starts) else report.max_sdk
        scheme, certificates, lineage = _signers_at(start, v1, v2, v3, v31)
        if scheme is None:
            continue
        previous = ranges[-1] if ranges else None
        if previous and (previous.scheme, previous.signers, previous.lineage) == (scheme, certificates, lineage):
            ranges[-1] = SdkSigners(previous.min_sdk, end, scheme, certificates, lineage)
        else:
            ranges.append(SdkSigners(start, end, scheme, certificates, lineage))
    return ranges


def _signers_at(
    level: int,
    v1: SchemeResult | None,
    v2: SchemeResult | None,
    v3: SchemeResult | None,
    v31: SchemeResult | None,
) -> tuple[Scheme | None, tuple[Certificate, ...], Lineage | None]:
    for scheme, result, first_level in (
        (Scheme.V31, v31, MIN_SDK_WITH_V31_SUPPORT),
        (Scheme.V3, v3, ANDROID_P),
    ):
        if result is not None and level >= first_level:
            for signer in result.signers:
                low = signer.min_sdk if signer.min_sdk is not None else 0
                high = signer.max_sdk if signer.max_sdk is not None else NEWEST_SDK
                if low <= level <= high and signer.certificate is not None:
                    lineage = signer.lineage
                    return scheme, (signer.certificate,), lineage
    if v2 is not None and level >= ANDROID_N:
        return Scheme.V2, tuple(s.certificate for s in v2.signers if s.certificate is not None), None
    if v1 is not None:
        return Scheme.V1, tuple(s.certificate for s in v1.signers if s.certificate is not None), None
    return None, (), None


def judge_scheme_results(report: ApkVerification, archive: ZipArchive) -> None:
    """The verdict and the identity for scheme results that were checked outside `verify_apk`, by its own rules.

    The APK signer checks the signatures it has just written against the digests it computed while writing them
    (hashing a gigabyte again to learn what it already knows would double the cost of signing); the cross-scheme
    rules and the naming of the signers must still be this module's, so that no second code path says who signed
    an APK.
    """
    _collect(report)
    if not report.errors:
        _check_cross_scheme(report)
    if not report.errors:
        _check_min_scheme_for_target_sdk(report, archive)
    if not report.errors:
        _name_signers(report)
