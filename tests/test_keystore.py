"""The encrypted keystore and the passphrase sources, checked against OpenSSL where the files must be standard.

Keys are small (RSA 2048, EC P-256, Ed25519) because RSA 4096 generation is slow; the encryption is the real one.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa

from conftest import require_tool
from sealgate.custody import passphrase as passphrase_module
from sealgate.custody.keystore import Keystore
from sealgate.custody.passphrase import read_passphrase
from sealgate.custody.pkcs8 import ScryptParams, encrypt_private_key
from sealgate.custody.roles import ROLES, KeySpec, select_roles
from sealgate.errors import KeystoreError, KeystoreLockedError, PassphraseError, UsageError
from sealgate.signing import Signer, SigningAlgorithm

PASSPHRASE = "correct horse battery staple"
SMALL = {"releasekey": KeySpec.parse("rsa-2048"), "ota": KeySpec.parse("ec-p256")}
SMALL_ROLES = ["releasekey", "ota", "root"]


def make_keystore(path: Path, roles: list[str] = SMALL_ROLES) -> Keystore:
    overrides = {name: spec for name, spec in SMALL.items() if name in roles}
    return Keystore.create(path, PASSPHRASE, roles=roles, key_overrides=overrides, distribution="ExampleOS")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Keystore:
    """A keystore that tests only read; tests that change a keystore make their own."""
    return make_keystore(tmp_path_factory.mktemp("store") / "keys")


def verify(signer: Signer, data: bytes, signature: bytes, algorithm: SigningAlgorithm) -> None:
    """Verify with `cryptography` from the certificate alone, as a consumer would."""
    key = signer.certificate.public_key()
    digest = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha512": hashes.SHA512()}.get(
        algorithm.hash_name or ""
    )
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    elif isinstance(key, rsa.RSAPublicKey):
        assert digest is not None
        pad: padding.AsymmetricPadding = (
            padding.PSS(padding.MGF1(digest), digest.digest_size) if "pss" in algorithm.value else padding.PKCS1v15()
        )
        key.verify(signature, data, pad, digest)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        assert digest is not None
        key.verify(signature, data, ec.ECDSA(digest))
    elif isinstance(key, dsa.DSAPublicKey):
        assert digest is not None
        key.verify(signature, data, digest)
    else:
        raise AssertionError(f"unexpected key {key!r}")


def openssl_pkey(path: Path, passphrase: str | None) -> subprocess.CompletedProcess[bytes]:
    """Run `openssl pkey` on a key file, with the passphrase passed through the environment (never argv)."""
    openssl = require_tool("openssl")
    env = {**os.environ, "KEY_PASS": passphrase or ""}
    passin = ["-passin", "env:KEY_PASS"] if passphrase is not None else ["-passin", "pass:"]
    return subprocess.run(
        [openssl, "pkey", "-in", str(path), *passin, "-pubout"], capture_output=True, env=env, stdin=subprocess.DEVNULL
    )


# -- layout, permissions, encryption -----------------------------------------------------------------------------------


def test_layout_and_permissions(store: Keystore) -> None:
    directory = store.path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = {path.name for path in directory.iterdir()}
    expected = {"keystore.json", "keystore.lock"} | {f"{r}.{kind}.pem" for r in SMALL_ROLES for kind in ("key", "x509")}
    assert names == expected
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    manifest = json.loads((directory / "keystore.json").read_text())
    assert manifest["format"] == "sealgate-keystore" and manifest["version"] == 1
    assert manifest["distribution"] == "ExampleOS"
    assert manifest["kdf"] == {"name": "scrypt", "n": 2**14, "r": 8, "p": 5, "cipher": "aes-256-cbc", "format": "pkcs8"}
    assert list(manifest["roles"]) == SMALL_ROLES
    for info in store.roles():
        assert info.certificate_sha256 == store.certificate(info.name).sha256
        assert info.generation == 1 and info.retired == ()
    assert [info.key_type for info in store.roles()] == ["rsa-2048", "ec-p256", "ed25519"]
    assert [info.algorithm for info in store.roles()] == [
        SigningAlgorithm.RSA_PKCS1_SHA256,
        SigningAlgorithm.ECDSA_SHA256,
        SigningAlgorithm.ED25519,
    ]


@pytest.mark.parametrize("role", SMALL_ROLES)
def test_key_files_are_encrypted_pkcs8_that_openssl_opens(store: Keystore, role: str) -> None:
    key_file = store.path / f"{role}.key.pem"
    data = key_file.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # cryptography: "private key is encrypted"
        serialization.load_pem_private_key(data, None)

    opened = openssl_pkey(key_file, PASSPHRASE)
    assert opened.returncode == 0, opened.stderr
    certificate_key = store.certificate(role).public_key()
    assert opened.stdout == certificate_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert openssl_pkey(key_file, "not the passphrase").returncode != 0
    assert openssl_pkey(key_file, None).returncode != 0

    # The work factor is what keystore.json says: PBES2 with scrypt N=2^14, r=8, p=5 and AES-256-CBC.
    parsed = subprocess.run(
        [require_tool("openssl"), "asn1parse", "-in", str(key_file)], capture_output=True, text=True, check=True
    ).stdout
    assert ":PBES2" in parsed and ":scrypt" in parsed and ":aes-256-cbc" in parsed
    assert ":4000" in parsed  # 2**14 in hex


def test_certificates_are_self_signed_and_long_lived(store: Keystore) -> None:
    openssl = require_tool("openssl")
    for info in store.roles():
        cert_path = store.path / f"{info.name}.x509.pem"
        result = subprocess.run(
            [openssl, "verify", "-CAfile", str(cert_path), str(cert_path)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert certificate.subject == certificate.issuer == ROLES[info.name].certificate_subject("ExampleOS")
        assert "ExampleOS" in certificate.subject.rfc4514_string()
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert lifetime == datetime.timedelta(days=10000)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca


def test_signers_sign_with_every_algorithm_of_their_key(store: Keystore) -> None:
    for info in store.roles():
        signer = store.signer(info.name, PASSPHRASE)
        assert isinstance(signer, Signer)
        assert signer.name == info.name
        assert signer.certificate.sha256 == info.certificate_sha256
        assert info.algorithm in signer.algorithms()
        for algorithm in signer.algorithms():
            verify(signer, b"release 42", signer.sign(b"release 42", algorithm), algorithm)


def test_wrong_passphrase_is_a_clear_error(store: Keystore) -> None:
    with pytest.raises(KeystoreError, match="wrong passphrase for keystore"):
        store.signer("releasekey", "not the passphrase")


def test_unknown_and_missing_roles(store: Keystore) -> None:
    with pytest.raises(UsageError, match="unknown key role 'nosuch'"):
        store.signer("nosuch", PASSPHRASE)
    with pytest.raises(KeystoreError, match="has no key for role 'platform'"):
        store.signer("platform", PASSPHRASE)


def test_unencrypted_key_is_refused(tmp_path: Path) -> None:
    store = make_keystore(tmp_path / "keys", ["ota"])
    plain = serialization.load_pem_private_key((tmp_path / "keys" / "ota.key.pem").read_bytes(), PASSPHRASE.encode())
    (tmp_path / "keys" / "ota.key.pem").write_bytes(
        plain.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(KeystoreError, match="not an encrypted PKCS#8 key"):
        store.signer("ota", PASSPHRASE)


def test_damaged_certificate_is_detected(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    make_keystore(directory, ["ota", "root"])
    (directory / "ota.x509.pem").write_bytes((directory / "root.x509.pem").read_bytes())
    with pytest.raises(KeystoreError, match=r"damaged: ota\.x509\.pem does not match keystore\.json"):
        Keystore.open(directory)


def test_open_refuses_what_is_not_a_keystore(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match=r"has no keystore\.json"):
        Keystore.open(tmp_path)
    (tmp_path / "keystore.json").write_text('{"format": "sealgate-keystore", "version": 99}')
    with pytest.raises(KeystoreError, match="format version 99"):
        Keystore.open(tmp_path)


def test_create_refuses_bad_requests(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    with pytest.raises(KeystoreError, match="is not empty"):
        make_keystore(tmp_path / "full")
    with pytest.raises(UsageError, match="at least 8 characters"):
        Keystore.create(tmp_path / "a", "short")
    with pytest.raises(UsageError, match="unknown key role"):
        Keystore.create(tmp_path / "b", PASSPHRASE, roles=["releasekey", "nosuch"])
    with pytest.raises(UsageError, match="not being created: ota"):
        Keystore.create(tmp_path / "c", PASSPHRASE, roles=["root"], key_overrides={"ota": KeySpec.parse("ec-p256")})
    with pytest.raises(UsageError, match="at least 2048 bits"):
        KeySpec.parse("rsa-1024")
    with pytest.raises(KeystoreError, match="parent directory does not exist"):
        make_keystore(tmp_path / "no" / "such" / "parent")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["full"]


def test_default_roles_follow_their_consumers() -> None:
    assert [spec.name for spec in select_roles(None)] == [
        *("releasekey", "platform", "shared", "media", "networkstack", "sdk_sandbox", "bluetooth", "nfc"),
        *("ota", "avb", "repo", "root", "targets", "snapshot", "timestamp"),
    ]
    for name in ("releasekey", "platform", "nfc", "ota", "avb", "repo"):
        assert str(ROLES[name].key) == "rsa-4096"
        assert ROLES[name].default_algorithm is SigningAlgorithm.RSA_PKCS1_SHA256
    for name in ("root", "targets", "snapshot", "timestamp"):
        assert ROLES[name].default_algorithm is SigningAlgorithm.ED25519
    assert all(spec.purpose for spec in ROLES.values())


# -- rotation and the public export ------------------------------------------------------------------------------------


def test_rotation_keeps_the_old_key_and_records_it(tmp_path: Path) -> None:
    store = make_keystore(tmp_path / "keys", ["releasekey", "root"])
    before = store.certificate("releasekey")
    rotation = store.rotate("releasekey", PASSPHRASE)
    assert rotation.signs_apks and (rotation.old_generation, rotation.new_generation) == (1, 2)
    assert rotation.old_signer.certificate == before
    assert rotation.new_signer.certificate != before
    assert rotation.new_signer.certificate.subject == before.subject

    reopened = Keystore.open(tmp_path / "keys")
    info = reopened.role("releasekey")
    assert info.generation == 2 and info.key_type == "rsa-2048"
    assert info.certificate_sha256 == rotation.new_signer.certificate.sha256
    assert [(old.generation, old.certificate_sha256) for old in info.retired] == [(1, before.sha256)]
    assert reopened.rotations[0]["from_certificate_sha256"] == before.sha256
    assert reopened.certificate("releasekey", generation=1) == before
    old = reopened.signer("releasekey", PASSPHRASE, generation=1)
    verify(old, b"x", old.sign(b"x", SigningAlgorithm.RSA_PKCS1_SHA256), SigningAlgorithm.RSA_PKCS1_SHA256)
    for name in ("releasekey.1.key.pem", "releasekey.1.x509.pem"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    assert openssl_pkey(tmp_path / "keys" / "releasekey.1.key.pem", PASSPHRASE).returncode == 0

    assert not reopened.rotate("root", PASSPHRASE).signs_apks
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        reopened.rotate("root", "not the passphrase")
    assert reopened.role("root").generation == 2  # the failed rotation changed nothing


def test_export_public_holds_no_private_material(tmp_path: Path) -> None:
    store = make_keystore(tmp_path / "keys", ["releasekey", "root"])
    store.rotate("releasekey", PASSPHRASE)
    written = store.export_public(tmp_path / "public")
    assert written[-1].name == "keys.json"
    names = sorted(path.name for path in (tmp_path / "public").iterdir())
    assert names == ["keys.json", "releasekey.1.x509.pem", "releasekey.x509.pem", "root.x509.pem"]
    for path in (tmp_path / "public").iterdir():
        assert b"PRIVATE KEY" not in path.read_bytes()
    document = json.loads((tmp_path / "public" / "keys.json").read_text())
    assert document["format"] == "sealgate-public-keys"
    for role, entry in document["roles"].items():
        der = asn1_pem.unarmor((tmp_path / "public" / entry["certificate"]).read_bytes())[2]
        assert store.certificate(role).der == der
        assert entry["certificate_sha256"] == store.certificate(role).sha256
    retired = document["roles"]["releasekey"]["retired"]
    assert [old["certificate"] for old in retired] == ["releasekey.1.x509.pem"]
    with pytest.raises(UsageError):
        store.export_public(tmp_path / "keys")


# -- locking -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """A keystore whose lock another process holds, until the test ends."""
    directory = tmp_path / "keys"
    make_keystore(directory, ["ota"])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(directory / "keystore.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield directory
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_locked_keystore_is_a_clear_error(held_lock: Path) -> None:
    with pytest.raises(KeystoreLockedError, match="is locked by another process"):
        Keystore.open(held_lock)
    with pytest.raises(KeystoreLockedError, match="is locked by another process"):
        Keystore(held_lock, json.loads((held_lock / "keystore.json").read_text())).rotate("ota", PASSPHRASE)
    assert not list(held_lock.glob("ota.1.*"))


# -- full disk ---------------------------------------------------------------------------------------------------------


def _fail_fsync_for(monkeypatch: pytest.MonkeyPatch, fragment: str) -> None:
    """Make fsync report a full disk for temporary files whose name contains `fragment`."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_disk_during_create_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_fsync_for(monkeypatch, ".ota.key.pem.")
    with pytest.raises(KeystoreError, match=r"ota\.key\.pem: No space left on device \(the disk is full\)"):
        make_keystore(tmp_path / "keys")
    assert list(tmp_path.iterdir()) == []  # not even the directory (it was made by create)

    (tmp_path / "mounted").mkdir()  # an empty directory given by the user stays, empty
    with pytest.raises(KeystoreError, match="the disk is full"):
        make_keystore(tmp_path / "mounted")
    assert list((tmp_path / "mounted").iterdir()) == []


def test_full_disk_during_rotation_keeps_the_current_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_keystore(tmp_path / "keys", ["ota"])
    before = store.certificate("ota")
    with monkeypatch.context() as patch:
        _fail_fsync_for(patch, ".ota.x509.pem.")
        with pytest.raises(KeystoreError, match="the disk is full"):
            store.rotate("ota", PASSPHRASE)
    reopened = Keystore.open(tmp_path / "keys")
    assert reopened.role("ota").generation == 1
    assert reopened.certificate("ota") == before
    signer = reopened.signer("ota", PASSPHRASE)
    verify(signer, b"x", signer.sign(b"x", SigningAlgorithm.ECDSA_SHA256), SigningAlgorithm.ECDSA_SHA256)
    assert not [path for path in (tmp_path / "keys").iterdir() if path.name.endswith(".tmp")]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 KiB file system (4 pages), where writes fail with ENOSPC; needs the right to mount."""
    mount = require_tool("mount")
    point = tmp_path / "tiny"
    point.mkdir()
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(point)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root?): {result.stderr.decode(errors='replace').strip()}")
    try:
        yield point
    finally:
        subprocess.run([require_tool("umount"), str(point)], check=True)


def test_really_full_disk_during_create(tiny_tmpfs: Path) -> None:
    with pytest.raises(KeystoreError, match="No space left on device"):
        make_keystore(tiny_tmpfs / "keys", ["releasekey", "ota", "root"])
    assert list(tiny_tmpfs.iterdir()) == []


def test_really_full_disk_during_rotation(tiny_tmpfs: Path) -> None:
    store = make_keystore(tiny_tmpfs / "keys", ["ota"])
    before = store.certificate("ota")
    filler = os.open(tiny_tmpfs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(filler, b"\0" * 4096)
    finally:
        os.close(filler)
    with pytest.raises(KeystoreError, match="the disk is full"):
        store.rotate("ota", PASSPHRASE)
    reopened = Keystore.open(tiny_tmpfs / "keys")
    assert reopened.certificate("ota") == before
    reopened.signer("ota", PASSPHRASE)
    assert not [path for path in (tiny_tmpfs / "keys").iterdir() if path.name.endswith(".tmp")]


# -- passphrase sources ------------------------------------------------------------------------------------------------


def _pipe_with(text: bytes) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, text)
    os.close(write_end)
    return read_end


def test_passphrase_from_fd_comes_first_and_reads_one_line() -> None:
    fd = _pipe_with(b"from the descriptor\nrest is not read\n")
    try:
        assert read_passphrase(fd=fd, environ={"SEALGATE_PASSPHRASE": "from env"}) == "from the descriptor"
        assert os.read(fd, 100) == b"rest is not read\n"
    finally:
        os.close(fd)
    fd = _pipe_with(b"no newline at the end")
    try:
        assert read_passphrase(fd=fd, environ={}) == "no newline at the end"
    finally:
        os.close(fd)


def test_passphrase_from_environment() -> None:
    assert read_passphrase(environ={"SEALGATE_PASSPHRASE": "from env"}) == "from env"
    with pytest.raises(PassphraseError, match="SEALGATE_PASSPHRASE is set but empty"):
        read_passphrase(environ={"SEALGATE_PASSPHRASE": ""})


def test_no_passphrase_source_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passphrase_module, "terminal_available", lambda: False)
    with pytest.raises(
        PassphraseError, match=r"no terminal to prompt on; set SEALGATE_PASSPHRASE or pass --passphrase-fd"
    ):
        read_passphrase(environ={})
    with pytest.raises(PassphraseError, match="file descriptor 987"):
        read_passphrase(fd=987, environ={})
    fd = _pipe_with(b"\n")
    try:
        with pytest.raises(PassphraseError, match="empty"):
            read_passphrase(fd=fd, environ={})
    finally:
        os.close(fd)


def test_prompt_asks_twice_when_creating(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["first entry", "second entry"])
    monkeypatch.setattr(passphrase_module, "terminal_available", lambda: True)
    monkeypatch.setattr(passphrase_module.getpass, "getpass", lambda prompt: next(answers))
    with pytest.raises(PassphraseError, match="differ"):
        read_passphrase(environ={}, confirm=True)
    monkeypatch.setattr(passphrase_module.getpass, "getpass", lambda prompt: "same entry")
    assert read_passphrase(environ={}, confirm=True) == "same entry"


def test_encrypted_key_round_trips_through_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = encrypt_private_key(key, "a passphrase", ScryptParams(n=2**10, r=8, p=1))
    loaded = serialization.load_pem_private_key(pem, b"a passphrase")
    assert loaded.public_key() == key.public_key()
