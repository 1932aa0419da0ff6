"""Which signature schemes an APK gets, for which SDK levels, and which signer signs each of them.

The defaults are apksigner's, decided from the lowest platform the APK must install on: v2 and v3 always (v3 only
for one signer, or several linked by a lineage), v1 only where a platform below Android 7.0 (API 24) needs it. Every
combination that would produce an APK some platform in the window rejects is refused here, before anything is
written, with a sentence that says which option to change.

Rotation follows apksig's SDK targeting: with a lineage and no v3.1, the newest signer signs the v3 block with the
lineage for every level from Android 9 (API 28) on; with v3.1, the original signer keeps the v3 block for the levels
below `rotation_min_sdk` and the newest signer signs a v3.1 block (Android 13+ prefers it) from that level on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sealgate.apk.lineage import Lineage
from sealgate.errors import UsageError
from sealgate.signing import Signer

ANDROID_JELLY_BEAN_MR2 = 18
ANDROID_N = 24
ANDROID_P = 28
ANDROID_T = 33
#: Java's Integer.MAX_VALUE: "every newer platform" as v3 signer records write it.
NEWEST_SDK = 0x7FFFFFFF
#: apksig's MAX_APK_SIGNERS: Android refuses more JAR or v2 signers than this.
MAX_SIGNERS = 10
DEFAULT_ROTATION_MIN_SDK = ANDROID_T
#: The first platform that knows every v2/v3 signature algorithm this signer uses (no verity variants).
BLOCK_ALGORITHMS_MIN_SDK = ANDROID_N


@dataclass(frozen=True)
class ApkSigningOptions:
    """What to sign with; None leaves a choice to apksigner's default for the APK's minimum SDK."""

    v1: bool | None = None
    v2: bool | None = None
    v3: bool | None = None
    #: Sign a v3.1 block with the newest signer of `lineage` for SDK >= rotation_min_sdk (Android 13+).
    v31: bool = False
    #: Lowest platform the APK must verify on; default: the APK's minSdkVersion.
    min_sdk: int | None = None
    #: Highest platform it must verify on; default: every future one.
    max_sdk: int | None = None
    #: Proof-of-rotation lineage; the signers then follow its order, oldest first, and the newest signs v3.
    lineage: Lineage | None = None
    #: First SDK level of the rotated key in the v3.1 block (default 33 when v31).
    rotation_min_sdk: int | None = None
    #: Byte alignment of STORED entries' data (zipalign's 4).
    alignment: int = 4
    #: Alignment of STORED native libraries (*.so), so the platform can map them in place on 16 KiB-page devices.
    page_alignment: int = 16384
    #: Verify the output with the full `verify_apk` (every byte hashed again) instead of the signer's self-check.
    verify_output: bool = False


@dataclass(frozen=True)
class V3Signer:
    """One record of a v3 or v3.1 block: who signs which SDK range, with which lineage and attributes."""

    signer: Signer
    min_sdk: int
    max_sdk: int
    lineage: Lineage | None
    #: The rotation-min-sdk attribute (v3.0 records only, when a v3.1 block exists): stripping protection.
    rotation_min_sdk: int | None = None


@dataclass(frozen=True)
class SigningPlan:
    """The resolved choice: the window the output must verify in and the signers of every scheme."""

    min_sdk: int
    max_sdk: int
    v1_signers: tuple[Signer, ...]
    v2_signers: tuple[Signer, ...]
    v3_signers: tuple[V3Signer, ...]
    v31_signers: tuple[V3Signer, ...]

    @property
    def v1(self) -> bool:
        return bool(self.v1_signers)

    @property
    def v2(self) -> bool:
        return bool(self.v2_signers)

    @property
    def v3(self) -> bool:
        return bool(self.v3_signers)

    @property
    def scheme_ids(self) -> list[int]:
        """The APK Signature Scheme IDs the v1 .SF names for stripping protection (apksig writes 2 and 3 only)."""
        return [scheme for scheme, on in ((2, self.v2), (3, self.v3)) if on]


def plan_signing(options: ApkSigningOptions, signers: Sequence[Signer], apk_min_sdk: int) -> SigningPlan:
    """Resolve the options for these signers, or raise UsageError naming what cannot work."""
    if not signers:
        raise UsageError("at least one signer is needed to sign an APK")
    _check_alignment(options)
    min_sdk = apk_min_sdk if options.min_sdk is None else options.min_sdk
    max_sdk = NEWEST_SDK if options.max_sdk is None else options.max_sdk
    if min_sdk < 1:
        raise UsageError(f"the minimum SDK must be at least 1 (got {min_sdk})")
    if min_sdk > max_sdk:
        raise UsageError(f"the minimum SDK {min_sdk} is above the maximum SDK {max_sdk}")
    _check_distinct(signers)
    lineage = options.lineage
    ordered = _lineage_order(lineage, signers) if lineage is not None else list(signers)

    v1 = options.v1 if options.v1 is not None else min_sdk < ANDROID_N
    v2 = options.v2 if options.v2 is not None else max_sdk >= ANDROID_N
    several_unlinked = len(ordered) > 1 and lineage is None
    v3_default = max_sdk >= ANDROID_P and not several_unlinked
    v3 = options.v3 if options.v3 is not None else (v3_default or lineage is not None or options.v31)
    _check_schemes(options, v1, v2, v3, min_sdk, max_sdk, several_unlinked, lineage)

    oldest, newest = ordered[0], ordered[-1]
    if lineage is not None and (v1 or v2) and not _is_root(lineage, oldest):
        raise UsageError(
            "v1 and v2 signatures can only be made by the original signer (the first certificate of the lineage), "
            "and it is not among the signers; add its key, or switch v1 and v2 off (which needs a minimum SDK of "
            f"{ANDROID_P} or higher)"
        )
    # With v3 (which allows one signer), apksig signs v1 and v2 with the oldest signer only.
    older = (oldest,) if v3 else tuple(ordered)
    if (v1 or v2) and len(older) > MAX_SIGNERS:
        raise UsageError(f"Android accepts at most {MAX_SIGNERS} v1/v2 signers; {len(older)} were given")
    v3_signers: tuple[V3Signer, ...] = ()
    v31_signers: tuple[V3Signer, ...] = ()
    if v3 and options.v31:
        assert lineage is not None
        rotation = DEFAULT_ROTATION_MIN_SDK if options.rotation_min_sdk is None else options.rotation_min_sdk
        if len(ordered) < 2:
            raise UsageError("v3.1 needs two signers: the original one (for older platforms) and the rotated one")
        v31_signers = (V3Signer(newest, rotation, NEWEST_SDK, _sub_lineage(lineage, newest)),)
        original_lineage = _sub_lineage(lineage, oldest)
        v3_signers = (
            V3Signer(
                oldest,
                _v3_min_sdk(original_lineage),
                rotation - 1,
                original_lineage if len(original_lineage.nodes) > 1 else None,
                rotation,
            ),
        )
    elif v3:
        sub = _sub_lineage(lineage, newest) if lineage is not None else None
        rotated = sub if sub is not None and len(sub.nodes) > 1 else None
        v3_signers = (V3Signer(newest, _v3_min_sdk(rotated), NEWEST_SDK, rotated),)
    return SigningPlan(
        min_sdk=min_sdk,
        max_sdk=max_sdk,
        v1_signers=older if v1 else (),
        v2_signers=older if v2 else (),
        v3_signers=v3_signers,
        v31_signers=v31_signers,
    )


def _check_alignment(options: ApkSigningOptions) -> None:
    for name, value in (("alignment", options.alignment), ("page alignment", options.page_alignment)):
        if not 1 <= value <= 0xFFFF:
            raise UsageError(f"the {name} must be between 1 and 65535 bytes (got {value})")


def _check_distinct(signers: Sequence[Signer]) -> None:
    seen: set[bytes] = set()
    for signer in signers:
        der = signer.certificate.der
        if der in seen:
            raise UsageError(f"signer {signer.name!r} is given twice (same certificate)")
        seen.add(der)


def _check_schemes(
    options: ApkSigningOptions,
    v1: bool,
    v2: bool,
    v3: bool,
    min_sdk: int,
    max_sdk: int,
    several_unlinked: bool,
    lineage: Lineage | None,
) -> None:
    if not (v1 or v2 or v3):
        raise UsageError("every signature scheme is switched off; enable at least one of v1, v2 and v3")
    if v3 and several_unlinked:
        raise UsageError(
            "APK Signature Scheme v3 takes one signer, or several linked by a lineage; switch v3 off to sign "
            "with several independent signers (v1/v2), or give the lineage that links them"
        )
    if lineage is not None and not v3:
        raise UsageError("a lineage is carried by the v3 signature; it cannot be used with v3 switched off")
    if options.v31:
        if lineage is None:
            raise UsageError("v3.1 rotates to a new key and needs the lineage that links the old key to the new one")
        if not v3:
            raise UsageError("a v3.1 signature needs the v3 signature beside it; do not switch v3 off")
        rotation = DEFAULT_ROTATION_MIN_SDK if options.rotation_min_sdk is None else options.rotation_min_sdk
        if rotation < ANDROID_T:
            raise UsageError(f"the v3.1 rotation SDK must be at least {ANDROID_T} (Android 13), got {rotation}")
        if max_sdk < rotation:
            raise UsageError(f"a v3.1 block for SDK {rotation}+ is pointless when the maximum SDK is {max_sdk}")
    elif options.rotation_min_sdk is not None:
        raise UsageError("a rotation SDK only applies to v3.1 signing; enable v3.1 or leave it out")
    if min_sdk < ANDROID_N and not v1:
        raise UsageError(
            f"platforms below API {ANDROID_N} only check v1 (JAR) signatures; enable v1 or raise the minimum SDK "
            f"(now {min_sdk}) to {ANDROID_N}"
        )
    if min_sdk < ANDROID_P and max_sdk >= ANDROID_N and not (v1 or v2):
        raise UsageError(
            f"API levels {max(min_sdk, ANDROID_N)}-{min(max_sdk, ANDROID_P - 1)} do not know v3 signatures; "
            f"enable v2 or raise the minimum SDK to {ANDROID_P}"
        )
    if not v1 and not v2 and min_sdk < ANDROID_P:
        raise UsageError(f"a v3-only APK needs a minimum SDK of at least {ANDROID_P}")
    if max_sdk < ANDROID_N and (options.v2 or options.v3):
        raise UsageError(f"v2 and v3 signatures need a maximum SDK of at least {ANDROID_N}")


def _lineage_order(lineage: Lineage, signers: Sequence[Signer]) -> list[Signer]:
    """The signers in lineage order (oldest first); each must be a certificate of the lineage."""
    position = {node.certificate.der: index for index, node in enumerate(lineage.nodes)}
    for signer in signers:
        if signer.certificate.der not in position:
            raise UsageError(
                f"signer {signer.name!r} ({signer.certificate.subject}) is not in the lineage; every signer of a "
                "rotated APK must be one of its certificates"
            )
    return sorted(signers, key=lambda signer: position[signer.certificate.der])


def _is_root(lineage: Lineage, signer: Signer) -> bool:
    return bool(lineage.nodes) and lineage.nodes[0].certificate.der == signer.certificate.der


def _sub_lineage(lineage: Lineage | None, signer: Signer) -> Lineage:
    """The lineage up to and including `signer` (apksig's getSubLineage)."""
    assert lineage is not None
    for index, node in enumerate(lineage.nodes):
        if node.certificate.der == signer.certificate.der:
            return Lineage(lineage.nodes[: index + 1])
    raise UsageError(f"signer {signer.name!r} is not in the lineage")


def _v3_min_sdk(lineage: Lineage | None) -> int:
    """apksig's v3 record minimum: the algorithms' first SDK, or Android 9 for a signer that carries a rotation."""
    if lineage is not None and len(lineage.nodes) > 1:
        return ANDROID_P
    return BLOCK_ALGORITHMS_MIN_SDK
