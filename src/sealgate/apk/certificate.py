"""Signer certificates, kept as their original bytes.

Android identifies a signer by the exact DER bytes of its certificate (the SHA-256 of those bytes is what F-Droid
pins and what the package manager compares). Re-encoding a certificate through a parser can change those bytes
(non-DER encodings, unusual serials), so this wrapper keeps the original bytes and only derives the subject and the
public key from them. asn1crypto does the parsing because it accepts the slightly non-DER certificates that real
APKs carry and that Android accepts; `cryptography` loads the public key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key

from sealgate.errors import FormatError

_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.5": "SERIALNUMBER",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
}


class CertificateError(FormatError):
    """A certificate's bytes cannot be parsed, or its public key cannot be loaded."""


@dataclass(frozen=True, eq=False)
class Certificate:
    """An X.509 certificate as its original DER bytes; equality is byte equality, as Android's."""

    der: bytes
    _parsed: asn1_x509.Certificate = field(repr=False, compare=False)

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        try:
            parsed = asn1_x509.Certificate.load(bytes(der), strict=True)
            # Force a full parse now, so that later property access cannot raise.
            _ = parsed["tbs_certificate"]["subject_public_key_info"].dump()
            _ = parsed["tbs_certificate"]["subject"].native
            _ = parsed["tbs_certificate"]["issuer"].dump()
            _ = parsed["tbs_certificate"]["serial_number"].native
        except Exception as exc:  # asn1crypto raises ValueError, TypeError and others on bad input
            raise CertificateError(f"malformed X.509 certificate: {exc}") from exc
        return cls(bytes(der), parsed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the DER bytes: the signer fingerprint F-Droid and Android compare."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def issuer_der(self) -> bytes:
        return bytes(self._parsed["tbs_certificate"]["issuer"].dump())

    @property
    def serial_number(self) -> int:
        return int(self._parsed["tbs_certificate"]["serial_number"].native)

    @cached_property
    def subject(self) -> str:
        """RFC 4514 form of the subject (most specific attribute first)."""
        return _rfc4514(self._parsed["tbs_certificate"]["subject"])

    @property
    def signature_algorithm(self) -> str:
        """How the issuer signed the certificate, in asn1crypto's names ("sha256_rsa", "sha256_ecdsa", ...)."""
        return str(self._parsed["signature_algorithm"]["algorithm"].native)

    @cached_property
    def public_key_der(self) -> bytes:
        """The SubjectPublicKeyInfo, as encoded in the certificate."""
        return bytes(self._parsed["tbs_certificate"]["subject_public_key_info"].dump())

    def public_key(self) -> PublicKeyTypes:
        return load_public_key(self.public_key_der)

    @cached_property
    def key_description(self) -> str:
        """A short label such as RSA-2048, EC-P256 or DSA-1024."""
        return describe_public_key_der(self.public_key_der)


def load_public_key(spki_der: bytes) -> PublicKeyTypes:
    """Load a SubjectPublicKeyInfo, turning every parser complaint into a CertificateError."""
    try:
        return load_der_public_key(spki_der)
    except Exception as exc:  # cryptography raises ValueError or UnsupportedAlgorithm
        raise CertificateError(f"cannot load public key: {exc}") from exc


def describe_public_key_der(spki_der: bytes) -> str:
    try:
        key = load_der_public_key(spki_der)
    except Exception:
        try:
            info = asn1_keys.PublicKeyInfo.load(spki_der)
            return f"{info.algorithm.upper()}-{info.bit_size}"
        except Exception:
            return "unknown"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC-P" + str(key.curve.key_size) if key.curve.name.startswith("secp") else f"EC-{key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def _rfc4514(name: asn1_x509.Name) -> str:
    parts: list[str] = []
    for rdn in reversed(list(name.chosen)):
        attrs = []
        for attr in rdn:
            oid = attr["type"].dotted
            label = _SHORT_NAMES.get(oid, oid)
            try:
                value = attr["value"].native
            except Exception:
                value = attr["value"].dump().hex()
            attrs.append(f"{label}={_escape(str(value))}")
        parts.append("+".join(attrs))
    return ",".join(parts)


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)
