"""AVB public keys: the AvbRSAPublicKeyHeader format a bootloader pins, avb_pkmd.bin, and the key's digest.

libavb verifies RSA with Montgomery multiplication and takes the constants it needs from the key itself
(libavb/avb_rsa.h): a big-endian uint32 key_num_bits, a uint32 n0inv = -1/n mod 2^32, then the modulus n and
rr = (2^key_num_bits)^2 mod n, each key_num_bits/8 bytes big-endian; the exponent is always 65537. avbtool writes
exactly these bytes into vbmeta's auxiliary block, into chain-partition descriptors and, for `avbtool
extract_public_key`, into avb_pkmd.bin, the file `fastboot flash avb_custom_key` hands to a bootloader whose owner
pins a custom key (avbtool.py RSAPublicKey.encode).

The verified-boot key digest is the SHA-256 of these bytes. external/avb computes exactly that twice: `avbtool
extract_public_key_digest` (SHA-256 of RSAPublicKey.encode()), and libavb's avb_append_options (libavb/avb_cmdline.c),
which puts `androidboot.vbmeta.public_key_digest=` the SHA-256 of the top-level vbmeta's public key data on the
kernel command line; Android exposes it as ro.boot.vbmeta.public_key_digest, and the virtualization service
forwards it as part of the root of trust. Key attestation's RootOfTrust.verifiedBootKey is whatever the bootloader
hands to KeyMint; bootloaders that hand over libavb's value report this same digest (AOSP has no bootloader code
that fixes this, so it is the device's choice).

Only keys libavb can use are accepted: RSA with a modulus of exactly 2048, 4096 or 8192 bits and exponent 65537.
"""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING

from sealgate.errors import AvbFormatError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

#: Modulus sizes libavb has algorithms for.
KEY_SIZES = (2048, 4096, 8192)
EXPONENT = 65537
_HEADER = struct.Struct(">II")


def public_key_metadata(public_key: PublicKeyTypes) -> bytes:
    """The key in AvbRSAPublicKeyHeader format: avb_pkmd.bin, byte for byte what `avbtool extract_public_key` writes.

    UsageError for a key libavb cannot verify with (not RSA, another size, another exponent).
    """
    n = _rsa_modulus(public_key)
    bits = n.bit_length()
    word = 1 << 32
    n0inv = word - pow(n, -1, word)
    rr = pow(1 << bits, 2, n)
    size = bits // 8
    return _HEADER.pack(bits, n0inv) + n.to_bytes(size, "big") + rr.to_bytes(size, "big")


def public_key_digest(public_key: PublicKeyTypes) -> str:
    """Hex SHA-256 of `public_key_metadata(public_key)`: androidboot.vbmeta.public_key_digest, the attested key."""
    return hashlib.sha256(public_key_metadata(public_key)).hexdigest()


def encoded_key_digest(encoded: bytes) -> str:
    """Hex SHA-256 of a key already in AVB format (as embedded in a vbmeta image)."""
    return hashlib.sha256(encoded).hexdigest()


def decode_public_key(encoded: bytes) -> RSAPublicKey:
    """Read a key in AvbRSAPublicKeyHeader format, refusing one whose precomputed constants do not match its modulus.

    libavb trusts n0inv and rr as given; a key with wrong constants makes every signature fail on the device while
    a verifier that only looks at n would accept it, so the constants are recomputed and compared.
    """
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    if len(encoded) < _HEADER.size:
        raise AvbFormatError(f"AVB public key is {len(encoded)} bytes, shorter than its 8-byte header")
    bits, n0inv = _HEADER.unpack_from(encoded)
    if bits not in KEY_SIZES:
        raise AvbFormatError(f"AVB public key claims {bits} bits; libavb supports {', '.join(map(str, KEY_SIZES))}")
    size = bits // 8
    if len(encoded) != _HEADER.size + 2 * size:
        raise AvbFormatError(
            f"AVB public key of {bits} bits must be {_HEADER.size + 2 * size} bytes, found {len(encoded)}"
        )
    n = int.from_bytes(encoded[_HEADER.size : _HEADER.size + size], "big")
    rr = int.from_bytes(encoded[_HEADER.size + size :], "big")
    if n.bit_length() != bits or n % 2 == 0:
        raise AvbFormatError(f"AVB public key modulus is not an odd {bits}-bit number")
    word = 1 << 32
    if n0inv != word - pow(n, -1, word):
        raise AvbFormatError("AVB public key's n0inv does not match its modulus (-1/n mod 2^32)")
    if rr != pow(1 << bits, 2, n):
        raise AvbFormatError("AVB public key's rr does not match its modulus ((2^bits)^2 mod n)")
    return RSAPublicNumbers(EXPONENT, n).public_key()


def key_bits(public_key: PublicKeyTypes) -> int:
    """The modulus size of a key libavb can use (UsageError otherwise)."""
    return _rsa_modulus(public_key).bit_length()


def _rsa_modulus(public_key: PublicKeyTypes) -> int:
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not isinstance(public_key, rsa.RSAPublicKey):
        raise UsageError(f"AVB signs with RSA keys only; this is a {type(public_key).__name__}")
    numbers = public_key.public_numbers()
    if numbers.e != EXPONENT:
        raise UsageError(f"AVB needs RSA exponent {EXPONENT}; this key has {numbers.e}")
    if numbers.n.bit_length() not in KEY_SIZES:
        raise UsageError(
            f"AVB needs an RSA key of {', '.join(map(str, KEY_SIZES))} bits; this one has {numbers.n.bit_length()}"
        )
    return numbers.n


def load_key_file(data: bytes, where: str = "key file") -> PublicKeyTypes:
    """A public key from a PEM certificate, a PEM public key or an avb_pkmd.bin (AVB format), whichever `data` is."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if data.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
        try:
            return x509.load_pem_x509_certificate(data).public_key()
        except ValueError as exc:
            raise UsageError(f"{where}: not a readable PEM certificate: {exc}") from exc
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            return serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise UsageError(f"{where}: not a PEM public key or certificate: {exc}") from exc
    try:
        return decode_public_key(data)
    except AvbFormatError as exc:
        raise UsageError(f"{where}: not a PEM certificate, PEM public key or avb_pkmd.bin: {exc}") from exc
