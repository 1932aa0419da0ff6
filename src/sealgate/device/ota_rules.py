"""The OS updater's decisions as pure functions: which OTA to fetch, whether a package may be applied, what a boot does.

Nothing here reads files, the network or the database: the gate (`updater.Updater`) gathers the facts (the device's
OTA state, a channel, a verified package's metadata) and writes only what an accepted decision says. The rules are
Android's, read from AOSP:

* bootable/recovery install/install.cpp, CheckPackageMetadata and CheckAbSpecificMetadata: the package must be an
  A/B package (ota-type=AB); pre-device must name this device; a pre-build-incremental, when present, must equal the
  installed build's incremental and a pre-build fingerprint, when present, the installed fingerprint (the package is
  an incremental for exactly that build); a post-timestamp that is missing or older than the installed build's
  (ro.build.date.utc) is a downgrade, refused unless the package says ota-downgrade=yes, and even then only for an
  incremental package (a pre-build must be set: a downgradable full OTA would take any build back). The same
  timestamp is accepted: a full OTA may reinstall the running version.
* bootable/recovery install/spl_check.cpp, ViolatesSPLDowngrade: a post-security-patch-level older than the
  installed one (compared as YYYY-MM-DD strings) is refused unless the package allows it (spl-downgrade or
  downgrade). update_engine's DeltaPerformer::CheckSPLDowngrade goes further on a locked bootloader; on an unlocked
  one it forces a data wipe.
* build/make/tools/releasetools ota_from_target_files: a downgrade package is always a wiping one ("Cannot downgrade
  without a data wipe"). This device therefore allows a timestamp or security-patch downgrade only when the package
  says both ota-downgrade and ota-wipe, and then wipes user data at the first boot of the new slot.
* update_engine (payload_consumer/delta_performer.cc, ValidateManifest): a full payload whose manifest
  max_timestamp is older than the running build's ro.build.date.utc is refused (kPayloadTimestampError) before
  anything is written; releasetools sets max_timestamp to the target's build time, or the source's for a downgrade,
  so genuine packages pass. It is signed with the payload, so it holds even if the package metadata were wrong.
* update_engine (update_attempter_android.cc): an update that was applied and waits for its reboot refuses another
  one until the device reboots.
* Boot: boot_control's slot metadata (hardware/interfaces/boot/1.1, libboot_control's default of 7 tries): the
  updated slot becomes active "unbooted" with a number of tries; each failed boot costs a try, and with none left
  the bootloader marks it unbootable and falls back to the old slot. external/avb (README, "Updating Stored Rollback
  Indexes"): a slot whose vbmeta rollback index is below the stored one does not boot, and the stored index is
  raised only once the slot is marked successful, so a bad update can still roll back to the old slot.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol

SLOTS = ("a", "b")
#: libboot_control's default number of boot attempts a freshly updated slot gets.
DEFAULT_BOOT_TRIES = 7
_SPL = re.compile(r"^\d{4}-\d{2}-\d{2}$")

UpdateKind = Literal["full", "incremental"]


def is_security_patch_level(text: str) -> bool:
    """YYYY-MM-DD, the only form in which two levels compare correctly as strings (as recovery compares them)."""
    return bool(_SPL.match(text))


def incremental_of(fingerprint: str) -> str:
    """The build's incremental version from its fingerprint (brand/product/device:release/id/INCREMENTAL:type/tags)."""
    parts = fingerprint.split(":")
    if len(parts) >= 2:
        pieces = parts[1].split("/")
        if len(pieces) >= 3:
            return pieces[2]
    return ""


@dataclass(frozen=True)
class BuildInfo:
    """An OS build as the device records it (ro.build.fingerprint, .version.incremental, .date.utc, ...)."""

    fingerprint: str
    incremental: str
    timestamp: int
    security_patch_level: str
    device: str
    #: The build's vbmeta rollback index, when it could be read; None: the build does not move the stored index.
    rollback_index: int | None = None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, object]) -> BuildInfo:
        rollback = document.get("rollback_index")
        return cls(
            fingerprint=str(document["fingerprint"]),
            incremental=str(document["incremental"]),
            timestamp=int(str(document["timestamp"])),
            security_patch_level=str(document["security_patch_level"]),
            device=str(document["device"]),
            rollback_index=int(str(rollback)) if rollback is not None else None,
        )


class SlotStatus(Enum):
    EMPTY = "empty"
    UNBOOTED = "unbooted"
    SUCCESSFUL = "successful"
    UNBOOTABLE = "unbootable"


@dataclass(frozen=True)
class Slot:
    """One A/B slot: where its images are (a directory name under the device's slots/), what build they are."""

    name: str
    directory: str | None
    status: SlotStatus
    build: BuildInfo | None
    tries_remaining: int = 0
    #: The package that made this slot asked for a data wipe; it happens at the slot's first boot.
    wipe_pending: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "slot": self.name,
            "status": self.status.value,
            "build": self.build.to_json() if self.build is not None else None,
            "tries_remaining": self.tries_remaining,
            "wipe_pending": self.wipe_pending,
        }


@dataclass(frozen=True)
class OtaState:
    """The device's OS side: its name, the slots, which one runs and which one boots next, and the AVB index."""

    device_name: str
    current_slot: str
    active_slot: str
    rollback_index: int
    boot_tries: int
    slots: tuple[Slot, Slot]
    channel: str | None = None

    def slot(self, name: str) -> Slot:
        return self.slots[SLOTS.index(name)]

    @property
    def current(self) -> Slot:
        return self.slot(self.current_slot)

    @property
    def inactive(self) -> Slot:
        return self.slot(other_slot(self.current_slot))

    @property
    def installed(self) -> BuildInfo:
        build = self.current.build
        assert build is not None, "the running slot always holds a build"
        return build

    @property
    def update_pending(self) -> bool:
        return self.active_slot != self.current_slot

    def with_slot(self, slot: Slot) -> OtaState:
        slots = (slot, self.slots[1]) if slot.name == SLOTS[0] else (self.slots[0], slot)
        return dataclasses.replace(self, slots=slots)

    def to_json(self) -> dict[str, object]:
        return {
            "device_name": self.device_name,
            "current_slot": self.current_slot,
            "active_slot": self.active_slot,
            "rollback_index": self.rollback_index,
            "installed": self.installed.to_json(),
            "slots": [slot.to_json() for slot in self.slots],
            "channel": self.channel,
        }


def other_slot(name: str) -> str:
    return SLOTS[1 - SLOTS.index(name)]


# --- what the package and the channel say, as the rules need it (the format layers' types satisfy these) ---


class PackageMetadata(Protocol):
    """The facts of an OTA package's META-INF/com/android/metadata(.pb) the rules read (ota.metadata.OtaMetadata)."""

    @property
    def ota_type(self) -> str: ...
    @property
    def wipe(self) -> bool: ...
    @property
    def downgrade(self) -> bool: ...
    @property
    def spl_downgrade(self) -> bool: ...
    @property
    def pre_device(self) -> Sequence[str]: ...
    @property
    def pre_build(self) -> Sequence[str]: ...
    @property
    def pre_build_incremental(self) -> str | None: ...
    @property
    def post_build(self) -> Sequence[str]: ...
    @property
    def post_build_incremental(self) -> str | None: ...
    @property
    def post_security_patch_level(self) -> str | None: ...
    @property
    def post_timestamp(self) -> int: ...


class OfferedFile(Protocol):
    """One OTA package a channel lists (ota.channel.OtaFile)."""

    @property
    def url(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def pre_build(self) -> str | None: ...


class OfferedBuild(Protocol):
    """One build a channel lists (ota.channel.ChannelBuild)."""

    @property
    def device(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def incremental(self) -> str | None: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def security_patch_level(self) -> str | None: ...
    @property
    def full(self) -> OfferedFile: ...
    @property
    def incrementals(self) -> Sequence[OfferedFile]: ...


# --- verdicts ---


@dataclass(frozen=True)
class OtaDecision:
    """A verdict on a package, or on a boot: refusals are results with a code and a sentence, never exceptions."""

    accepted: bool
    code: str
    reason: str
    #: The build the package installs, when its metadata was read.
    build: BuildInfo | None = None
    wipe: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "code": self.code,
            "reason": self.reason,
            "build": self.build.to_json() if self.build is not None else None,
            "wipe": self.wipe,
        }


def check_payload_timestamp(state: OtaState, max_timestamp: int, build: BuildInfo | None) -> OtaDecision | None:
    """update_engine's max_timestamp rule for a verified payload: None when it may be applied, else the refusal."""
    installed = state.installed.timestamp
    if max_timestamp < installed:
        return refuse(
            "PAYLOAD_TIMESTAMP",
            f"the payload's max_timestamp ({max_timestamp}) is older than the running build's timestamp ({installed}):"
            " update_engine refuses it",
            build,
        )
    return None


def refuse(code: str, reason: str, build: BuildInfo | None = None) -> OtaDecision:
    return OtaDecision(False, code, reason, build)


@dataclass(frozen=True)
class UpdateOffer:
    """What `check` found: the file to fetch and the build it brings, or why there is nothing to fetch."""

    code: str
    reason: str
    kind: UpdateKind | None = None
    build: OfferedBuild | None = None
    file: OfferedFile | None = None

    @property
    def available(self) -> bool:
        return self.file is not None

    def to_json(self) -> dict[str, object]:
        update: dict[str, object] | None = None
        if self.file is not None and self.build is not None:
            update = {
                "kind": self.kind,
                "fingerprint": self.build.fingerprint,
                "incremental": self.build.incremental,
                "timestamp": self.build.timestamp,
                "security_patch_level": self.build.security_patch_level,
                "url": self.file.url,
                "size": self.file.size,
                "sha256": self.file.sha256,
                "pre_build": self.file.pre_build,
            }
        return {"code": self.code, "reason": self.reason, "up_to_date": self.code == "UP_TO_DATE", "update": update}


def choose_update(state: OtaState, builds: Sequence[OfferedBuild]) -> UpdateOffer:
    """The OTA to fetch from a channel: the incremental from the installed build, else the newest build's full OTA."""
    installed = state.installed
    mine = [build for build in builds if build.device == state.device_name]
    if not mine:
        return UpdateOffer("NO_BUILD_FOR_DEVICE", f"the channel lists no build for {state.device_name}")
    newest = max(mine, key=lambda build: build.timestamp)
    if newest.fingerprint == installed.fingerprint:
        return UpdateOffer("UP_TO_DATE", f"up to date: {installed.fingerprint} is the channel's newest build")
    if newest.timestamp <= installed.timestamp:
        return UpdateOffer(
            "UP_TO_DATE",
            f"up to date: the channel's newest build {newest.fingerprint} ({newest.timestamp}) is not newer than the "
            f"installed {installed.fingerprint} ({installed.timestamp})",
        )
    if state.update_pending:
        pending = state.slot(state.active_slot).build
        return UpdateOffer(
            "UPDATE_PENDING_REBOOT",
            f"an update to {pending.fingerprint if pending else 'another build'} is applied and waits for a reboot",
        )
    for offered in newest.incrementals:
        if offered.pre_build == installed.fingerprint:
            return UpdateOffer(
                "INCREMENTAL",
                f"{newest.fingerprint}: an incremental OTA from the installed build {installed.fingerprint} "
                f"({offered.size} bytes)",
                "incremental",
                newest,
                offered,
            )
    return UpdateOffer(
        "FULL",
        f"{newest.fingerprint}: the full OTA ({newest.full.size} bytes); the channel has no incremental from "
        f"{installed.fingerprint}",
        "full",
        newest,
        newest.full,
    )


def build_of(metadata: PackageMetadata, device_name: str) -> BuildInfo:
    """The build a package installs, as its metadata describes it (the rollback index comes from its vbmeta)."""
    fingerprint = metadata.post_build[0] if metadata.post_build else ""
    return BuildInfo(
        fingerprint=fingerprint,
        incremental=metadata.post_build_incremental or incremental_of(fingerprint),
        timestamp=metadata.post_timestamp,
        security_patch_level=metadata.post_security_patch_level or "",
        device=device_name,
    )


def decide_package(state: OtaState, metadata: PackageMetadata) -> OtaDecision:
    """Whether this device applies a (verified) package with this metadata; see the module docstring for the rules."""
    installed = state.installed
    build = build_of(metadata, state.device_name)
    if state.update_pending:
        pending = state.slot(state.active_slot).build
        return refuse(
            "UPDATE_PENDING_REBOOT",
            f"an update to {pending.fingerprint if pending else 'another build'} is applied to slot "
            f"{state.active_slot} and waits for a reboot; boot the device first",
            build,
        )
    if metadata.ota_type != "AB":
        return refuse(
            "NOT_AB_PACKAGE", f"the package is a {metadata.ota_type or 'typeless'} OTA; this A/B device needs AB", build
        )
    if state.device_name not in metadata.pre_device:
        named = ", ".join(metadata.pre_device) or "no device"
        return refuse("WRONG_DEVICE", f"the package is for {named}, not for this device ({state.device_name})", build)
    if metadata.pre_build_incremental and metadata.pre_build_incremental != installed.incremental:
        return refuse(
            "PRE_BUILD_MISMATCH",
            f"the package is an incremental from build {metadata.pre_build_incremental}; this device runs "
            f"{installed.incremental}",
            build,
        )
    if metadata.pre_build and installed.fingerprint not in metadata.pre_build:
        return refuse(
            "PRE_BUILD_MISMATCH",
            f"the package is an incremental from {' | '.join(metadata.pre_build)}; this device runs "
            f"{installed.fingerprint}",
            build,
        )
    if not build.fingerprint:
        return refuse("MALFORMED_METADATA", "the package's metadata names no post-build fingerprint", build)
    allows_downgrade = metadata.downgrade and metadata.wipe
    downgrade = False
    if metadata.post_timestamp <= 0 or metadata.post_timestamp < installed.timestamp:
        if not allows_downgrade:
            return refuse(
                "TIMESTAMP_DOWNGRADE",
                f"the package's build is older than the installed one (post-timestamp {metadata.post_timestamp} < "
                f"{installed.timestamp}) and it does not allow a downgrade with a data wipe (ota-downgrade and "
                "ota-wipe)",
                build,
            )
        if not metadata.pre_build:
            return refuse(
                "DOWNGRADE_NOT_INCREMENTAL",
                "a downgrade package must be an incremental from the installed build (pre-build); a full OTA that "
                "downgrades would take any build back",
                build,
            )
        downgrade = True
    spl = metadata.post_security_patch_level
    if spl is not None and spl != "":
        if not is_security_patch_level(spl):
            return refuse("MALFORMED_METADATA", f"post-security-patch-level {spl!r} is not YYYY-MM-DD", build)
        if installed.security_patch_level and spl < installed.security_patch_level:
            if not ((metadata.downgrade or metadata.spl_downgrade) and metadata.wipe):
                return refuse(
                    "SPL_DOWNGRADE",
                    f"the package's security patch level {spl} is older than the installed "
                    f"{installed.security_patch_level}; it does not allow that downgrade with a data wipe",
                    build,
                )
            downgrade = True
    wipe = metadata.wipe
    if downgrade:
        return OtaDecision(
            True,
            "DOWNGRADE_WITH_WIPE",
            f"{installed.fingerprint} -> {build.fingerprint}: a downgrade the package allows; user data is wiped at "
            "the first boot",
            build,
            True,
        )
    kind = "an incremental" if metadata.pre_build else "a full"
    note = "; user data is wiped at the first boot" if wipe else ""
    return OtaDecision(
        True, "UPDATE", f"{installed.fingerprint} -> {build.fingerprint}: {kind} update{note}", build, wipe
    )


# --- boot ---


@dataclass(frozen=True)
class BootOutcome:
    """What one boot did: the state afterwards, a code and a sentence, and whether user data was wiped."""

    state: OtaState
    code: str
    reason: str
    #: The slot that came up; None when the boot failed and the bootloader will try the same slot again.
    booted_slot: str | None
    wiped: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "reason": self.reason,
            "booted_slot": self.booted_slot,
            "wiped": self.wiped,
            "state": self.state.to_json(),
        }


def applied_state(state: OtaState, directory: str, decision: OtaDecision) -> OtaState:
    """The state after an accepted package was written into the inactive slot: that slot is active and unbooted."""
    assert decision.accepted and decision.build is not None
    target = other_slot(state.current_slot)
    slot = Slot(target, directory, SlotStatus.UNBOOTED, decision.build, state.boot_tries, decision.wipe)
    return dataclasses.replace(state.with_slot(slot), active_slot=target)


def decide_boot(state: OtaState, *, fail: bool) -> BootOutcome:
    """One boot of the device; `fail` is the test hook that makes the new slot fail to come up."""
    if not state.update_pending:
        running = state.installed
        if fail:
            return BootOutcome(
                state,
                "NOTHING_TO_FAIL",
                f"no update waits for its first boot; slot {state.current_slot} ({running.fingerprint}) boots as "
                "before (--fail only makes a newly updated slot fail)",
                state.current_slot,
            )
        return BootOutcome(
            state, "BOOTED", f"booted slot {state.current_slot}: {running.fingerprint}", state.current_slot
        )
    new = state.slot(state.active_slot)
    build = new.build
    assert build is not None, "an active slot that is not running holds the update's build"
    old = state.current_slot
    wiped = new.wipe_pending
    new = dataclasses.replace(new, wipe_pending=False)
    index = build.rollback_index
    if index is not None and index < state.rollback_index:
        unbootable = dataclasses.replace(new, status=SlotStatus.UNBOOTABLE, tries_remaining=0)
        rolled = dataclasses.replace(state.with_slot(unbootable), active_slot=old)
        return BootOutcome(
            rolled,
            "ROLLBACK_INDEX",
            f"slot {new.name} ({build.fingerprint}) carries rollback index {index}, below the device's stored "
            f"{state.rollback_index}: the bootloader refuses it and boots slot {old} again",
            old,
            wiped,
        )
    if fail:
        tries = max(new.tries_remaining - 1, 0)
        if tries == 0:
            unbootable = dataclasses.replace(new, status=SlotStatus.UNBOOTABLE, tries_remaining=0)
            rolled = dataclasses.replace(state.with_slot(unbootable), active_slot=old)
            return BootOutcome(
                rolled,
                "ROLLED_BACK",
                f"slot {new.name} ({build.fingerprint}) failed to boot and has no tries left: it is marked "
                f"unbootable and the device boots slot {old} ({state.installed.fingerprint}) again; the rollback "
                f"index stays {state.rollback_index}",
                old,
                wiped,
            )
        retry = dataclasses.replace(new, tries_remaining=tries)
        return BootOutcome(
            state.with_slot(retry),
            "BOOT_FAILED",
            f"slot {new.name} ({build.fingerprint}) failed to boot; {tries} "
            f"{'try' if tries == 1 else 'tries'} left before the bootloader falls back to slot {old}",
            None,
            wiped,
        )
    successful = dataclasses.replace(new, status=SlotStatus.SUCCESSFUL, tries_remaining=0)
    raised = max(state.rollback_index, index) if index is not None else state.rollback_index
    booted = dataclasses.replace(
        state.with_slot(successful), current_slot=new.name, active_slot=new.name, rollback_index=raised
    )
    index_note = (
        f"the stored rollback index moves {state.rollback_index} -> {raised}"
        if raised != state.rollback_index
        else f"the stored rollback index stays {raised}"
    )
    return BootOutcome(
        booted,
        "BOOT_SUCCESSFUL",
        f"slot {new.name} booted {build.fingerprint} and is marked successful; {index_note}"
        + ("; user data was wiped" if wiped else ""),
        new.name,
        wiped,
    )
