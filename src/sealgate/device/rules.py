"""Android's package-installer rules as pure functions: given what is installed and what is offered, the verdict.

Nothing here reads files or the database: the gate (`installer.Device`) gathers the facts, calls `decide_install`
or `decide_uninstall`, and writes only what an accepted decision says. The rules follow PackageManager
(InstallPackageHelper.preparePackageLI / ReconcilePackageUtils):

* first install: trust whatever signer verified (trust on first use) and remember it;
* update: the signing identity must satisfy `decide_update` against the identity recorded at install time, and the
  versionCode must not go down unless the installed app is debuggable and the caller asked for a downgrade
  (PackageManagerServiceUtils.isDowngradePermitted; this device is a release build, so the system-wide
  debuggable exception never applies);
* sharedUserId: every package of a shared user has compatible signers (the same set, or a lineage that grants the
  other SHARED_USER_ID), and an update may not move a package to another shared user;
* minSdkVersion and maxSdkVersion against the device's level (Android itself stopped enforcing maxSdkVersion after
  2.0.1, but app stores filter on it and a publisher testing an APK wants to know), the lowest targetSdkVersion the
  device's level still installs (INSTALL_FAILED_DEPRECATED_SDK_VERSION: 23 on Android 14, 24 on Android 15+), and
  native code for at least one of the device's ABIs (INSTALL_FAILED_NO_MATCHING_ABIS);
* minSdkVersion is checked before the signature, as PackageParser does while it parses the manifest, so an APK for
  a newer Android says OLDER_SDK rather than a signature error;
* from Android 11 an APK whose targetSdkVersion is 30 or more must carry a verified v2 or newer signature, whatever
  the device's level (ApkSignatureVerifier.getMinimumSignatureSchemeVersionForTargetSdk); apksig's window check
  (`maxSdk >= targetSdk`) is right for an SDK range but not for one device;
* downgrades and android:testOnly="true" APKs are only for the shell (`adb install -d` / `-t`):
  PackageInstallerService strips INSTALL_REQUEST_DOWNGRADE and INSTALL_ALLOW_TEST from any other caller
  (isDowngradeAllowedForCaller), so a store never gets them; here the shell is the call without a store;
* the platform's shared users (android.uid.system, android.uid.phone, android.media, ...) belong to the system
  image: only the system signer the device was made with may claim them, and a device made without one refuses
  them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import Capability
from sealgate.apk.update_rules import SigningIdentity, decide_update

Action = Literal["install", "update"]

#: (first device SDK level, lowest targetSdkVersion it installs), newest first (PackageManager's
#: MIN_INSTALLABLE_TARGET_SDK: Android 14 refuses apps targeting below 23, Android 15 below 24).
_MIN_TARGET_SDK_BY_LEVEL: tuple[tuple[int, int], ...] = ((35, 24), (34, 23))

#: Android 11 (R): the first level that needs v2+ for apps targeting R or newer.
_ANDROID_R = 30
#: Signature schemes that count as "v2 or newer" (v4 only accompanies v2/v3, so it does not count on its own).
_V2_OR_NEWER = frozenset({2, 3, 31})
#: sharedUserIds that the system image's own packages hold (frameworks/base and packages/*: AndroidManifest.xml).
_PLATFORM_SHARED_USER_PREFIX = "android.uid."
_PLATFORM_SHARED_USERS = frozenset({"android.media", "android.uid.system", "android.uid.phone", "android.uid.shell"})


def is_platform_shared_user(shared_user_id: str) -> bool:
    """Whether `shared_user_id` is one the system image holds (every android.uid.* and android.media)."""
    return shared_user_id in _PLATFORM_SHARED_USERS or shared_user_id.startswith(_PLATFORM_SHARED_USER_PREFIX)


def min_installable_target_sdk(device_sdk: int) -> int:
    """The lowest targetSdkVersion a device at `device_sdk` installs (0: no floor)."""
    for level, floor in _MIN_TARGET_SDK_BY_LEVEL:
        if device_sdk >= level:
            return floor
    return 0


@dataclass(frozen=True)
class DeviceProfile:
    """What the device is: its API level and the ABIs its CPU runs, preferred first."""

    sdk: int
    abis: tuple[str, ...]
    #: The system image's signer (the distribution's platform certificate), when the device was made with one.
    platform: Certificate | None = None


@dataclass(frozen=True)
class Candidate:
    """An offered APK as the verifier saw it at the device's SDK level (identity None when it did not verify)."""

    package: str
    version_code: int
    min_sdk: int
    target_sdk: int | None
    max_sdk: int | None
    native_abis: tuple[str, ...]
    debuggable: bool
    shared_user_id: str | None
    identity: SigningIdentity | None
    #: The verifier's error sentences when it did not verify.
    errors: tuple[str, ...] = ()
    #: The signature schemes that verified at the device's level (1, 2, 3, 31, 4).
    schemes: tuple[int, ...] = ()
    test_only: bool = False


@dataclass(frozen=True)
class InstalledPackage:
    """One installed package as recorded when it was accepted: the signing identity is what was verified then."""

    package: str
    version_code: int
    identity: SigningIdentity
    #: Package name of the store that installed the current version; None when the user installed it directly.
    installer: str | None
    installed_at: int
    updated_at: int
    debuggable: bool
    shared_user_id: str | None
    target_sdk: int | None


@dataclass(frozen=True)
class Decision:
    """A verdict: refusals are results with a code and a sentence, never exceptions."""

    package: str | None
    accepted: bool
    action: Action | None
    reason: str
    #: INSTALL, or decide_update's SAME_SIGNERS / ROTATION / ROLLBACK for an update, or the refusal's code.
    code: str

    def to_json(self) -> dict[str, object]:
        return {"package": self.package, "accepted": self.accepted, "action": self.action, "reason": self.reason}


def refuse(package: str | None, code: str, reason: str, action: Action | None = None) -> Decision:
    return Decision(package, False, action, reason, code)


def decide_install(
    device: DeviceProfile,
    candidate: Candidate,
    installed: InstalledPackage | None,
    shared_user_members: tuple[InstalledPackage, ...] = (),
    *,
    allow_downgrade: bool = False,
    allow_test: bool = False,
    caller: str | None = None,
) -> Decision:
    """Whether the device installs (or updates to) `candidate`.

    `shared_user_members` are the other installed packages that declare the candidate's sharedUserId. `caller` is
    the store asking (None: the shell, `adb install`); only the shell's `allow_downgrade` and `allow_test` count.
    """
    package = candidate.package
    action: Action = "install" if installed is None else "update"
    if candidate.min_sdk > device.sdk:
        return _older_sdk(device, candidate)
    if candidate.identity is None:
        detail = "; ".join(candidate.errors) or "it carries no valid signature"
        return refuse(package, "NOT_VERIFIED", f"{package}: the APK does not verify on this device: {detail}", action)
    scheme = _check_scheme_for_target(device, candidate)
    if scheme is not None:
        return scheme
    compatibility = _check_compatibility(device, candidate)
    if compatibility is not None:
        return compatibility
    if candidate.test_only and not (allow_test and caller is None):
        why = (
            f"{caller} is a store, and only the shell (adb install -t) may install a test-only app"
            if caller is not None
            else "the install did not allow test packages (adb install -t)"
        )
        return refuse(package, "TEST_ONLY", f'{package} is marked android:testOnly="true"; {why}', action)
    platform = _check_platform_shared_user(device, candidate)
    if platform is not None:
        return platform
    if installed is None:
        shared = _check_shared_user(candidate, shared_user_members)
        if shared is not None:
            return shared
        return Decision(
            package,
            True,
            "install",
            f"{package} {candidate.version_code} is not installed; it is installed and its signer "
            f"{_short(candidate.identity.signers)} is trusted from now on",
            "INSTALL",
        )
    update = decide_update(installed.identity, candidate.identity)
    if not update.accepted:
        return refuse(
            package,
            update.code,
            f"{package}: the update is signed by a different developer: installed "
            f"{_short(installed.identity.signers)}, offered {_short(candidate.identity.signers)} ({update.reason})",
            "update",
        )
    downgrade_granted = allow_downgrade and caller is None
    if candidate.version_code < installed.version_code and not (downgrade_granted and installed.debuggable):
        if not installed.debuggable:
            why = "downgrades are only allowed, on request, for a debuggable installed app"
        elif allow_downgrade:
            why = f"{caller} is a store, and only the shell (adb install -d) may request a downgrade"
        else:
            why = "a downgrade was not requested"
        return refuse(
            package,
            "VERSION_DOWNGRADE",
            f"{package}: versionCode {candidate.version_code} is lower than the installed {installed.version_code}; "
            f"{why}",
            "update",
        )
    if candidate.shared_user_id != installed.shared_user_id:
        return refuse(
            package,
            "SHARED_USER_CHANGED",
            f"{package}: the update moves the app from sharedUserId {installed.shared_user_id or '(none)'} to "
            f"{candidate.shared_user_id or '(none)'}, which Android refuses",
            "update",
        )
    shared = _check_shared_user(candidate, shared_user_members)
    if shared is not None:
        return shared
    return Decision(
        package,
        True,
        "update",
        f"{package} {installed.version_code} -> {candidate.version_code}: {update.reason}",
        update.code,
    )


def decide_uninstall(package: str, installed: InstalledPackage | None) -> Decision:
    """Uninstalling forgets the package, so a later install is a first install again."""
    if installed is None:
        return refuse(package, "NOT_INSTALLED", f"{package} is not installed")
    return Decision(package, True, None, f"{package} is uninstalled and its signer forgotten", "UNINSTALL")


def _older_sdk(device: DeviceProfile, candidate: Candidate) -> Decision:
    return refuse(
        candidate.package,
        "OLDER_SDK",
        f"{candidate.package} needs Android API level {candidate.min_sdk} (minSdkVersion); this device runs "
        f"{device.sdk}",
    )


def _target_sdk(candidate: Candidate) -> int:
    # apksig and PackageParser take minSdkVersion as the target when targetSdkVersion is absent.
    return candidate.target_sdk if candidate.target_sdk is not None else candidate.min_sdk


def _check_scheme_for_target(device: DeviceProfile, candidate: Candidate) -> Decision | None:
    target = _target_sdk(candidate)
    if device.sdk < _ANDROID_R or target < _ANDROID_R or _V2_OR_NEWER & set(candidate.schemes):
        return None
    return refuse(
        candidate.package,
        "NO_SIGNATURES_V2_REQUIRED",
        f"{candidate.package} targets API level {target} but carries only a v1 (JAR) signature; Android 11 and newer "
        f"need an APK Signature Scheme v2 or newer signature for apps targeting API level {_ANDROID_R} or above",
    )


def _check_platform_shared_user(device: DeviceProfile, candidate: Candidate) -> Decision | None:
    shared = candidate.shared_user_id
    if shared is None or not is_platform_shared_user(shared):
        return None
    assert candidate.identity is not None
    if device.platform is not None and candidate.identity.signers == (device.platform,):
        return None
    holder = (
        f"the system image's signer {_short((device.platform,))}"
        if device.platform is not None
        else "the system image (this device was made without a platform certificate)"
    )
    return refuse(
        candidate.package,
        "SHARED_USER_PLATFORM",
        f"{candidate.package} asks for the platform's sharedUserId {shared}, which only {holder} may hold; it is "
        f"signed by {_short(candidate.identity.signers)}",
    )


def _check_compatibility(device: DeviceProfile, candidate: Candidate) -> Decision | None:
    package = candidate.package
    if candidate.min_sdk > device.sdk:
        return _older_sdk(device, candidate)
    if candidate.max_sdk is not None and candidate.max_sdk < device.sdk:
        return refuse(
            package,
            "NEWER_SDK",
            f"{package} declares maxSdkVersion {candidate.max_sdk}; this device runs API level {device.sdk}",
        )
    floor = min_installable_target_sdk(device.sdk)
    target = _target_sdk(candidate)
    if target < floor:
        return refuse(
            package,
            "DEPRECATED_SDK_VERSION",
            f"{package} targets API level {target}; a device at API level {device.sdk} only installs apps that "
            f"target {floor} or newer",
        )
    if candidate.native_abis and not set(candidate.native_abis) & set(device.abis):
        return refuse(
            package,
            "NO_MATCHING_ABIS",
            f"{package} carries native code for {', '.join(candidate.native_abis)} only; this device runs "
            f"{', '.join(device.abis) or 'no native ABI'}",
        )
    return None


def _check_shared_user(candidate: Candidate, members: tuple[InstalledPackage, ...]) -> Decision | None:
    assert candidate.identity is not None
    for member in members:
        if member.package == candidate.package:
            continue
        if not shared_user_compatible(candidate.identity, member.identity):
            return refuse(
                candidate.package,
                "SHARED_USER_INCOMPATIBLE",
                f"{candidate.package} asks for sharedUserId {candidate.shared_user_id}, but {member.package} already "
                f"holds it signed by {_short(member.identity.signers)} and the offer is signed by "
                f"{_short(candidate.identity.signers)}",
            )
    return None


def shared_user_compatible(first: SigningIdentity, second: SigningIdentity) -> bool:
    """Packages may share a user ID when their signers match, or one's lineage grants the other SHARED_USER_ID."""
    if len(first.signers) == len(second.signers) and set(first.signers) == set(second.signers):
        return True
    if len(first.signers) != 1 or len(second.signers) != 1:
        return False
    return _grants(first, second.signers[0]) or _grants(second, first.signers[0])


def _grants(identity: SigningIdentity, older: Certificate) -> bool:
    return any(
        node.certificate == older and Capability.SHARED_USER_ID in node.capabilities for node in identity.past_nodes
    )


def _short(signers: tuple[Certificate, ...]) -> str:
    return ", ".join(f"{certificate.sha256[:4]}…" for certificate in signers)
