"""The device's persistent state: one SQLite database in the device directory.

Only the gate (`installer.Device`) writes here, and only inside `transaction()`: a refusal writes nothing, and an
exception anywhere inside a transaction (a crash mid-install) rolls back, so the database is always either the old
state or the new one. Signing details are stored as what was verified at install time, the signer certificates'
DER bytes and the proof-of-rotation lineage's attribute bytes (which carry the capabilities), so an update is
compared against exactly that and never against a summary such as a fingerprint.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import parse_lineage_attribute
from sealgate.apk.update_rules import SigningIdentity
from sealgate.device.rules import DeviceProfile, InstalledPackage
from sealgate.device.stores import AllowedStore, StoreMode
from sealgate.errors import DeviceError, SealgateError

DATABASE_NAME = "device.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE device (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    sdk INTEGER NOT NULL,
    abis TEXT NOT NULL
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
"""


class DeviceState:
    """Reads and transactional writes of one device directory's database."""

    def __init__(self, directory: Path, connection: sqlite3.Connection) -> None:
        self.directory = directory
        self._db = connection

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], profile: DeviceProfile, stores: tuple[AllowedStore, ...] = ()
    ) -> DeviceState:
        """Make a new device; the database appears complete or not at all (temp file, fsync, rename)."""
        path = Path(directory)
        if profile.sdk < 1:
            raise DeviceError(f"the device's API level must be 1 or more, got {profile.sdk}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create device directory {path}: {exc.strerror}") from exc
        target = path / DATABASE_NAME
        if target.exists():
            raise DeviceError(f"{path} already holds a device ({DATABASE_NAME}); use another directory")
        fd, temp_name = tempfile.mkstemp(prefix=".device-", suffix=".tmp", dir=path)
        os.close(fd)
        try:
            connection = sqlite3.connect(temp_name, isolation_level=None)
            try:
                connection.executescript(
                    "BEGIN;" + _SCHEMA + "COMMIT;"  # one transaction, so the temp file is never half-built
                )
                with _transaction(connection):
                    connection.execute(
                        "INSERT INTO device VALUES (1, ?, ?, ?)",
                        (SCHEMA_VERSION, profile.sdk, json.dumps(list(profile.abis))),
                    )
                    for store in stores:
                        connection.execute(
                            "INSERT OR REPLACE INTO stores VALUES (?, ?, ?, ?)",
                            (store.package, store.cert_sha256, store.mode.value, int(store.auto_update)),
                        )
            finally:
                connection.close()
            with open(temp_name, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
            _fsync_directory(path)
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
        if row is None or row[0] != SCHEMA_VERSION:
            connection.close()
            raise DeviceError(f"{target} has an unknown schema version; it was made by another sealgate version")
        return cls(path, connection)

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

    # --- reads ---

    def profile(self) -> DeviceProfile:
        sdk, abis = self._db.execute("SELECT sdk, abis FROM device WHERE id = 1").fetchone()
        return DeviceProfile(int(sdk), tuple(json.loads(abis)))

    def get(self, package: str) -> InstalledPackage | None:
        row = self._db.execute(_SELECT_PACKAGE + " WHERE package = ?", (package,)).fetchone()
        return None if row is None else self._record(row)

    def packages(self) -> list[InstalledPackage]:
        return [self._record(row) for row in self._db.execute(_SELECT_PACKAGE + " ORDER BY package").fetchall()]

    def shared_user_members(self, shared_user_id: str) -> tuple[InstalledPackage, ...]:
        rows = self._db.execute(_SELECT_PACKAGE + " WHERE shared_user_id = ? ORDER BY package", (shared_user_id,))
        return tuple(self._record(row) for row in rows.fetchall())

    def stores(self) -> tuple[AllowedStore, ...]:
        rows = self._db.execute("SELECT package, cert_sha256, mode, auto_update FROM stores ORDER BY package")
        try:
            return tuple(AllowedStore(p, d, StoreMode(m), bool(a)) for p, d, m, a in rows.fetchall())
        except (ValueError, SealgateError) as exc:
            raise DeviceError(f"the device's allow-list is damaged: {exc}") from exc

    def dump(self) -> list[str]:
        """Every row of the database as SQL, for comparing two states."""
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


_SELECT_PACKAGE = (
    "SELECT package, version_code, lineage, installer, installed_at, updated_at, debuggable, shared_user_id, "
    "target_sdk FROM packages"
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


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
