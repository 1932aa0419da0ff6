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
  native code for at least one of the device's ABIs (INSTALL_FAILED_NO_MATCHING_ABIS).
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
) -> Decision:
    """Whether the device installs (or updates to) `candidate`.

    `shared_user_members` are the other installed packages that declare the candidate's sharedUserId.
    """
    package = candidate.package
    action: Action = "install" if installed is None else "update"
    if candidate.identity is None:
        detail = "; ".join(candidate.errors) or "it carries no valid signature"
        return refuse(package, "NOT_VERIFIED", f"{package}: the APK does not verify on this device: {detail}", action)
    compatibility = _check_compatibility(device, candidate)
    if compatibility is not None:
        return compatibility
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
    if candidate.version_code < installed.version_code and not (allow_downgrade and installed.debuggable):
        why = (
            "downgrades are only allowed, on request, for a debuggable installed app"
            if not installed.debuggable
            else "a downgrade was not requested"
        )
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


def _check_compatibility(device: DeviceProfile, candidate: Candidate) -> Decision | None:
    package = candidate.package
    if candidate.min_sdk > device.sdk:
        return refuse(
            package,
            "OLDER_SDK",
            f"{package} needs Android API level {candidate.min_sdk} (minSdkVersion); this device runs {device.sdk}",
        )
    if candidate.max_sdk is not None and candidate.max_sdk < device.sdk:
        return refuse(
            package,
            "NEWER_SDK",
            f"{package} declares maxSdkVersion {candidate.max_sdk}; this device runs API level {device.sdk}",
        )
    floor = min_installable_target_sdk(device.sdk)
    # apksig and PackageParser take minSdkVersion as the target when targetSdkVersion is absent.
    target = candidate.target_sdk if candidate.target_sdk is not None else candidate.min_sdk
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
