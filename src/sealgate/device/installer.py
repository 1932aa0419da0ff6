"""The gate: every install, update, uninstall and settings change on the device passes through `Device`.

Like python-tuf's TrustedMetadataSet, the gate admits nothing that fails a check. It does the I/O (verify the APK
with the one verifier, read and write the state database) and leaves every verdict to the pure functions of
`rules` (what the package manager accepts) and `stores` (who may ask, and whether the user must confirm). A
decision is read and written inside one database transaction, so two installers cannot interleave, a refusal
writes nothing, and a crash mid-install leaves the previous state. There is no flag that skips a rule: the user's
confirmation only answers the questions the store rules ask, it never overrides a package rule.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

from sealgate.apk.manifest import AndroidManifest, read_manifest
from sealgate.apk.verifier import verify_apk
from sealgate.device.rules import (
    Candidate,
    Decision,
    DeviceProfile,
    InstalledPackage,
    decide_install,
    decide_uninstall,
    refuse,
)
from sealgate.device.state import DeviceState
from sealgate.device.stores import AllowedStore, check_package_name, decide_caller
from sealgate.errors import DeviceError
from sealgate.ziparchive import ZipArchive


class Device:
    """A simulated phone: its profile, its installed packages and its privileged installer's allow-list."""

    def __init__(self, state: DeviceState) -> None:
        self._state = state
        self.profile = state.profile()

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        *,
        sdk: int,
        abis: tuple[str, ...],
        stores: tuple[AllowedStore, ...] = (),
    ) -> Device:
        """A new device; the allow-list is part of the system image, so it is fixed here."""
        if not abis:
            raise DeviceError("a device needs at least one ABI (for example arm64-v8a)")
        return cls(DeviceState.create(directory, DeviceProfile(sdk, tuple(abis)), stores))

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Device:
        return cls(DeviceState.open(directory))

    def close(self) -> None:
        self._state.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- reads ---

    def packages(self) -> list[InstalledPackage]:
        return self._state.packages()

    def get(self, package: str) -> InstalledPackage | None:
        return self._state.get(package)

    def stores(self) -> tuple[AllowedStore, ...]:
        return self._state.stores()

    def dump(self) -> list[str]:
        return self._state.dump()

    # --- the gate ---

    def check(
        self,
        apk: str | os.PathLike[str],
        *,
        as_store: str | None = None,
        confirm: bool = False,
        allow_downgrade: bool = False,
    ) -> Decision:
        """What `install` would decide, without changing anything."""
        candidate = self.examine(apk)
        with self._state.transaction():
            return self._decide(candidate, as_store, confirm, allow_downgrade)

    def install(
        self,
        apk: str | os.PathLike[str],
        *,
        as_store: str | None = None,
        confirm: bool = False,
        allow_downgrade: bool = False,
    ) -> Decision:
        """Install or update from `apk` on behalf of `as_store` (None: the user, through the system installer).

        `confirm` is the user's answer to a confirmation screen; pass True only when a person said yes.
        """
        candidate = self.examine(apk)
        with self._state.transaction() as state:
            decision = self._decide(candidate, as_store, confirm, allow_downgrade)
            if decision.accepted:
                assert candidate.identity is not None
                previous = state.get(candidate.package)
                now = int(time.time())
                state.put(
                    InstalledPackage(
                        package=candidate.package,
                        version_code=candidate.version_code,
                        identity=candidate.identity,
                        installer=as_store,
                        installed_at=previous.installed_at if previous is not None else now,
                        updated_at=now,
                        debuggable=candidate.debuggable,
                        shared_user_id=candidate.shared_user_id,
                        target_sdk=candidate.target_sdk,
                    )
                )
        return decision

    def uninstall(self, package: str) -> Decision:
        with self._state.transaction() as state:
            decision = decide_uninstall(package, state.get(package))
            if decision.accepted:
                state.delete(package)
        return decision

    def set_auto_update(self, store: str, enabled: bool, *, confirm: bool) -> Decision:
        """The user's per-store automatic-update switch; turning it on needs the user (`confirm`), off never does."""
        check_package_name(store)
        with self._state.transaction() as state:
            if not any(entry.package == store for entry in state.stores()):
                return refuse(store, "CALLER_NOT_ALLOWED", f"{store} is not on the privileged installer's allow-list")
            if enabled and not confirm:
                return refuse(
                    store,
                    "SETTING_NEEDS_CONFIRMATION",
                    f"only the user turns on automatic updates for {store}; it stays off until the user confirms",
                )
            state.set_auto_update(store, enabled)
        return Decision(store, True, None, f"automatic updates by {store} are {'on' if enabled else 'off'}", "SETTING")

    # --- I/O around the pure rules ---

    def examine(self, apk: str | os.PathLike[str]) -> Candidate:
        """Verify `apk` at the device's API level and gather the manifest facts the rules need."""
        sdk = self.profile.sdk
        report = verify_apk(apk, min_sdk=sdk, max_sdk=sdk)
        manifest = report.manifest if report.manifest is not None else _read_manifest(Path(apk))
        identity = report.identity_at(sdk) if report.verified else None
        return Candidate(
            package=manifest.package,
            version_code=manifest.version_code,
            min_sdk=manifest.min_sdk,
            target_sdk=manifest.target_sdk,
            max_sdk=manifest.max_sdk,
            native_abis=manifest.native_abis,
            debuggable=manifest.debuggable,
            shared_user_id=manifest.shared_user_id,
            identity=identity,
            errors=tuple(issue.message for issue in report.errors),
        )

    def _decide(self, candidate: Candidate, as_store: str | None, confirm: bool, allow_downgrade: bool) -> Decision:
        state = self._state
        installed = state.get(candidate.package)
        members = state.shared_user_members(candidate.shared_user_id) if candidate.shared_user_id else ()
        decision = decide_install(self.profile, candidate, installed, members, allow_downgrade=allow_downgrade)
        if not decision.accepted:
            return decision
        caller_record = state.get(as_store) if as_store is not None else None
        installer_of_record = installed.installer if installed is not None else None
        refusal = decide_caller(as_store, caller_record, state.stores(), decision, installer_of_record, confirm=confirm)
        return refusal if refusal is not None else decision


def _read_manifest(path: Path) -> AndroidManifest:
    """Below API 26 the verifier does not need the manifest, but the installer rules still do."""
    with ZipArchive.open(path) as archive:
        return read_manifest(archive)
