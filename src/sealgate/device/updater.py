"""The OS updater's gate: every OTA check, download, apply and boot of the simulated A/B device passes through here.

Like the app installer's gate (`installer.Device`), it does the I/O and leaves every verdict to the pure functions
of `ota_rules`. Applying a package follows update_engine's order (system/update_engine, update_attempter_android.cc
and payload_consumer/delta_performer.cc, driven by recovery's install.cpp for a sideload):

1. the whole-file signature is verified against the certificates the device's system image trusts (its otacerts,
   recorded at `device init` as /system/etc/security/otacerts.zip; `ota.whole_file.verify_package`, recovery's
   verify_file);
2. the package's metadata decides whether it is meant for this device and is not a downgrade (`decide_package`);
3. the payload is applied straight out of the zip (payload.bin's STORED bytes, payload_properties.txt as the
   headers, whose POWERWASH=1 wipes user data as update_engine's does) into a fresh staging directory, with the
   otacerts' public keys as the payload keys (DeltaPerformer::CreatePayloadVerifier reads the same otacerts.zip,
   constants::kUpdateCertificatesPath), the running slot as the source of an incremental, and every hash checked
   by `ota.payload.apply.apply_payload`; partitions the payload does not touch are copied from the running slot;
4. one database commit makes that directory the inactive slot, active and "unbooted".

Any refusal before the commit removes the staging directory and writes nothing: both slots' files and the database
are as they were. A package named on the command line is first copied into the device's private work area and
everything reads that copy, so what was verified is what gets applied (recovery reads the package once, too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sealgate.apk.certificate import Certificate
from sealgate.avb.vbmeta import read_vbmeta
from sealgate.device import slots
from sealgate.device.download import DownloadResult, download, fetch_bytes, resolve
from sealgate.device.ota_rules import (
    DEFAULT_BOOT_TRIES,
    SLOTS,
    BootOutcome,
    BuildInfo,
    OfferedBuild,
    OfferedFile,
    OtaDecision,
    OtaState,
    Slot,
    SlotStatus,
    UpdateOffer,
    applied_state,
    check_payload_timestamp,
    choose_update,
    decide_boot,
    decide_package,
    is_security_patch_level,
    refuse,
)
from sealgate.device.state import DeviceState
from sealgate.durable import replace_file
from sealgate.errors import DeviceError, FormatError, SealgateError, UsageError
from sealgate.ota.channel import read_channel
from sealgate.ota.metadata import read_package_metadata
from sealgate.ota.package import entry_data_range
from sealgate.ota.payload.apply import apply_payload
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.whole_file import TrustedKey, trusted_key, verify_package
from sealgate.ziparchive import ZipArchive

DOWNLOADS = "downloads"
WORK = "ota-work"
#: The download `apply` takes when no package is named.
PENDING = "update.json"
PAYLOAD = "payload.bin"
PAYLOAD_PROPERTIES = "payload_properties.txt"
#: libboot_control keeps tries_remaining in 3 bits.
BOOT_TRIES_RANGE = (1, 7)
_MAX_CHANNEL = 4 * 1024 * 1024
_MAX_PROPERTIES = 64 * 1024
#: The payload_properties.txt lines that describe payload.bin (brillo_update_payload's properties).
_MAX_VBMETA = 1024 * 1024
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DOWNLOADED_NAME = re.compile(r"^[0-9a-f]{64}\.zip$")


@dataclass(frozen=True)
class OtaSetup:
    """The OS side of a new device: its name, the factory images flashed into slot a, and what it trusts."""

    device_name: str
    build: BuildInfo
    images: Path
    otacerts: tuple[Certificate, ...]
    boot_tries: int = DEFAULT_BOOT_TRIES
    #: The AVB rollback index the device stores; None: the factory build's vbmeta rollback index (or 0).
    rollback_index: int | None = None
    channel: str | None = None


def prepare_ota(directory: Path, setup: OtaSetup) -> OtaState:
    """Check `setup`, flash its images into a new slot-a directory, and return the state to record with it.

    The caller records the state in the new database; if that fails it removes the slot (`discard_slots`).
    """
    if not _DEVICE_NAME.match(setup.device_name):
        raise DeviceError(f"{setup.device_name!r} is not a device name (ro.product.device, like 'oriole')")
    build = setup.build
    if build.device != setup.device_name:
        raise DeviceError("the installed build must be for the device itself")
    if not build.fingerprint or build.timestamp <= 0:
        raise DeviceError("the installed build needs a fingerprint and a positive build timestamp (ro.build.date.utc)")
    if not is_security_patch_level(build.security_patch_level):
        raise DeviceError(f"security patch level {build.security_patch_level!r} must be YYYY-MM-DD")
    low, high = BOOT_TRIES_RANGE
    if not low <= setup.boot_tries <= high:
        raise DeviceError(f"boot tries must lie in {low}..{high} (the bootloader keeps them in 3 bits)")
    if not setup.otacerts:
        raise DeviceError("a device that takes OTA updates needs at least one trusted OTA certificate (otacerts)")
    trusted_keys(setup.otacerts)  # refuse now a certificate recovery would not load
    if setup.rollback_index is not None and setup.rollback_index < 0:
        raise DeviceError("the rollback index cannot be negative")
    name = slots.flash(directory, setup.images, SLOTS[0])
    try:
        index = vbmeta_rollback_index(slots.slot_path(directory, name))
        build = dataclasses.replace(build, rollback_index=index)
        stored = setup.rollback_index if setup.rollback_index is not None else (index or 0)
    except BaseException:
        slots.discard(slots.slot_path(directory, name))
        raise
    first = Slot(SLOTS[0], name, SlotStatus.SUCCESSFUL, build)
    empty = Slot(SLOTS[1], None, SlotStatus.EMPTY, None)
    return OtaState(setup.device_name, SLOTS[0], SLOTS[0], stored, setup.boot_tries, (first, empty), setup.channel)


def discard_slots(directory: Path, state: OtaState) -> None:
    for slot in state.slots:
        if slot.directory is not None:
            slots.discard(slots.slot_path(directory, slot.directory))


def trusted_keys(certificates: Sequence[Certificate]) -> list[TrustedKey]:
    keys = []
    for index, certificate in enumerate(certificates):
        try:
            keys.append(trusted_key(certificate, f"otacerts certificate {index + 1} ({certificate.subject})"))
        except UsageError as exc:
            raise DeviceError(str(exc)) from exc
    return keys


def vbmeta_rollback_index(slot_directory: Path) -> int | None:
    """The rollback index in the slot's vbmeta.img (external/avb's header); None when the slot has no vbmeta."""
    path = slot_directory / "vbmeta.img"
    if not path.is_file():
        return None
    with open(path, "rb") as reader:
        data = reader.read(_MAX_VBMETA)
    try:
        return read_vbmeta(data).rollback_index
    except SealgateError as exc:
        raise DeviceError(f"the slot's vbmeta.img is not a vbmeta image: {exc}") from exc


class Updater:
    """The OS updater of one device directory (made with `device init --device-name ...`)."""

    def __init__(self, state: DeviceState) -> None:
        self._state = state
        self.directory = state.directory
        if state.ota_state() is None:
            state.close()
            raise DeviceError(
                f"{self.directory} was made without OS update state; make a device with `device init "
                "--device-name NAME --build-fingerprint FP ...` to try OTA updates"
            )

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Updater:
        return cls(DeviceState.open(directory))

    def close(self) -> None:
        self._state.close()

    def __enter__(self) -> Updater:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- reads ---

    def status(self) -> OtaState:
        state = self._state.ota_state()
        assert state is not None  # checked at open; nothing removes it
        return state

    def slot_directory(self, slot: str) -> Path | None:
        directory = self.status().slot(slot).directory
        return slots.slot_path(self.directory, directory) if directory is not None else None

    def dump(self) -> list[str]:
        return self._state.dump()

    # --- check and download ---

    def check(self, channel: str | None = None) -> UpdateOffer:
        """What the channel offers this device; FetchError or FormatError when the channel cannot be read."""
        source = self._channel_source(channel)
        builds = read_channel_builds(fetch_bytes(source, max_size=_MAX_CHANNEL))
        offer = choose_update(self.status(), builds)
        if offer.file is not None:
            offer = dataclasses.replace(offer, file=_Resolved.of(offer.file, resolve(source, offer.file.url)))
        return offer

    def download(self, channel: str | None = None) -> tuple[UpdateOffer, DownloadResult | None]:
        """Fetch what `check` offers into the device's downloads, resuming a partial file; None when nothing to do."""
        offer = self.check(channel)
        if offer.file is None or offer.build is None:
            return offer, None
        target = self.directory / DOWNLOADS
        result = download(offer.file.url, target, size=offer.file.size, sha256=offer.file.sha256)
        if result.ok and result.path is not None:
            record = {
                "file": result.path.name,
                "url": offer.file.url,
                "size": offer.file.size,
                "sha256": offer.file.sha256.lower(),
                "kind": offer.kind,
                "fingerprint": offer.build.fingerprint,
            }
            replace_file(target / PENDING, json.dumps(record, sort_keys=True).encode())
        return offer, result

    def _channel_source(self, channel: str | None) -> str:
        source = channel or self.status().channel
        if not source:
            raise DeviceError("no channel: give --channel URL_OR_FILE (or make the device with --channel)")
        return source

    # --- apply ---

    def apply(self, package: str | os.PathLike[str] | None = None) -> OtaDecision:
        """Verify, decide and apply an OTA package to the inactive slot (the last download when `package` is None)."""
        state = self.status()
        certificates = self._state.otacerts()
        keys = trusted_keys(certificates)
        with self._package(package) as path:
            verification = verify_package(path, keys)
            if not verification.verified:
                problems = "; ".join(issue.message for issue in verification.errors) or "it is not signed"
                why = f"the package's signature does not verify with the device's otacerts: {problems}"
                return refuse("NOT_VERIFIED", why)
            try:
                metadata = read_package_metadata(path)
            except FormatError as exc:
                return refuse("MALFORMED_PACKAGE", f"the package's metadata cannot be read: {exc}")
            decision = decide_package(state, metadata)
            if not decision.accepted:
                return decision
            return self._install(path, state, decision, [c.public_key() for c in certificates])

    def _install(
        self, package: Path, state: OtaState, decision: OtaDecision, public_keys: list[PublicKeyTypes]
    ) -> OtaDecision:
        try:
            return self._write_slot(package, state, decision, public_keys)
        except OSError as exc:  # a full disk, a vanished directory: the update is not applied, and nothing changed
            raise DeviceError(f"cannot write the update into {self.directory}: {exc.strerror or exc}") from exc

    def _write_slot(
        self, package: Path, state: OtaState, decision: OtaDecision, public_keys: list[PublicKeyTypes]
    ) -> OtaDecision:
        source = slots.slot_path(self.directory, str(state.current.directory))
        staging = slots.new_staging(self.directory)
        promoted: Path | None = None
        try:
            try:
                offset, size = entry_data_range(package, PAYLOAD)
                properties = _payload_properties(package)
                applied = apply_payload(
                    package,
                    staging,
                    public_keys=public_keys,
                    source_dir=source,
                    offset=offset,
                    size=size,
                    properties=properties,
                )
            except FormatError as exc:
                return refuse("PAYLOAD_REFUSED", f"the payload was not applied: {exc}", decision.build)
            too_old = check_payload_timestamp(state, applied.max_timestamp, decision.build)
            if too_old is not None:  # checked once the payload's signature holds; the staging copy is discarded
                return too_old
            if properties.header("POWERWASH") == "1" and not decision.wipe:  # update_engine wipes on POWERWASH=1
                decision = dataclasses.replace(decision, wipe=True, reason=f"{decision.reason}; user data is wiped")
            slots.complete_from(staging, source)
            try:
                index = vbmeta_rollback_index(staging)
            except DeviceError as exc:
                return refuse("PAYLOAD_REFUSED", str(exc), decision.build)
            assert decision.build is not None
            decision = dataclasses.replace(decision, build=dataclasses.replace(decision.build, rollback_index=index))
            name = slots.promote(staging, state.inactive.name)
            promoted = slots.slot_path(self.directory, name)
            with self._state.transaction() as writer:
                if writer.ota_state() != state:
                    return refuse("CONCURRENT_CHANGE", "the device changed while the update was applied; try again")
                writer.put_ota_state(applied_state(state, name, decision))
            promoted = None  # it is the slot now
        finally:
            slots.discard(staging)
            if promoted is not None:
                slots.discard(promoted)
        if state.inactive.directory is not None:
            slots.discard(slots.slot_path(self.directory, state.inactive.directory))
        return dataclasses.replace(
            decision,
            reason=f"{decision.reason}; written to slot {state.inactive.name}, which boots next (unbooted)",
        )

    @contextlib.contextmanager
    def _package(self, package: str | os.PathLike[str] | None) -> Iterator[Path]:
        if package is None:
            yield self._downloaded()
            return
        work = self.directory / WORK
        try:
            work.mkdir(exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot make the device's work directory {work}: {exc.strerror}") from exc
        try:
            with _private_copy(Path(package), work) as copy:
                yield copy
        except OSError as exc:
            raise DeviceError(f"cannot copy the package into {work}: {exc.strerror or exc}") from exc

    def _downloaded(self) -> Path:
        record_path = self.directory / DOWNLOADS / PENDING
        try:
            record = json.loads(record_path.read_bytes())
            name = str(record["file"])
            if not _DOWNLOADED_NAME.match(name):
                raise ValueError(name)
            path = self.directory / DOWNLOADS / name
        except (OSError, ValueError, KeyError, TypeError):
            raise DeviceError(
                "no downloaded update to apply: run `device ota download` first, or name the package"
            ) from None
        if not path.is_file() or path.stat().st_size != record.get("size"):
            raise DeviceError(f"the downloaded update {path.name} is missing or incomplete; download it again")
        return path

    # --- boot ---

    def boot(self, *, fail: bool = False) -> BootOutcome:
        """One boot of the device: an updated slot is tried, marked successful, or given up for the old one."""
        with self._state.transaction() as writer:
            state = writer.ota_state()
            assert state is not None
            outcome = decide_boot(state, fail=fail)
            if outcome.state != state:
                writer.put_ota_state(outcome.state)
            if outcome.wiped:
                writer.wipe_user_data()
        return outcome


# --- the format layers this gate uses (ota.channel, ota.metadata, ota.package, ota.payload) ---


def read_channel_builds(data: bytes) -> list[OfferedBuild]:
    return list(read_channel(data).builds)


def _payload_properties(package: Path) -> PayloadProperties:
    """payload_properties.txt as update_engine takes it (its --headers): the payload's hashes and sizes, and the
    install options releasetools may add (POWERWASH=1 for a wiping package), kept in `headers`."""
    try:
        with ZipArchive.open(package) as archive:
            entry = archive.entry(PAYLOAD_PROPERTIES)
            if entry is None:
                raise FormatError(f"the package has no {PAYLOAD_PROPERTIES}")
            text = archive.read(entry, max_size=_MAX_PROPERTIES).decode("ascii", errors="strict")
    except UnicodeDecodeError:
        raise FormatError(f"{PAYLOAD_PROPERTIES} is not ASCII text") from None
    return PayloadProperties.parse(text)


@dataclass(frozen=True)
class _Resolved:
    """A channel's file entry with its URL resolved against where the channel came from."""

    url: str
    size: int
    sha256: str
    pre_build: str | None

    @classmethod
    def of(cls, offered: OfferedFile, url: str) -> _Resolved:
        return cls(url, offered.size, offered.sha256, offered.pre_build)


@contextlib.contextmanager
def _private_copy(path: Path, work: Path) -> Iterator[Path]:
    """The package's bytes, read once from `path`, in a file only the device writes (see the module docstring)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DeviceError(f"cannot open the package {os.fspath(path)!r}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DeviceError(f"{os.fspath(path)!r} is not a regular file")
        with tempfile.TemporaryDirectory(prefix="package-", dir=work) as private:
            copy = Path(private) / "update.zip"
            with open(copy, "xb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
            os.chmod(copy, 0o400)
            yield copy
