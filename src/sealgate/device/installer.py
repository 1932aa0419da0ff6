"""The gate: every install, update, uninstall and settings change on the device passes through `Device`.

Like python-tuf's TrustedMetadataSet, the gate admits nothing that fails a check. It does the I/O (verify the APK
with the one verifier, read and write the state database) and leaves every verdict to the pure functions of
`rules` (what the package manager accepts) and `stores` (who may ask, and whether the user must confirm). A
decision is read and written inside one database transaction, so two installers cannot interleave, a refusal
writes nothing, and a crash mid-install leaves the previous state. There is no flag that skips a rule: the user's
confirmation only answers the questions the store rules ask, it never overrides a package rule.

The offered APK is opened once: its bytes are copied into a private temporary file, and the verifier and the
manifest reader both read that copy, so what was verified is what the manifest facts describe even if someone
replaces or rewrites the file at the given path meanwhile (a time-of-check/time-of-use gap otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from sealgate.apk.certificate import Certificate
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
from sealgate.device.state import DATABASE_NAME, DeviceState, check_profile
from sealgate.device.stores import AllowedStore, check_package_name, decide_caller
from sealgate.device.updater import OtaSetup, discard_slots, prepare_ota
from sealgate.errors import ApkFormatError, DeviceError
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
        platform: Certificate | None = None,
        ota: OtaSetup | None = None,
    ) -> Device:
        """A new device; the allow-list and the system signer are part of the system image, so they are fixed here.

        `platform` is the distribution's platform certificate: only APKs signed by it may claim the platform's
        shared users (android.uid.system, ...). Without it the device refuses those shared users to everyone.
        `ota` makes it an A/B device that takes OS updates (`updater.Updater`): its factory images, installed
        build and trusted OTA certificates.
        """
        profile = DeviceProfile(sdk, tuple(abis), platform)
        if ota is None:
            return cls(DeviceState.create(directory, profile, stores))
        check_profile(profile)
        path = Path(directory)
        if (path / DATABASE_NAME).exists():
            raise DeviceError(f"{path} already holds a device ({DATABASE_NAME}); use another directory")
        ota_state = prepare_ota(path, ota)
        try:
            state = DeviceState.create(path, profile, stores, ota=ota_state, otacerts=ota.otacerts)
        except BaseException:
            discard_slots(path, ota_state)
            raise
        return cls(state)

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
        allow_test: bool = False,
    ) -> Decision:
        """What `install` would decide, without changing anything (and without taking the write lock)."""
        candidate = self.examine(apk)
        with self._state.read_transaction():
            return self._decide(candidate, as_store, confirm, allow_downgrade, allow_test)

    def install(
        self,
        apk: str | os.PathLike[str],
        *,
        as_store: str | None = None,
        confirm: bool = False,
        allow_downgrade: bool = False,
        allow_test: bool = False,
    ) -> Decision:
        """Install or update from `apk` on behalf of `as_store` (None: the user or the shell, `adb install`).

        `confirm` is the user's answer to a confirmation screen; pass True only when a person said yes.
        `allow_downgrade` and `allow_test` are `adb install -d` / `-t`: they count only without a store.
        """
        candidate = self.examine(apk)
        with self._state.transaction() as state:
            decision = self._decide(candidate, as_store, confirm, allow_downgrade, allow_test)
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
        with _private_copy(Path(apk)) as copy:
            report = verify_apk(copy, min_sdk=sdk, max_sdk=sdk)
            # Below API 26 the verifier does not need the manifest, but the rules still do: read the same copy.
            manifest = report.manifest if report.manifest is not None else _read_manifest(copy)
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
            errors=tuple(issue.message.replace(str(copy), os.fspath(apk)) for issue in report.errors),
            schemes=tuple(report.schemes) if report.verified else (),
            test_only=manifest.test_only,
        )

    def _decide(
        self, candidate: Candidate, as_store: str | None, confirm: bool, allow_downgrade: bool, allow_test: bool
    ) -> Decision:
        state = self._state
        installed = state.get(candidate.package)
        members = state.shared_user_members(candidate.shared_user_id) if candidate.shared_user_id else ()
        decision = decide_install(
            self.profile,
            candidate,
            installed,
            members,
            allow_downgrade=allow_downgrade,
            allow_test=allow_test,
            caller=as_store,
        )
        if not decision.accepted:
            return decision
        caller_record = state.get(as_store) if as_store is not None else None
        installer_of_record = installed.installer if installed is not None else None
        refusal = decide_caller(as_store, caller_record, state.stores(), decision, installer_of_record, confirm=confirm)
        return refusal if refusal is not None else decision


def _read_manifest(path: Path) -> AndroidManifest:
    with ZipArchive.open(path) as archive:
        return read_manifest(archive)


@contextlib.contextmanager
def _private_copy(path: Path) -> Iterator[Path]:
    """The APK's bytes, read once from `path`, in a file only this process can write (see the module docstring)."""
    try:
        # O_NONBLOCK: a FIFO must not block the open; the regular-file check below refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ApkFormatError(f"cannot open {os.fspath(path)!r}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ApkFormatError(f"{os.fspath(path)!r} is not a regular file")
        with tempfile.TemporaryDirectory(prefix="sealgate-device-") as private:
            copy = Path(private) / "offered.apk"
            with open(copy, "xb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            os.chmod(copy, 0o400)
            yield copy
