"""Encrypted PKCS#8 keys read by our own PBES2 path, checked against files OpenSSL writes, and the deferred unlock."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from asn1crypto import pem as asn1_pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import require_tool
from sealgate.custody import pkcs8
from sealgate.custody.keystore import Keystore
from sealgate.custody.pkcs8 import ScryptParams, WrongPassphraseError, decrypt_private_key, encrypt_private_key
from sealgate.custody.roles import KeySpec
from sealgate.errors import KeystoreError
from sealgate.signing import SigningAlgorithm

PASSPHRASE = "correct horse battery staple"
FAST = ScryptParams(n=2**10, r=8, p=1)


def _public(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _openssl_pkcs8(tmp_path: Path, key: rsa.RSAPrivateKey, *options: str) -> bytes:
    """The key encrypted by `openssl pkcs8 -topk8` with `options`, the passphrase through the environment."""
    plain = tmp_path / "plain.pem"
    plain.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    result = subprocess.run(
        [require_tool("openssl"), "pkcs8", "-topk8", "-in", str(plain), "-passout", "env:KEY_PASS", *options],
        capture_output=True,
        env={**os.environ, "KEY_PASS": PASSPHRASE},
        check=True,
    )
    return result.stdout


def test_round_trip_and_wrong_passphrase() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = encrypt_private_key(key, PASSPHRASE, FAST)
    assert _public(decrypt_private_key(pem, PASSPHRASE)) == _public(key)
    with pytest.raises(WrongPassphraseError):
        decrypt_private_key(pem, "not the passphrase")


@pytest.mark.parametrize(
    ("options", "ours"),
    [
        (["-scrypt", "-scrypt_N", "1024", "-scrypt_r", "8", "-scrypt_p", "2", "-v2", "aes-256-cbc"], True),
        (["-v2", "aes-256-cbc", "-iter", "1000"], False),  # PBKDF2: read through cryptography
    ],
)
def test_keys_openssl_encrypted_are_read(
    tmp_path: Path, options: list[str], ours: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _openssl_pkcs8(tmp_path, key, *options)
    calls: list[int] = []
    real_scrypt = pkcs8._scrypt
    monkeypatch.setattr(pkcs8, "_scrypt", lambda *args: calls.append(1) or real_scrypt(*args))
    assert _public(decrypt_private_key(pem, PASSPHRASE)) == _public(key)
    assert bool(calls) == ours
    with pytest.raises(WrongPassphraseError):
        decrypt_private_key(pem, "not the passphrase")


def _with_scrypt_parameters(pem: bytes, n: int, r: int, p: int) -> bytes:
    """The same file with other scrypt parameters, as a damaged or hostile key file would carry."""
    _, _, der = asn1_pem.unarmor(pem)
    info = pkcs8._EncryptedPrivateKeyInfo.load(der)
    pbes2 = pkcs8._Pbes2Params.load(info["encryption_algorithm"]["parameters"].dump())
    params = pkcs8._ScryptParams.load(pbes2["key_derivation_func"]["parameters"].dump())
    changed = pkcs8._ScryptParams(
        {
            "salt": params["salt"].native,
            "cost_parameter": n,
            "block_size": r,
            "parallelization_parameter": p,
            "key_length": 32,
        }
    )
    kdf = pkcs8._AlgorithmIdentifier({"algorithm": "1.3.6.1.4.1.11591.4.11", "parameters": changed})
    new_pbes2 = pkcs8._Pbes2Params({"key_derivation_func": kdf, "encryption_scheme": pbes2["encryption_scheme"]})
    new_info = pkcs8._EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": pkcs8._AlgorithmIdentifier(
                {"algorithm": "1.2.840.113549.1.5.13", "parameters": new_pbes2}
            ),
            "encrypted_data": info["encrypted_data"].native,
        }
    )
    return bytes(asn1_pem.armor(pkcs8.PEM_LABEL, new_info.dump()))


@pytest.mark.parametrize(
    ("n", "r", "p", "reason"),
    [
        (2**30, 8, 1, "over the 1 GiB bound"),
        (1000, 8, 1, "invalid"),
        (1024, 8, 10**6, "invalid"),
        (1024, 0, 1, "invalid"),
    ],
)
def test_hostile_scrypt_parameters_are_refused_at_once(n: int, r: int, p: int, reason: str) -> None:
    pem = _with_scrypt_parameters(
        encrypt_private_key(ec.generate_private_key(ec.SECP256R1()), PASSPHRASE, FAST), n, r, p
    )
    started = time.monotonic()
    with pytest.raises(KeystoreError, match=reason) as raised:
        decrypt_private_key(pem, PASSPHRASE)
    assert not isinstance(raised.value, WrongPassphraseError)
    assert time.monotonic() - started < 2


def test_damaged_and_unencrypted_files_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeystoreError, match="not an encrypted PKCS#8 key"):
        decrypt_private_key(plain, PASSPHRASE)
    pem = encrypt_private_key(key, PASSPHRASE, FAST)
    lines = pem.splitlines()
    truncated = b"\n".join([*lines[:2], *lines[-1:]])
    with pytest.raises(KeystoreError):
        decrypt_private_key(truncated, PASSPHRASE)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Keystore:
    return Keystore.create(
        tmp_path_factory.mktemp("deferred") / "keys",
        PASSPHRASE,
        roles=["releasekey"],
        key_overrides={"releasekey": KeySpec.parse("rsa-2048")},
    )


def test_deferred_signer_signs_as_the_synchronous_one(small_store: Keystore) -> None:
    deferred = small_store.unlocking_signer("releasekey", PASSPHRASE)
    direct = small_store.signer("releasekey", PASSPHRASE)
    assert deferred.certificate.der == direct.certificate.der
    assert deferred.algorithms() == direct.algorithms()
    algorithm = SigningAlgorithm.RSA_PKCS1_SHA256  # deterministic, so the two signatures must be equal
    assert deferred.sign(b"payload", algorithm) == direct.sign(b"payload", algorithm)
    digest = algorithm.digest(b"payload")
    assert deferred.sign_digest(digest, algorithm) == direct.sign(b"payload", algorithm)


def test_deferred_signer_reports_a_wrong_passphrase_when_it_signs(small_store: Keystore) -> None:
    deferred = small_store.unlocking_signer("releasekey", "not the passphrase")
    assert deferred.certificate.der == small_store.certificate("releasekey").der  # known before the key
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        deferred.sign(b"payload", SigningAlgorithm.RSA_PKCS1_SHA256)


def test_deferred_unlock_leaves_the_other_threads_running(small_store: Keystore) -> None:
    """scrypt must not hold the GIL: this thread keeps running Python code while the key is decrypted."""
    started = time.perf_counter()
    deferred = small_store.unlocking_signer("releasekey", PASSPHRASE)
    ticks = 0
    while not deferred._unlocked.done():
        ticks += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    deferred.unlocked()
    # Holding the GIL would starve this loop for the whole derivation (tens to hundreds of milliseconds).
    assert ticks >= max(5, int(elapsed * 1000 * 0.1)), (ticks, elapsed)
