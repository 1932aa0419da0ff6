"""An encrypted keystore directory: the distribution's private keys on the custodian's offline machine.

Layout (directory 0700, every file 0600):

    keystore.json             format version, distribution, KDF parameters, per role: key type, algorithm,
                              certificate and public-key fingerprints, generation, retired keys, rotations
    keystore.lock             flock(2) target, so two processes never write the keystore at once
    <role>.key.pem            the current private key, encrypted PKCS#8 (PBES2: scrypt + AES-256-CBC)
    <role>.x509.pem           its self-signed certificate
    <role>.<n>.key.pem/.x509.pem   generation n of the role, kept after a rotation (nothing is ever deleted)

The PKCS#8 files are standard: `openssl pkey -in releasekey.key.pem` decrypts them with the passphrase, so the keys
outlive this program (`sealgate.custody.pkcs8` writes and reads them). The scrypt parameters (N=2^14, r=8, p=5) are
OWASP's recommended cost at 16 MiB of memory: the largest N OpenSSL's default memory limit accepts when it
decrypts, with p raising the work instead.

Every file is written to a temporary file in the same directory, fsynced, renamed over the target, and the
directory fsynced, so a crash or a full disk leaves the old file or the new one, never a torn key. keystore.json is
written last: it is the commit point, and `open` checks that every certificate matches it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import pem as asn1_pem
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from sealgate.apk.certificate import Certificate
from sealgate.custody.deferred import DeferredSigner
from sealgate.custody.pkcs8 import (
    DEFAULT_KDF,
    ScryptParams,
    WrongPassphraseError,
    decrypt_private_key,
    encrypt_private_key,
    is_encrypted_pem,
)
from sealgate.custody.roles import KeySpec, RoleSpec, select_roles, self_signed_certificate
from sealgate.custody.roles import role as role_spec
from sealgate.durable import replace_file
from sealgate.errors import KeystoreError, KeystoreLockedError, UsageError
from sealgate.signing import PrivateKeySigner, SigningAlgorithm

FORMAT = "sealgate-keystore"
FORMAT_VERSION = 1
PUBLIC_FORMAT = "sealgate-public-keys"
MANIFEST = "keystore.json"
LOCK_FILE = "keystore.lock"
PUBLIC_MANIFEST = "keys.json"
MIN_PASSPHRASE_LENGTH = 8

_ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RetiredKey:
    """A previous generation of a role's key, kept after a rotation."""

    generation: int
    certificate_sha256: str
    created: str
    retired: str


@dataclass(frozen=True)
class RoleInfo:
    """What keystore.json records about a role: everything but the key itself."""

    name: str
    purpose: str
    key_type: str
    algorithm: SigningAlgorithm
    generation: int
    created: str
    certificate_sha256: str
    public_key_sha256: str
    retired: tuple[RetiredKey, ...]

    @property
    def signs_apks(self) -> bool:
        return role_spec(self.name).signs_apks

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "purpose": self.purpose,
            "key_type": self.key_type,
            "algorithm": self.algorithm.value,
            "generation": self.generation,
            "created": self.created,
            "certificate_sha256": self.certificate_sha256,
            "public_key_sha256": self.public_key_sha256,
            "retired": [
                {
                    "generation": old.generation,
                    "certificate_sha256": old.certificate_sha256,
                    "created": old.created,
                    "retired": old.retired,
                }
                for old in self.retired
            ],
        }


@dataclass(frozen=True)
class Rotation:
    """The outcome of rotating a role: both signers, for whoever must vouch for the new key with the old one.

    APK roles need a proof-of-rotation lineage signed by the old key (`signs_apks`); TUF root needs the new root
    signed by both. The keystore makes neither: it only hands over the two keys.
    """

    role: str
    old_generation: int
    new_generation: int
    old_signer: PrivateKeySigner
    new_signer: PrivateKeySigner
    signs_apks: bool


class Keystore:
    """An opened keystore directory; reading it needs no passphrase, signing and rotating do."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self._path = path
        self._manifest = manifest

    # -- creating and opening ------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str,
        *,
        roles: Sequence[str] | None = None,
        key_overrides: Mapping[str, KeySpec] | None = None,
        distribution: str = "Android distribution",
        progress: Callable[[RoleSpec], None] | None = None,
    ) -> Keystore:
        """Generate a key and certificate for every role (all of them by default) in a new, empty directory.

        `key_overrides` maps a role to another key type (tests use small keys). `progress` is called before each
        role's key is generated, for a ceremony's output. On any failure every file written so far is removed.
        """
        directory = Path(path)
        _check_passphrase(passphrase)
        if not distribution.strip():
            raise UsageError("the distribution name is empty")
        specs = select_roles(roles)
        overrides = dict(key_overrides or {})
        unknown = sorted(set(overrides) - {spec.name for spec in specs})
        if unknown:
            raise UsageError(f"key type given for role(s) not being created: {', '.join(unknown)}")
        specs = [spec.with_key(overrides[spec.name]) if spec.name in overrides else spec for spec in specs]

        made_directory = _prepare_empty_directory(directory)
        written: list[Path] = []
        locked = False
        try:
            with _locked(directory, exclusive=True):
                locked = True
                if (directory / MANIFEST).exists():
                    raise KeystoreError(f"{directory} already holds a keystore")
                now = _now()
                manifest: dict[str, Any] = {
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "distribution": distribution,
                    "created": now,
                    "kdf": DEFAULT_KDF.to_json(),
                    "roles": {},
                    "rotations": [],
                }
                for spec in specs:
                    if progress is not None:
                        progress(spec)
                    key, cert_der = _new_key(spec, distribution)
                    _write_key_files(directory, spec.name, key, cert_der, passphrase, DEFAULT_KDF, written)
                    manifest["roles"][spec.name] = _role_record(spec, key.public_key(), cert_der, 1, _now())
                atomic_write(directory / MANIFEST, _dump_json(manifest))
        except BaseException:
            # Only the process that held the lock may clean up: the lock's holder owns the directory's contents.
            if locked:
                for file in written:
                    with contextlib.suppress(OSError):
                        file.unlink()
                with contextlib.suppress(OSError):
                    (directory / LOCK_FILE).unlink()
                    if made_directory:
                        directory.rmdir()
            raise
        return cls(directory, manifest)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Keystore:
        """Read keystore.json and check every current certificate against it (no passphrase needed)."""
        directory = Path(path)
        if not directory.is_dir():
            raise KeystoreError(f"{directory} is not a directory (expected a keystore made by `sealgate keys init`)")
        if not (directory / MANIFEST).is_file():
            raise KeystoreError(f"{directory} is not a sealgate keystore: it has no {MANIFEST}")
        with _locked(directory, exclusive=False):
            manifest = _read_manifest(directory)
            keystore = cls(directory, manifest)
            for name in manifest["roles"]:
                keystore._check_certificate(name)
        return keystore

    # -- reading -------------------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def distribution(self) -> str:
        return str(self._manifest["distribution"])

    @property
    def created(self) -> str:
        return str(self._manifest["created"])

    @property
    def kdf(self) -> ScryptParams:
        kdf = self._manifest["kdf"]
        return ScryptParams(n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"]))

    @property
    def rotations(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self._manifest["rotations"]]

    def roles(self) -> list[RoleInfo]:
        return [self.role(name) for name in self._manifest["roles"]]

    def role(self, name: str) -> RoleInfo:
        record = self._record(name)
        return RoleInfo(
            name=name,
            purpose=role_spec(name).purpose,
            key_type=str(record["key_type"]),
            algorithm=SigningAlgorithm(record["algorithm"]),
            generation=int(record["generation"]),
            created=str(record["created"]),
            certificate_sha256=str(record["certificate_sha256"]),
            public_key_sha256=str(record["public_key_sha256"]),
            retired=tuple(
                RetiredKey(
                    generation=int(old["generation"]),
                    certificate_sha256=str(old["certificate_sha256"]),
                    created=str(old["created"]),
                    retired=str(old["retired"]),
                )
                for old in record["retired"]
            ),
        )

    def certificate(self, role: str, generation: int | None = None) -> Certificate:
        """The role's certificate (the current one, or a retired generation's)."""
        _, cert_path = self._files(role, generation)
        return _read_certificate(cert_path)

    # -- using private keys --------------------------------------------------------------------------------------

    def signer(self, role: str, passphrase: str, generation: int | None = None) -> PrivateKeySigner:
        """Decrypt the role's key (or a retired generation's) into a Signer; a wrong passphrase is a KeystoreError."""
        with _locked(self._path, exclusive=False):
            return self._load_signer(role, passphrase, generation)

    def unlocking_signer(self, role: str, passphrase: str, generation: int | None = None) -> DeferredSigner:
        """`signer`, with the key decrypted on another thread: the certificate is usable at once, signing waits.

        For work that can start before the key is needed (signing a large APK hashes for a second first); the
        files are read now, so the keystore's lock is not held while the key is decrypted.
        """
        with _locked(self._path, exclusive=False):
            key_path, key_pem, certificate = self._read_key_files(role, generation)
        return DeferredSigner(role, certificate, lambda: self._unlock(role, key_path, key_pem, certificate, passphrase))

    def rotate(self, role: str, passphrase: str, *, key: KeySpec | None = None) -> Rotation:
        """Give a role a new key (same type unless `key` says otherwise), keeping the old one as `<role>.<n>.*`.

        The passphrase must decrypt the current key, so a mistyped passphrase never produces a key nobody can open.
        """
        with _locked(self._path, exclusive=True):
            self._manifest = _read_manifest(self._path)
            info = self.role(role)
            old_signer = self._load_signer(role, passphrase, None)
            spec = role_spec(role).with_key(key or KeySpec.parse(info.key_type))
            new_key, cert_der = _new_key(spec, self.distribution)
            old_generation, new_generation = info.generation, info.generation + 1
            key_path, cert_path = self._files(role, None)
            old_key_bytes, old_cert_bytes = key_path.read_bytes(), cert_path.read_bytes()

            # Archive first: from here on the old key exists under its generation's name whatever happens next.
            atomic_write(self._path / f"{role}.{old_generation}.key.pem", old_key_bytes)
            atomic_write(self._path / f"{role}.{old_generation}.x509.pem", old_cert_bytes)
            now = _now()
            manifest = json.loads(json.dumps(self._manifest))
            record = _role_record(spec, new_key.public_key(), cert_der, new_generation, now)
            record["retired"] = [
                *self._record(role)["retired"],
                {
                    "generation": old_generation,
                    "certificate_sha256": info.certificate_sha256,
                    "created": info.created,
                    "retired": now,
                },
            ]
            manifest["roles"][role] = record
            manifest["rotations"].append(
                {
                    "role": role,
                    "time": now,
                    "from_generation": old_generation,
                    "to_generation": new_generation,
                    "from_certificate_sha256": info.certificate_sha256,
                    "to_certificate_sha256": record["certificate_sha256"],
                }
            )
            try:
                _write_key_files(self._path, role, new_key, cert_der, passphrase, self.kdf, [])
                atomic_write(self._path / MANIFEST, _dump_json(manifest))
            except BaseException:
                # Put the current generation back so keystore.json (unchanged) still describes the files; should
                # that fail too, the archived copies above still hold the old key and `open` reports the mismatch.
                for path, content in ((key_path, old_key_bytes), (cert_path, old_cert_bytes)):
                    with contextlib.suppress(KeystoreError):
                        atomic_write(path, content)
                raise
            self._manifest = manifest
            new_signer = PrivateKeySigner(role, new_key, Certificate.from_der(cert_der))
        return Rotation(role, old_generation, new_generation, old_signer, new_signer, spec.signs_apks)

    # -- the public side -----------------------------------------------------------------------------------------

    def export_public(self, dest: str | os.PathLike[str]) -> list[Path]:
        """Copy every certificate (current and retired) and a keys.json of fingerprints to `dest` for the online side.

        No private material leaves: only `.x509.pem` files are read. Returns the files written, keys.json last.
        """
        target = Path(dest)
        if target.resolve() == self._path.resolve():
            raise UsageError("export the public keys to another directory than the keystore itself")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KeystoreError(f"cannot create {target}: {exc.strerror}") from None
        written: list[Path] = []
        roles_json: dict[str, Any] = {}
        with _locked(self._path, exclusive=False):
            for info in self.roles():
                generations: list[int | None] = [old.generation for old in info.retired]
                generations.append(None)
                for generation in generations:
                    _, cert_path = self._files(info.name, generation)
                    out = target / cert_path.name
                    atomic_write(out, cert_path.read_bytes(), mode=0o644)
                    written.append(out)
                entry = info.to_json()
                entry["certificate"] = f"{info.name}.x509.pem"
                for old in entry["retired"]:
                    old["certificate"] = f"{info.name}.{old['generation']}.x509.pem"
                roles_json[info.name] = entry
        manifest = {
            "format": PUBLIC_FORMAT,
            "version": FORMAT_VERSION,
            "distribution": self.distribution,
            "exported": _now(),
            "roles": roles_json,
        }
        out = target / PUBLIC_MANIFEST
        atomic_write(out, _dump_json(manifest), mode=0o644)
        written.append(out)
        return written

    # -- internals -----------------------------------------------------------------------------------------------

    def _record(self, name: str) -> dict[str, Any]:
        role_spec(name)  # an unknown role is a usage error, not "missing from the keystore"
        try:
            record: dict[str, Any] = self._manifest["roles"][name]
        except KeyError:
            raise KeystoreError(
                f"keystore {self._path} has no key for role {name!r} (it has: {', '.join(self._manifest['roles'])})"
            ) from None
        return record

    def _files(self, role: str, generation: int | None) -> tuple[Path, Path]:
        record = self._record(role)
        if generation is None or generation == record["generation"]:
            return self._path / f"{role}.key.pem", self._path / f"{role}.x509.pem"
        if generation not in {old["generation"] for old in record["retired"]}:
            raise KeystoreError(f"role {role!r} has no key generation {generation} (current: {record['generation']})")
        return self._path / f"{role}.{generation}.key.pem", self._path / f"{role}.{generation}.x509.pem"

    def _check_certificate(self, role: str) -> None:
        record = self._record(role)
        key_path, cert_path = self._files(role, None)
        if not key_path.is_file():
            raise KeystoreError(f"keystore {self._path} is damaged: {key_path.name} is missing")
        certificate = _read_certificate(cert_path)
        if certificate.sha256 != record["certificate_sha256"]:
            raise KeystoreError(
                f"keystore {self._path} is damaged: {cert_path.name} does not match {MANIFEST} "
                "(an interrupted rotation? retired keys are kept as <role>.<n>.key.pem)"
            )

    def _load_signer(self, role: str, passphrase: str, generation: int | None) -> PrivateKeySigner:
        key_path, key_pem, certificate = self._read_key_files(role, generation)
        return self._unlock(role, key_path, key_pem, certificate, passphrase)

    def _read_key_files(self, role: str, generation: int | None) -> tuple[Path, bytes, Certificate]:
        """The encrypted key and the certificate, the certificate checked against the manifest."""
        key_path, cert_path = self._files(role, generation)
        certificate = _read_certificate(cert_path)
        if generation is None and certificate.sha256 != self._record(role)["certificate_sha256"]:
            raise KeystoreError(f"keystore {self._path} is damaged: {cert_path.name} does not match {MANIFEST}")
        try:
            key_pem = key_path.read_bytes()
        except OSError as exc:
            raise KeystoreError(f"cannot read {key_path}: {exc.strerror}") from None
        return key_path, key_pem, certificate

    def _unlock(
        self, role: str, key_path: Path, key_pem: bytes, certificate: Certificate, passphrase: str
    ) -> PrivateKeySigner:
        key = _decrypt_key(key_path, key_pem, passphrase, self._path, role)
        if _spki(key.public_key()) != _spki(certificate.public_key()):
            raise KeystoreError(f"keystore {self._path} is damaged: {key_path.name} does not match its certificate")
        return PrivateKeySigner(role, key, certificate)


# -- key material ---------------------------------------------------------------------------------------------------


def _new_key(spec: RoleSpec, distribution: str) -> tuple[PrivateKeyTypes, bytes]:
    key = spec.key.generate()
    cert_der = self_signed_certificate(
        key.public_key(), spec.certificate_subject(distribution), spec.default_algorithm, _sign_function(key)
    )
    return key, cert_der


def _sign_function(key: PrivateKeyTypes) -> Callable[[bytes, SigningAlgorithm], bytes]:
    """Sign with a bare key before its certificate exists (a PrivateKeySigner needs the certificate)."""

    def sign(data: bytes, algorithm: SigningAlgorithm) -> bytes:
        digest = {"sha256": hashes.SHA256(), "sha512": hashes.SHA512()}.get(algorithm.hash_name or "")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        assert digest is not None
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), digest)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(digest))
        if isinstance(key, dsa.DSAPrivateKey):
            return key.sign(data, digest)
        raise UsageError(f"cannot sign with a {type(key).__name__}")

    return sign


def _role_record(
    spec: RoleSpec, public_key: PublicKeyTypes, cert_der: bytes, generation: int, created: str
) -> dict[str, Any]:
    return {
        "kind": spec.kind.value,
        "key_type": str(spec.key),
        "algorithm": spec.default_algorithm.value,
        "generation": generation,
        "created": created,
        "certificate_sha256": hashlib.sha256(cert_der).hexdigest(),
        "public_key_sha256": hashlib.sha256(_spki(public_key)).hexdigest(),
        "retired": [],
    }


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_key_files(
    directory: Path,
    role: str,
    key: PrivateKeyTypes,
    cert_der: bytes,
    passphrase: str,
    kdf: ScryptParams,
    written: list[Path],
) -> None:
    """Write a role's current key and certificate, appending each file to `written` once it is in place."""
    key_path, cert_path = directory / f"{role}.key.pem", directory / f"{role}.x509.pem"
    atomic_write(key_path, encrypt_private_key(key, passphrase, kdf))
    written.append(key_path)
    atomic_write(cert_path, asn1_pem.armor("CERTIFICATE", cert_der))
    written.append(cert_path)


def _decrypt_key(path: Path, data: bytes, passphrase: str, keystore: Path, role: str) -> PrivateKeyTypes:
    if not is_encrypted_pem(data):
        raise KeystoreError(f"{path} is not an encrypted PKCS#8 key; refusing to use an unprotected or unknown file")
    try:
        return decrypt_private_key(data, passphrase)
    except WrongPassphraseError:
        raise KeystoreError(
            f"wrong passphrase for keystore {keystore} (role {role!r} could not be decrypted; "
            "if the passphrase is right, the key file is damaged)"
        ) from None
    except KeystoreError as exc:
        raise KeystoreError(f"{path}: {exc}") from None


# -- files ----------------------------------------------------------------------------------------------------------


def _prepare_empty_directory(directory: Path) -> bool:
    """Make `directory` (0700) or accept it if empty; True when it was made here (so a failure can remove it)."""
    try:
        directory.mkdir(mode=0o700)
        made = True
    except FileExistsError:
        if not directory.is_dir():
            raise KeystoreError(f"{directory} exists and is not a directory") from None
        if any(directory.iterdir()):
            raise KeystoreError(f"{directory} is not empty; a new keystore needs an empty or new directory") from None
        made = False
    except FileNotFoundError:
        raise KeystoreError(f"cannot create {directory}: its parent directory does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot create {directory}: {exc.strerror}") from None
    try:
        directory.chmod(0o700)
    except OSError as exc:
        raise KeystoreError(f"cannot restrict {directory} to its owner: {exc.strerror}") from None
    return made


@contextlib.contextmanager
def _locked(directory: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold keystore.lock: exclusive to write, shared to read; never wait, say who to wait for instead."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exclusive or exc.errno not in (errno.EACCES, errno.EROFS):
            raise KeystoreError(f"cannot open the lock file of keystore {directory}: {exc.strerror}") from None
        fd = None  # a read-only medium or another user's keystore: reading without the lock is the best available
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KeystoreLockedError(
                f"keystore {directory} is locked by another process (a ceremony, rotation or signing in progress); "
                "try again when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that readers and crashes see the old file or the new one, never a mix."""
    try:
        replace_file(path, data, mode=mode)
    except OSError as exc:
        hint = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise KeystoreError(
            f"cannot write {path}: {exc.strerror}{hint}; the previous file, if any, is unchanged"
        ) from None


def _dump_json(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise KeystoreError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise KeystoreError(f"{path} is damaged: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KeystoreError(f"{path} is not a sealgate keystore manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise KeystoreError(
            f"{path} has keystore format version {manifest.get('version')!r}; this sealgate reads version "
            f"{FORMAT_VERSION} (use the sealgate that made it, or a newer one)"
        )
    roles = manifest.get("roles")
    if not isinstance(roles, dict) or not all(isinstance(name, str) and _ROLE_NAME.match(name) for name in roles):
        raise KeystoreError(f"{path} is damaged: bad role list")
    for key in ("distribution", "created", "kdf", "rotations"):
        if key not in manifest:
            raise KeystoreError(f"{path} is damaged: {key!r} is missing")
    return manifest


def _read_certificate(path: Path) -> Certificate:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"keystore is damaged: {path} is missing") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        _, _, der = asn1_pem.unarmor(data)
    except ValueError as exc:
        raise KeystoreError(f"{path} is not a PEM certificate: {exc}") from None
    return Certificate.from_der(der)


def _check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise UsageError(
            f"the keystore passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters; it protects every "
            "private key of the distribution"
        )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
