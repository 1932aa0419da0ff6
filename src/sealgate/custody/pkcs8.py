"""Encrypted PKCS#8 private keys: PBES2 with scrypt and AES-256-CBC, as `openssl pkcs8 -topk8 -scrypt` writes them.

Written by hand on two counts. `cryptography` cannot write PKCS#8 with a chosen work factor (its best-available
encryption is PBKDF2 with 2,048 iterations), so the PBES2 structure is assembled here with asn1crypto. And when
`cryptography` reads such a file, it runs scrypt while holding Python's global interpreter lock: a quarter of a
second in which no other thread of the process runs. Decrypting here instead derives the key with
`hashlib.scrypt`, which releases the lock, so a signer can unlock its key on one thread while its other threads
already copy and hash the gigabytes it is about to sign (see `sealgate.custody.deferred`). Files in any other
encryption (PBKDF2, another cipher) still go to `cryptography`, which reads every standard form.

The scrypt parameters read from a file are bounded before use: a damaged or hostile key file must not make the
process allocate gigabytes or spin for minutes before the passphrase is even checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from asn1crypto import core as asn1_core
from asn1crypto import pem as asn1_pem
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.padding import PKCS7

from sealgate.errors import KeystoreError

#: The PEM label of encrypted PKCS#8 keys (built, so that no source line spells a private-key header).
PEM_LABEL = " ".join(("ENCRYPTED", "PRIVATE", "KEY"))

_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
#: Bounds on scrypt parameters read from a file: 2^20 x r=32 is 4 GiB of work memory, far past any sane key file.
_MAX_SCRYPT_MEMORY = 1 << 30
_MAX_SCRYPT_P = 64


class WrongPassphraseError(KeystoreError):
    """The passphrase does not decrypt the key (or the encrypted bytes are damaged: the two look the same)."""


@dataclass(frozen=True)
class ScryptParams:
    """The work factor of a key's encryption; recorded in keystore.json and in each PKCS#8 file."""

    n: int = 2**14
    r: int = 8
    p: int = 5

    def to_json(self) -> dict[str, Any]:
        return {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "cipher": "aes-256-cbc", "format": "pkcs8"}

    @property
    def memory(self) -> int:
        """Bytes of work memory scrypt needs (RFC 7914: 128 * r * N, plus 128 * r * p for the blocks)."""
        return 128 * self.r * (self.n + self.p)


DEFAULT_KDF = ScryptParams()


class _AlgorithmIdentifier(asn1_core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("algorithm", asn1_core.ObjectIdentifier),
        ("parameters", asn1_core.Any, {"optional": True}),
    ]


class _ScryptParams(asn1_core.Sequence):  # type: ignore[misc]
    # RFC 7914 section 7.1
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("salt", asn1_core.OctetString),
        ("cost_parameter", asn1_core.Integer),
        ("block_size", asn1_core.Integer),
        ("parallelization_parameter", asn1_core.Integer),
        ("key_length", asn1_core.Integer, {"optional": True}),
    ]


class _Pbes2Params(asn1_core.Sequence):  # type: ignore[misc]
    # RFC 8018 appendix A.4
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("key_derivation_func", _AlgorithmIdentifier),
        ("encryption_scheme", _AlgorithmIdentifier),
    ]


class _EncryptedPrivateKeyInfo(asn1_core.Sequence):  # type: ignore[misc]
    # RFC 5958 section 3
    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("encryption_algorithm", _AlgorithmIdentifier),
        ("encrypted_data", asn1_core.OctetString),
    ]


def encrypt_private_key(key: PrivateKeyTypes, passphrase: str, kdf: ScryptParams = DEFAULT_KDF) -> bytes:
    """PEM "ENCRYPTED PRIVATE KEY": PKCS#8 under PBES2 with scrypt and AES-256-CBC."""
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(16), os.urandom(16)
    aes_key = _scrypt(passphrase, salt, kdf)
    padder = PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    params = _ScryptParams(
        {
            "salt": salt,
            "cost_parameter": kdf.n,
            "block_size": kdf.r,
            "parallelization_parameter": kdf.p,
            "key_length": 32,
        }
    )
    pbes2 = _Pbes2Params(
        {
            "key_derivation_func": _AlgorithmIdentifier({"algorithm": _OID_SCRYPT, "parameters": params}),
            "encryption_scheme": _AlgorithmIdentifier(
                {"algorithm": _OID_AES256_CBC, "parameters": asn1_core.OctetString(iv)}
            ),
        }
    )
    info = _EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": _AlgorithmIdentifier({"algorithm": _OID_PBES2, "parameters": pbes2}),
            "encrypted_data": encrypted,
        }
    )
    return bytes(asn1_pem.armor(PEM_LABEL, info.dump()))


def is_encrypted_pem(data: bytes) -> bool:
    return f"-----BEGIN {PEM_LABEL}-----".encode("ascii") in data


def decrypt_private_key(pem: bytes, passphrase: str) -> PrivateKeyTypes:
    """The key in an encrypted PKCS#8 PEM file.

    Raises WrongPassphraseError when the passphrase does not open it, KeystoreError when it is not an encrypted
    PKCS#8 key or cannot be loaded.
    """
    if not is_encrypted_pem(pem):
        raise KeystoreError("not an encrypted PKCS#8 key; an unprotected or unknown key file is refused")
    try:
        _, _, der = asn1_pem.unarmor(pem)
        info = _EncryptedPrivateKeyInfo.load(der)
        scheme = _scrypt_aes_scheme(info)
    except (ValueError, TypeError) as exc:
        raise KeystoreError(f"the encrypted key does not parse: {exc}") from None
    if scheme is None:
        return _decrypt_with_cryptography(pem, passphrase)
    kdf, salt, iv = scheme
    try:
        aes_key = _scrypt(passphrase, salt, kdf)
    except (ValueError, MemoryError) as exc:
        raise KeystoreError(f"the key's scrypt parameters cannot be used: {exc}") from None
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    try:
        padded = decryptor.update(bytes(info["encrypted_data"].native)) + decryptor.finalize()
        unpadder = PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        return serialization.load_der_private_key(plain, None)
    except ValueError:
        raise WrongPassphraseError("the passphrase does not decrypt the key") from None
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeystoreError(f"the decrypted key cannot be loaded: {exc}") from None


def _scrypt_aes_scheme(info: _EncryptedPrivateKeyInfo) -> tuple[ScryptParams, bytes, bytes] | None:
    """(parameters, salt, IV) for PBES2 + scrypt + AES-256-CBC within the bounds; None for any other encryption."""
    algorithm = info["encryption_algorithm"]
    if algorithm["algorithm"].dotted != _OID_PBES2:
        return None
    pbes2 = _Pbes2Params.load(algorithm["parameters"].dump())
    kdf_id, cipher_id = pbes2["key_derivation_func"], pbes2["encryption_scheme"]
    if kdf_id["algorithm"].dotted != _OID_SCRYPT or cipher_id["algorithm"].dotted != _OID_AES256_CBC:
        return None
    params = _ScryptParams.load(kdf_id["parameters"].dump())
    key_length = params["key_length"].native
    if key_length not in (None, 32):
        raise ValueError(f"scrypt key length {key_length} does not fit AES-256")
    kdf = ScryptParams(
        n=params["cost_parameter"].native, r=params["block_size"].native, p=params["parallelization_parameter"].native
    )
    if kdf.n < 2 or kdf.n & (kdf.n - 1) or kdf.r < 1 or not 1 <= kdf.p <= _MAX_SCRYPT_P:
        raise ValueError(f"scrypt parameters N={kdf.n}, r={kdf.r}, p={kdf.p} are invalid")
    if kdf.memory > _MAX_SCRYPT_MEMORY:
        raise ValueError(f"scrypt parameters N={kdf.n}, r={kdf.r} need {kdf.memory >> 20} MiB, over the 1 GiB bound")
    iv = asn1_core.OctetString.load(cipher_id["parameters"].dump()).native
    if not isinstance(iv, bytes) or len(iv) != 16:
        raise ValueError("the AES-256-CBC parameters are not a 16-byte IV")
    return kdf, bytes(params["salt"].native), iv


def _scrypt(passphrase: str, salt: bytes, kdf: ScryptParams) -> bytes:
    # hashlib releases the GIL while it derives; the limit is the work memory plus OpenSSL's own slack.
    return hashlib.scrypt(
        passphrase.encode("utf-8"), salt=salt, n=kdf.n, r=kdf.r, p=kdf.p, maxmem=kdf.memory + (1 << 20), dklen=32
    )


def _decrypt_with_cryptography(pem: bytes, passphrase: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, passphrase.encode("utf-8"))
    except ValueError:
        raise WrongPassphraseError("the passphrase does not decrypt the key") from None
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeystoreError(f"the key cannot be loaded: {exc}") from None
