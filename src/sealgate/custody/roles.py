"""The key roles of an Android distribution, what each key is for, and the certificate each role carries.

A distribution signs with many keys because each consumer pins a different one: the package manager pins the
platform, shared, media, networkstack, sdk_sandbox, bluetooth and nfc certificates (signature permissions, shared
UIDs), the default releasekey signs everything else, recovery and update_engine check OTA packages against the ota
key, the bootloader checks vbmeta against the avb key, F-Droid clients pin the repository index key, and TUF clients
check root, targets, snapshot and timestamp metadata. Keeping them separate means one leaked key does not sign for
another consumer.

Key types follow what each consumer accepts: RSA where Android or F-Droid needs RSA (RSA 4096 for keys that must
last the device's lifetime), Ed25519 for TUF roles (python-tuf verifies it and keys are small). Tests override the
type (`KeySpec.parse("ec-p256")`) because RSA 4096 generation is slow.

The self-signed certificate is built here from a signing callable rather than from a private key object, so that a
key held in a PKCS#11 token gets the same certificate as one held in a keystore file: the token signs the
to-be-signed bytes and the key never leaves it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from sealgate.errors import UsageError
from sealgate.signing import SigningAlgorithm

#: AOSP's make_key gives release certificates 10000 days (27 years): longer than any device lives, because a
#: certificate Android pins can never be replaced, only rotated with a proof-of-rotation.
CERTIFICATE_VALIDITY_DAYS = 10000


class RoleKind(Enum):
    """Which consumer verifies a role's signatures; it decides the key type the role may have."""

    APK = "apk"
    OTA = "ota"
    AVB = "avb"
    REPO = "repo"
    TUF = "tuf"


_CURVES: dict[str, type[ec.EllipticCurve]] = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}


@dataclass(frozen=True)
class KeySpec:
    """A key type and size, named like "rsa-4096", "ec-p256", "dsa-2048" or "ed25519"."""

    family: str  # "rsa", "ec", "dsa", "ed25519"
    size: int | None = None  # RSA/DSA modulus bits
    curve: str | None = None  # "p256", "p384", "p521" for EC

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        family, _, rest = text.strip().lower().partition("-")
        if family == "ed25519" and not rest:
            return cls("ed25519")
        if family == "ec" and rest in _CURVES:
            return cls("ec", curve=rest)
        if family in ("rsa", "dsa") and rest.isdigit():
            spec = cls(family, size=int(rest))
            spec.check()
            return spec
        raise UsageError(
            f"unknown key type {text!r}: expected rsa-BITS (2048 or more), ec-p256, ec-p384, ec-p521, "
            "dsa-BITS or ed25519"
        )

    def check(self) -> None:
        if self.family == "rsa" and (self.size is None or self.size < 2048 or self.size % 8):
            raise UsageError(f"RSA keys must be at least 2048 bits (a multiple of 8), not {self.size}")
        if self.family == "dsa" and self.size not in (1024, 2048, 3072):
            raise UsageError(f"DSA keys must be 1024, 2048 or 3072 bits, not {self.size}")

    def with_size(self, size: int) -> KeySpec:
        """The same family with another size; only RSA and DSA have a size to change."""
        if self.family not in ("rsa", "dsa"):
            return self
        spec = KeySpec(self.family, size=size)
        spec.check()
        return spec

    def __str__(self) -> str:
        if self.family == "ed25519":
            return "ed25519"
        if self.family == "ec":
            return f"ec-{self.curve}"
        return f"{self.family}-{self.size}"

    @property
    def default_algorithm(self) -> SigningAlgorithm:
        """What a key of this type signs with unless a consumer asks otherwise (SHA-256 everywhere it fits)."""
        if self.family == "rsa":
            return SigningAlgorithm.RSA_PKCS1_SHA256
        if self.family == "ec":
            return SigningAlgorithm.ECDSA_SHA512 if self.curve in ("p384", "p521") else SigningAlgorithm.ECDSA_SHA256
        if self.family == "dsa":
            return SigningAlgorithm.DSA_SHA256
        return SigningAlgorithm.ED25519

    def generate(self) -> PrivateKeyTypes:
        """A fresh private key in this process (the keystore backend; tokens generate their own)."""
        if self.family == "rsa":
            assert self.size is not None
            return rsa.generate_private_key(public_exponent=65537, key_size=self.size)
        if self.family == "ec":
            assert self.curve is not None
            return ec.generate_private_key(_CURVES[self.curve]())
        if self.family == "dsa":
            assert self.size is not None
            return dsa.generate_private_key(key_size=self.size)
        return ed25519.Ed25519PrivateKey.generate()

    @classmethod
    def of_public_key(cls, public_key: PublicKeyTypes) -> KeySpec:
        if isinstance(public_key, rsa.RSAPublicKey):
            return cls("rsa", size=public_key.key_size)
        if isinstance(public_key, dsa.DSAPublicKey):
            return cls("dsa", size=public_key.key_size)
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            for name, curve in _CURVES.items():
                if isinstance(public_key.curve, curve):
                    return cls("ec", curve=name)
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            return cls("ed25519")
        raise UsageError(f"unsupported public key type {type(public_key).__name__}")


RSA_4096 = KeySpec("rsa", size=4096)
ED25519 = KeySpec("ed25519")


@dataclass(frozen=True)
class RoleSpec:
    """One key role: its name, why it exists, and the key it gets unless told otherwise."""

    name: str
    kind: RoleKind
    purpose: str
    key: KeySpec

    @property
    def default_algorithm(self) -> SigningAlgorithm:
        return self.key.default_algorithm

    @property
    def signs_apks(self) -> bool:
        """APK roles can rotate with a proof-of-rotation lineage; other consumers rotate their own way."""
        return self.kind is RoleKind.APK

    def with_key(self, key: KeySpec) -> RoleSpec:
        return RoleSpec(self.name, self.kind, self.purpose, key)

    def certificate_subject(self, distribution: str) -> x509.Name:
        """Like AOSP's make_key subjects, but naming the distribution and the role instead of "Android"."""
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, distribution),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Release keys"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{distribution} {self.name}"),
            ]
        )


_APK_PURPOSES = {
    "releasekey": "signs every APK in the system image that names no other certificate (the default release key)",
    "platform": "signs the core platform packages (framework-res, SystemUI, Settings) and gates signature|privileged "
    "permissions and the android.uid.system shared UID",
    "shared": "signs the home and contacts packages that share the android.uid.shared process",
    "media": "signs the media and download providers (android.media shared UID)",
    "networkstack": "signs the NetworkStack and related mainline network modules",
    "sdk_sandbox": "signs the SDK runtime sandbox package",
    "bluetooth": "signs the Bluetooth stack (android.uid.bluetooth)",
    "nfc": "signs the NFC service (android.uid.nfc)",
}

#: Every role in the order a ceremony generates them.
ROLES: dict[str, RoleSpec] = {
    **{name: RoleSpec(name, RoleKind.APK, purpose, RSA_4096) for name, purpose in _APK_PURPOSES.items()},
    "ota": RoleSpec(
        "ota",
        RoleKind.OTA,
        "signs OTA update packages (whole-file signature checked by recovery and update_engine)",
        RSA_4096,
    ),
    "avb": RoleSpec(
        "avb", RoleKind.AVB, "signs vbmeta for Android Verified Boot (checked by the bootloader)", RSA_4096
    ),
    "repo": RoleSpec(
        "repo",
        RoleKind.REPO,
        "signs the app repository index (F-Droid clients accept only RSA index signatures)",
        RSA_4096,
    ),
    "root": RoleSpec("root", RoleKind.TUF, "signs TUF root metadata: which keys each TUF role trusts", ED25519),
    "targets": RoleSpec("targets", RoleKind.TUF, "signs TUF targets metadata: the hashes of published files", ED25519),
    "snapshot": RoleSpec(
        "snapshot", RoleKind.TUF, "signs TUF snapshot metadata: a consistent view of targets", ED25519
    ),
    "timestamp": RoleSpec(
        "timestamp", RoleKind.TUF, "signs TUF timestamp metadata: freshness, re-signed often", ED25519
    ),
}


def role(name: str) -> RoleSpec:
    try:
        return ROLES[name]
    except KeyError:
        raise UsageError(f"unknown key role {name!r}; the roles are: {', '.join(ROLES)}") from None


def select_roles(names: Iterable[str] | None) -> list[RoleSpec]:
    """The named roles in ceremony order (all of them for None); unknown or repeated names are usage errors."""
    if names is None:
        return list(ROLES.values())
    wanted = [name.strip() for name in names if name.strip()]
    if not wanted:
        raise UsageError("no key roles given")
    if len(set(wanted)) != len(wanted):
        raise UsageError(f"a key role is named twice in {', '.join(wanted)}")
    specs = {name: role(name) for name in wanted}
    return [spec for name, spec in ROLES.items() if name in specs]


# The certificate's signature algorithm for each signing algorithm (asn1crypto names).
_CERT_SIGNATURE_ALGORITHMS = {
    SigningAlgorithm.RSA_PKCS1_SHA256: "sha256_rsa",
    SigningAlgorithm.RSA_PKCS1_SHA512: "sha512_rsa",
    SigningAlgorithm.ECDSA_SHA256: "sha256_ecdsa",
    SigningAlgorithm.ECDSA_SHA512: "sha512_ecdsa",
    SigningAlgorithm.DSA_SHA256: "sha256_dsa",
    SigningAlgorithm.ED25519: "ed25519",
}

#: Signs bytes with a named algorithm; a `Signer.sign` bound method, or a private key wrapped in one.
SignFunction = Callable[[bytes, SigningAlgorithm], bytes]


def self_signed_certificate(
    public_key: PublicKeyTypes,
    subject: x509.Name,
    algorithm: SigningAlgorithm,
    sign: SignFunction,
    *,
    now: datetime.datetime | None = None,
    validity_days: int = CERTIFICATE_VALIDITY_DAYS,
) -> bytes:
    """DER of a v3 CA certificate for `public_key`, signed through `sign` (a token or an in-memory key).

    The extensions are those `openssl req -x509` gives AOSP's keys (key identifiers, CA:TRUE), so tools that inspect
    release certificates see what they expect.
    """
    signature_algorithm = _CERT_SIGNATURE_ALGORITHMS.get(algorithm)
    if signature_algorithm is None:
        raise UsageError(f"cannot sign a certificate with {algorithm.value}")
    spki_der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki = asn1_keys.PublicKeyInfo.load(spki_der)
    key_id = hashlib.sha1(spki["public_key"].contents[1:]).digest()  # RFC 5280 4.2.1.2 method 1: SHA-1 of the key bits
    name = asn1_x509.Name.load(subject.public_bytes())
    start = (now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    algorithm_id: dict[str, object] = {"algorithm": signature_algorithm}
    if signature_algorithm.endswith("_rsa"):
        algorithm_id["parameters"] = asn1_core.Null()  # RFC 4055: RSA signature algorithms carry an explicit NULL
    tbs = asn1_x509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": int.from_bytes(os.urandom(16), "big") >> 1 | 1,
            "signature": algorithm_id,
            "issuer": name,
            "validity": {
                "not_before": _time(start),
                "not_after": _time(start + datetime.timedelta(days=validity_days)),
            },
            "subject": name,
            "subject_public_key_info": spki,
            "extensions": [
                {"extn_id": "key_identifier", "critical": False, "extn_value": key_id},
                {"extn_id": "authority_key_identifier", "critical": False, "extn_value": {"key_identifier": key_id}},
                {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": True}},
            ],
        }
    )
    signature = sign(tbs.dump(), algorithm)
    certificate = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm_id, "signature_value": signature}
    )
    return bytes(certificate.dump())


def _time(moment: datetime.datetime) -> asn1_x509.Time:
    # RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
    return asn1_x509.Time({"utc_time": moment} if moment.year < 2050 else {"general_time": moment})
