"""The device's persistent state: one SQLite database in the device directory.

Only the gate (`installer.Device`) writes here, and only inside `transaction()`: a refusal writes nothing, and an
exception anywhere inside a transaction (a crash mid-install) rolls back, so the database is always either the old
state or the new one. Signing details are stored as what was verified at install time, the signer certificates'
DER bytes and the proof-of-rotation lineage's attribute bytes (which carry the capabilities), so an update is
compared against exactly that and never against a summary such as a fingerprint.

Reads outside a transaction go through `_reading`, and `read_transaction()` gives a consistent view without taking
the write lock (`device check`): a damaged or locked database is always a DeviceError, never a sqlite3 traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import parse_lineage_attribute
from sealgate.apk.update_rules import SigningIdentity
from sealgate.device.ota_rules import SLOTS, BuildInfo, OtaState, Slot, SlotStatus
from sealgate.device.rules import DeviceProfile, InstalledPackage
from sealgate.device.stores import AllowedStore, StoreMode
from sealgate.durable import fsync_directory
from sealgate.errors import DeviceError, SealgateError

DATABASE_NAME = "device.db"
SCHEMA_VERSION = 3
#: Schema versions an older sealgate wrote; such a device is refused with a sentence saying so.
_OLDER_SCHEMAS = {1: "app installs only", 2: "app installs only, without OS updates"}
#: The device's API level must lie in this range (the verifier takes levels as plain ints; 10000 is far beyond any).
SDK_RANGE = (1, 10000)
_ABI = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

_SCHEMA = """
CREATE TABLE device (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    sdk INTEGER NOT NULL,
    abis TEXT NOT NULL,
    platform BLOB
);
CREATE TABLE packages (
    package TEXT PRIMARY KEY,
    version_code INTEGER NOT NULL,
    lineage BLOB,
    installer TEXT,
    installed_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    debuggable INTEGER NOT NULL,
    shared_user_id TEXT,
    target_sdk INTEGER
);
CREATE TABLE signers (
    package TEXT NOT NULL REFERENCES packages(package) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    der BLOB NOT NULL,
    PRIMARY KEY (package, position)
);
CREATE TABLE stores (
    package TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL,
    mode TEXT NOT NULL,
    auto_update INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (package, cert_sha256)
);
CREATE TABLE ota (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    device_name TEXT NOT NULL,
    current_slot TEXT NOT NULL,
    active_slot TEXT NOT NULL,
    rollback_index INTEGER NOT NULL,
    boot_tries INTEGER NOT NULL,
    channel TEXT
);
CREATE TABLE slots (
    slot TEXT PRIMARY KEY,
    directory TEXT,
    status TEXT NOT NULL,
    build TEXT,
    tries_remaining INTEGER NOT NULL,
    wipe_pending INTEGER NOT NULL
);
CREATE TABLE otacerts (
    position INTEGER PRIMARY KEY,
    der BLOB NOT NULL
);
"""


class DeviceState:
    """Reads and transactional writes of one device directory's database."""

    def __init__(self, directory: Path, connection: sqlite3.Connection) -> None:
        self.directory = directory
        self._db = connection

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        profile: DeviceProfile,
        stores: tuple[AllowedStore, ...] = (),
        *,
        ota: OtaState | None = None,
        otacerts: tuple[Certificate, ...] = (),
    ) -> DeviceState:
        """Make a new device; the database appears complete or not at all (temp file, fsync, rename).

        `ota` is the OS side (slots, installed build) of a device that takes OTA updates, `otacerts` the
        certificates its system image trusts for them (/system/etc/security/otacerts.zip).
        """
        path = Path(directory)
        check_profile(profile)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create device directory {path}: {exc.strerror}") from exc
        target = path / DATABASE_NAME
        if target.exists():
            raise DeviceError(f"{path} already holds a device ({DATABASE_NAME}); use another directory")
        try:
            fd, temp_name = tempfile.mkstemp(prefix=".device-", suffix=".tmp", dir=path)
        except OSError as exc:
            raise DeviceError(f"cannot write in {path}: {exc.strerror}") from exc
        os.close(fd)
        try:
            connection = sqlite3.connect(temp_name, isolation_level=None)
            try:
                connection.executescript(
                    "BEGIN;" + _SCHEMA + "COMMIT;"  # one transaction, so the temp file is never half-built
                )
                with _transaction(connection):
                    connection.execute(
                        "INSERT INTO device VALUES (1, ?, ?, ?, ?)",
                        (
                            SCHEMA_VERSION,
                            profile.sdk,
                            json.dumps(list(profile.abis)),
                            profile.platform.der if profile.platform is not None else None,
                        ),
                    )
                    for store in stores:
                        connection.execute(
                            "INSERT OR REPLACE INTO stores VALUES (?, ?, ?, ?)",
                            (store.package, store.cert_sha256, store.mode.value, int(store.auto_update)),
                        )
                    if ota is not None:
                        _write_ota(connection, ota)
                        connection.executemany(
                            "INSERT INTO otacerts VALUES (?, ?)", [(i, c.der) for i, c in enumerate(otacerts)]
                        )
            finally:
                connection.close()
            with open(temp_name, "rb+") as handle:
                os.fsync(handle.fileno())
            # A link never replaces: of two concurrent `init`s exactly one makes the device, the other is told.
            try:
                os.link(temp_name, target)
            except FileExistsError:
                raise DeviceError(f"{path} already holds a device ({DATABASE_NAME}); use another directory") from None
            os.unlink(temp_name)
            fsync_directory(path)
        except sqlite3.Error as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise DeviceError(f"cannot create the device database in {path}: {exc}") from exc
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise DeviceError(f"cannot create the device database in {path}: {exc.strerror or exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        return cls.open(path)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> DeviceState:
        path = Path(directory)
        target = path / DATABASE_NAME
        if not target.is_file():
            raise DeviceError(f"{path} is not a device directory (no {DATABASE_NAME}); make one with `device init`")
        try:
            connection = sqlite3.connect(target, isolation_level=None)
            connection.execute("PRAGMA foreign_keys = ON")
            row = connection.execute("SELECT schema_version FROM device WHERE id = 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise DeviceError(f"{target} is not a readable device database: {exc}") from exc
        if row is not None and row[0] in _OLDER_SCHEMAS:
            connection.close()
            raise DeviceError(
                f"{target} was made by an older sealgate (schema {row[0]}, {_OLDER_SCHEMAS[row[0]]}); this version "
                f"needs schema {SCHEMA_VERSION}: make a new device with `device init`"
            )
        if row is None or row[0] != SCHEMA_VERSION:
            connection.close()
            raise DeviceError(f"{target} has an unknown schema version; it was made by another sealgate version")
        state = cls(path, connection)
        try:
            state.profile()  # a damaged profile is found now, not halfway through a command
        except DeviceError:
            connection.close()
            raise
        return state

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[DeviceState]:
        """Everything inside commits together or not at all; reads inside see a state no other writer changes."""
        try:
            with _transaction(self._db):
                yield self
        except sqlite3.Error as exc:
            raise DeviceError(f"the device database {self.directory / DATABASE_NAME} failed: {exc}") from exc

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[DeviceState]:
        """A consistent view for a decision that writes nothing: a deferred transaction takes no write lock."""
        with self._reading():
            self._db.execute("BEGIN DEFERRED")
            try:
                yield self
            finally:
                self._db.execute("ROLLBACK")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Turns a damaged or locked database, and values that are not what we wrote, into a DeviceError."""
        try:
            yield
        except DeviceError:
            raise
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            raise DeviceError(
                f"the device database {self.directory / DATABASE_NAME} is damaged or busy: {exc}; "
                "make a new device with `device init` if it stays so"
            ) from exc

    # --- reads ---

    def profile(self) -> DeviceProfile:
        with self._reading():
            row = self._db.execute("SELECT sdk, abis, platform FROM device WHERE id = 1").fetchone()
            if row is None:
                raise DeviceError(f"the device database {self.directory / DATABASE_NAME} has no device profile")
            sdk, abis, platform = row
            abi_list = json.loads(abis)
            if not isinstance(sdk, int) or not isinstance(abi_list, list):
                raise ValueError("the device profile is not an API level and a list of ABIs")
            try:
                certificate = Certificate.from_der(bytes(platform)) if platform is not None else None
            except SealgateError as exc:
                raise DeviceError(f"the device's platform certificate is damaged: {exc}") from exc
            profile = DeviceProfile(sdk, tuple(str(abi) for abi in abi_list), certificate)
            check_profile(profile)
            return profile

    def get(self, package: str) -> InstalledPackage | None:
        with self._reading():
            row = self._db.execute(_SELECT_PACKAGE + " WHERE package = ?", (package,)).fetchone()
            return None if row is None else self._record(row)

    def packages(self) -> list[InstalledPackage]:
        with self._reading():
            return [self._record(row) for row in self._db.execute(_SELECT_PACKAGE + " ORDER BY package").fetchall()]

    def shared_user_members(self, shared_user_id: str) -> tuple[InstalledPackage, ...]:
        with self._reading():
            rows = self._db.execute(_SELECT_PACKAGE + " WHERE shared_user_id = ? ORDER BY package", (shared_user_id,))
            return tuple(self._record(row) for row in rows.fetchall())

    def stores(self) -> tuple[AllowedStore, ...]:
        with self._reading():
            rows = self._db.execute("SELECT package, cert_sha256, mode, auto_update FROM stores ORDER BY package")
            try:
                return tuple(AllowedStore(p, d, StoreMode(m), bool(a)) for p, d, m, a in rows.fetchall())
            except (ValueError, SealgateError) as exc:
                raise DeviceError(f"the device's allow-list is damaged: {exc}") from exc

    def ota_state(self) -> OtaState | None:
        """The OS side of the device, or None for a device made without one (app installs only)."""
        with self._reading():
            row = self._db.execute(
                "SELECT device_name, current_slot, active_slot, rollback_index, boot_tries, channel FROM ota"
            ).fetchone()
            if row is None:
                return None
            name, current, active, rollback_index, boot_tries, channel = row
            slots = []
            for slot_name in SLOTS:
                slot_row = self._db.execute(
                    "SELECT directory, status, build, tries_remaining, wipe_pending FROM slots WHERE slot = ?",
                    (slot_name,),
                ).fetchone()
                if slot_row is None:
                    raise ValueError(f"slot {slot_name} has no record")
                directory, status, build, tries, wipe = slot_row
                slots.append(
                    Slot(
                        slot_name,
                        directory if isinstance(directory, str) else None,
                        SlotStatus(status),
                        BuildInfo.from_json(json.loads(build)) if build is not None else None,
                        int(tries),
                        bool(wipe),
                    )
                )
            if current not in SLOTS or active not in SLOTS:
                raise ValueError(f"the current and active slots must be a or b, got {current!r} and {active!r}")
            state = OtaState(
                str(name),
                current,
                active,
                int(rollback_index),
                int(boot_tries),
                (slots[0], slots[1]),
                channel if isinstance(channel, str) else None,
            )
            if state.current.build is None or state.current.directory is None:
                raise ValueError(f"the running slot {current} holds no build")
            return state

    def otacerts(self) -> tuple[Certificate, ...]:
        with self._reading():
            rows = self._db.execute("SELECT der FROM otacerts ORDER BY position").fetchall()
            try:
                return tuple(Certificate.from_der(bytes(der)) for (der,) in rows)
            except SealgateError as exc:
                raise DeviceError(f"the device's trusted OTA certificates are damaged: {exc}") from exc

    def dump(self) -> list[str]:
        """Every row of the database as SQL, for comparing two states."""
        with self._reading():
            return list(self._db.iterdump())

    # --- writes (only inside transaction()) ---

    def put(self, record: InstalledPackage) -> None:
        self._require_transaction()
        lineage = record.identity.lineage
        self._db.execute("DELETE FROM signers WHERE package = ?", (record.package,))
        self._db.execute(
            "INSERT OR REPLACE INTO packages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.package,
                record.version_code,
                lineage.to_attribute_bytes() if lineage is not None else None,
                record.installer,
                record.installed_at,
                record.updated_at,
                int(record.debuggable),
                record.shared_user_id,
                record.target_sdk,
            ),
        )
        self._write_signers(record)

    def _write_signers(self, record: InstalledPackage) -> None:
        self._db.executemany(
            "INSERT INTO signers VALUES (?, ?, ?)",
            [(record.package, index, cert.der) for index, cert in enumerate(record.identity.signers)],
        )

    def delete(self, package: str) -> None:
        self._require_transaction()
        self._db.execute("DELETE FROM signers WHERE package = ?", (package,))
        self._db.execute("DELETE FROM packages WHERE package = ?", (package,))

    def set_auto_update(self, store: str, enabled: bool) -> None:
        self._require_transaction()
        self._db.execute("UPDATE stores SET auto_update = ? WHERE package = ?", (int(enabled), store))

    def put_ota_state(self, state: OtaState) -> None:
        self._require_transaction()
        _write_ota(self._db, state)

    def wipe_user_data(self) -> None:
        """A factory reset of /data: every installed app and its remembered signer goes; the system image stays."""
        self._require_transaction()
        self._db.execute("DELETE FROM signers")
        self._db.execute("DELETE FROM packages")
        self._db.execute("UPDATE stores SET auto_update = 0")

    def _require_transaction(self) -> None:
        if not self._db.in_transaction:
            raise DeviceError("the device state is only written inside a transaction (a bug in the caller)")

    def _record(self, row: tuple[object, ...]) -> InstalledPackage:
        package, version_code, lineage_bytes, installer, installed_at, updated_at, debuggable, shared, target = row
        assert isinstance(package, str)
        ders = self._db.execute("SELECT der FROM signers WHERE package = ? ORDER BY position", (package,)).fetchall()
        try:
            signers = tuple(Certificate.from_der(bytes(der)) for (der,) in ders)
            lineage = parse_lineage_attribute(bytes(lineage_bytes)) if isinstance(lineage_bytes, bytes) else None
            identity = SigningIdentity(signers, lineage)
        except SealgateError as exc:
            raise DeviceError(f"the recorded signing details of {package} are damaged: {exc}") from exc
        return InstalledPackage(
            package=package,
            version_code=int(str(version_code)),
            identity=identity,
            installer=installer if isinstance(installer, str) else None,
            installed_at=int(str(installed_at)),
            updated_at=int(str(updated_at)),
            debuggable=bool(debuggable),
            shared_user_id=shared if isinstance(shared, str) else None,
            target_sdk=int(str(target)) if target is not None else None,
        )


def check_profile(profile: DeviceProfile) -> None:
    """An API level the verifier can work with and ABI names that mean something."""
    low, high = SDK_RANGE
    if not low <= profile.sdk <= high:
        raise DeviceError(f"the device's API level must lie in {low}..{high}, got {profile.sdk}")
    if not profile.abis:
        raise DeviceError("a device needs at least one ABI (for example arm64-v8a)")
    for abi in profile.abis:
        if not _ABI.match(abi):
            raise DeviceError(f"{abi!r} is not an ABI name (like arm64-v8a, armeabi-v7a, x86_64)")


_SELECT_PACKAGE = (
    "SELECT package, version_code, lineage, installer, installed_at, updated_at, debuggable, shared_user_id, "
    "target_sdk FROM packages"
)


def _write_ota(connection: sqlite3.Connection, state: OtaState) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO ota VALUES (1, ?, ?, ?, ?, ?, ?)",
        (
            state.device_name,
            state.current_slot,
            state.active_slot,
            state.rollback_index,
            state.boot_tries,
            state.channel,
        ),
    )
    for slot in state.slots:
        connection.execute(
            "INSERT OR REPLACE INTO slots VALUES (?, ?, ?, ?, ?, ?)",
            (
                slot.name,
                slot.directory,
                slot.status.value,
                json.dumps(slot.build.to_json(), sort_keys=True) if slot.build is not None else None,
                slot.tries_remaining,
                int(slot.wipe_pending),
            ),
        )


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
