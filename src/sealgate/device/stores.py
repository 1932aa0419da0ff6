"""Who may install: the privileged installer's allow-list and the two store modes, as pure decisions.

The privileged installer installs and updates without the system's confirmation screen, for allow-listed callers
only. An allow-list entry is (package name, SHA-256 over the caller's signing certificates), defined exactly as
F-Droid Privileged Extension's AccessProtectionHelper/ClientWhitelist do it: the SHA-256 of the concatenated DER
bytes of `PackageInfo.signatures` as PackageManager reports them for GET_SIGNATURES, that is every signer
certificate in the APK's order, or, for an app that rotated its key (a lineage), only the oldest certificate of the
lineage (PackageManager reports the original signer there for compatibility). So for the usual single-signer store
the entry is simply the certificate's SHA-256 that `keytool -printcert` or `apksigner verify --print-certs` shows,
and an entry survives the store's key rotation. The caller's certificates come from the device's own record of
the caller as installed, never from anything the caller presents: a look-alike with the right package name and
another signer does not match.

Store modes:

* ``privileged`` (F-Droid with Privileged Extension): installs what the user picked in the store without a system
  prompt; updates silently only when the user turned this store's automatic updates on (off by default),
  otherwise only when the user confirms.
* ``user-confirmed`` (Aurora Store with Aurora Services): every new install needs the user's confirmation; it
  updates apps it installed without a per-app prompt only when the user allowed automatic updates for it.

For both, updating an app whose installer of record is someone else is a take-over that needs the user's
confirmation. The user's confirmation is always an explicit input (`confirm=True`), never assumed, and nothing
here can loosen the package rules: a store decides who may ask, the package rules decide what is accepted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from sealgate.apk.certificate import Certificate
from sealgate.apk.update_rules import SigningIdentity
from sealgate.device.rules import Action, Decision, InstalledPackage, refuse
from sealgate.errors import DeviceError

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_PACKAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")


class StoreMode(StrEnum):
    PRIVILEGED = "privileged"
    USER_CONFIRMED = "user-confirmed"


def signing_certificates_digest(identity: SigningIdentity) -> str:
    """F-Droid Privileged Extension's caller digest (see the module docstring), lowercase hex."""
    certificates: tuple[Certificate, ...] = identity.signers
    if identity.lineage is not None and len(identity.lineage.nodes) > 1:
        certificates = (identity.lineage.nodes[0].certificate,)
    return hashlib.sha256(b"".join(certificate.der for certificate in certificates)).hexdigest()


def check_package_name(package: str) -> str:
    if not _PACKAGE_NAME.match(package):
        raise DeviceError(f"{package!r} is not an Android package name (like org.fdroid.fdroid)")
    return package


@dataclass(frozen=True)
class AllowedStore:
    """One allow-list entry, the mode the device grants it, and the user's automatic-update setting for it."""

    package: str
    cert_sha256: str
    mode: StoreMode
    auto_update: bool = False

    def __post_init__(self) -> None:
        check_package_name(self.package)
        if not _SHA256_HEX.match(self.cert_sha256):
            raise DeviceError(
                f"the allow-list digest for {self.package} must be 64 lowercase hex digits (SHA-256 of the signing "
                f"certificates), got {self.cert_sha256!r}"
            )

    @classmethod
    def parse(cls, text: str) -> AllowedStore:
        """`PACKAGE=SHA256[:MODE]`, the command line's spelling of an entry (mode defaults to privileged)."""
        package, sep, rest = text.partition("=")
        digest, colon, mode = rest.rpartition(":")
        if not colon or re.fullmatch(r"[0-9A-Fa-f]{2}", mode):  # no mode, or the last byte of a colon-separated digest
            digest, mode = rest, ""
        if not sep:
            raise DeviceError(f"store entry {text!r} must look like PACKAGE=SHA256[:privileged|user-confirmed]")
        try:
            store_mode = StoreMode(mode or StoreMode.PRIVILEGED.value)
        except ValueError:
            raise DeviceError(f"store mode {mode!r} must be privileged or user-confirmed") from None
        return cls(package.strip(), digest.strip().lower().replace(":", ""), store_mode)


def decide_caller(
    caller: str | None,
    caller_record: InstalledPackage | None,
    allow_list: tuple[AllowedStore, ...],
    package_decision: Decision,
    installer_of_record: str | None,
    *,
    confirm: bool,
) -> Decision | None:
    """None when `caller` may carry out the accepted `package_decision`; otherwise the refusal.

    `caller` None is the user installing a file through the system installer: that screen is itself the user's
    confirmation, and the user may update any app.
    """
    package = package_decision.package
    action: Action | None = package_decision.action
    if caller is None:
        return None
    if caller_record is None:
        return refuse(package, "CALLER_NOT_INSTALLED", f"{caller} is not installed on this device", action)
    entries = [entry for entry in allow_list if entry.package == caller]
    if not entries:
        return refuse(
            package, "CALLER_NOT_ALLOWED", f"{caller} is not on the privileged installer's allow-list", action
        )
    digest = signing_certificates_digest(caller_record.identity)
    matching = [entry for entry in entries if entry.cert_sha256 == digest]
    if not matching:
        return refuse(
            package,
            "CALLER_SIGNER_MISMATCH",
            f"{caller} is signed by {digest[:4]}…, not by the certificate its allow-list entry names "
            f"({', '.join(entry.cert_sha256[:4] + '…' for entry in entries)}); a look-alike is refused",
            action,
        )
    store = matching[0]
    if action == "update" and installer_of_record != caller:
        if not confirm:
            owner = installer_of_record or "the user"
            return refuse(
                package,
                "TAKEOVER_NEEDS_CONFIRMATION",
                f"{package} was installed by {owner}; {caller} may take over its updates only when the user confirms",
                action,
            )
        return None
    if action == "install":
        if store.mode is StoreMode.USER_CONFIRMED and not confirm:
            return refuse(
                package,
                "INSTALL_NEEDS_CONFIRMATION",
                f"{caller} installs new apps only when the user confirms each one",
                action,
            )
        return None
    if not confirm and not store.auto_update:
        return refuse(
            package,
            "AUTO_UPDATE_OFF",
            f"automatic updates by {caller} are off (the default); the user must turn them on or confirm this update",
            action,
        )
    return None
