"""PKCS #7 SignedData of JAR signatures (META-INF/*.RSA, *.DSA, *.EC), read and verified as apksig does.

The structure is walked with asn1crypto's BER parser, keeping the original bytes of everything a signature or an
identity depends on: each certificate of the certificate set (Android identifies a signer by those exact bytes), the
issuer Name of each SignerInfo (matched byte for byte against the certificate's issuer), and the signed attributes
(the signature covers their original encoding with only the first byte changed from [0] IMPLICIT to SET, as Android
does; re-encoding them as DER would accept or reject different files than the device).

Which digest / signature algorithm OID pairs verify on which API levels is Android's own irregular table
(`supported_api_levels`), copied in substance from apksig's OidConstants: e.g. SHA-256 with the bare rsaEncryption
OID works on API 0-8 and 18+, dsa with SHA-256 only from API 22, and many mixed pairs only on API 21-23.

Two exceptions mirror the two ways apksig gives up on a signature block: `Pkcs7FormatError` (apksig's
JAR_SIG_PARSE_EXCEPTION) and `SignerInfoError` (JAR_SIG_VERIFY_EXCEPTION). A SignerInfo that simply does not verify
is not an exception: `verify_signer_info` returns None and the next SignerInfo may still verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import parser as asn1_parser
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

from sealgate.apk.certificate import Certificate, CertificateError
from sealgate.errors import ApkFormatError

ANDROID_KITKAT = 19
ANDROID_N = 24
#: Java's Integer.MAX_VALUE: the open upper end of an API-level range.
MAX_API_LEVEL = 0x7FFFFFFF

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"

MD5, SHA1, SHA224 = "1.2.840.113549.2.5", "1.3.14.3.2.26", "2.16.840.1.101.3.4.2.4"
SHA256, SHA384, SHA512 = "2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.2", "2.16.840.1.101.3.4.2.3"
RSA = "1.2.840.113549.1.1.1"
MD5_RSA, SHA1_RSA, SHA224_RSA = "1.2.840.113549.1.1.4", "1.2.840.113549.1.1.5", "1.2.840.113549.1.1.14"
SHA256_RSA, SHA384_RSA, SHA512_RSA = "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13"
DSA, SHA1_DSA = "1.2.840.10040.4.1", "1.2.840.10040.4.3"
SHA224_DSA, SHA256_DSA = "2.16.840.1.101.3.4.3.1", "2.16.840.1.101.3.4.3.2"
SHA384_DSA, SHA512_DSA = "2.16.840.1.101.3.4.3.3", "2.16.840.1.101.3.4.3.4"
EC_PUBLIC_KEY, SHA1_ECDSA = "1.2.840.10045.2.1", "1.2.840.10045.4.1"
SHA224_ECDSA, SHA256_ECDSA = "1.2.840.10045.4.3.1", "1.2.840.10045.4.3.2"
SHA384_ECDSA, SHA512_ECDSA = "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4"

_DIGEST_NAMES = {MD5: "MD5", SHA1: "SHA-1", SHA224: "SHA-224", SHA256: "SHA-256", SHA384: "SHA-384", SHA512: "SHA-512"}
_SIGNATURE_NAMES = {
    RSA: "RSA",
    MD5_RSA: "MD5 with RSA",
    SHA1_RSA: "SHA-1 with RSA",
    SHA224_RSA: "SHA-224 with RSA",
    SHA256_RSA: "SHA-256 with RSA",
    SHA384_RSA: "SHA-384 with RSA",
    SHA512_RSA: "SHA-512 with RSA",
    DSA: "DSA",
    SHA1_DSA: "SHA-1 with DSA",
    SHA224_DSA: "SHA-224 with DSA",
    SHA256_DSA: "SHA-256 with DSA",
    SHA384_DSA: "SHA-384 with DSA",
    SHA512_DSA: "SHA-512 with DSA",
    EC_PUBLIC_KEY: "ECDSA",
    SHA1_ECDSA: "SHA-1 with ECDSA",
    SHA224_ECDSA: "SHA-224 with ECDSA",
    SHA256_ECDSA: "SHA-256 with ECDSA",
    SHA384_ECDSA: "SHA-384 with ECDSA",
    SHA512_ECDSA: "SHA-512 with ECDSA",
}
#: Signature OIDs that name their digest themselves, as (digest, key type).
_SELF_DESCRIBING = {
    MD5_RSA: ("MD5", "RSA"),
    SHA1_RSA: ("SHA-1", "RSA"),
    SHA224_RSA: ("SHA-224", "RSA"),
    SHA256_RSA: ("SHA-256", "RSA"),
    SHA384_RSA: ("SHA-384", "RSA"),
    SHA512_RSA: ("SHA-512", "RSA"),
    SHA1_DSA: ("SHA-1", "DSA"),
    SHA224_DSA: ("SHA-224", "DSA"),
    SHA256_DSA: ("SHA-256", "DSA"),
    SHA1_ECDSA: ("SHA-1", "EC"),
    SHA224_ECDSA: ("SHA-224", "EC"),
    SHA256_ECDSA: ("SHA-256", "EC"),
    SHA384_ECDSA: ("SHA-384", "EC"),
    SHA512_ECDSA: ("SHA-512", "EC"),
}
#: Bare key-algorithm OIDs, whose digest comes from the SignerInfo's digestAlgorithm.
_KEY_ONLY = {RSA: "RSA", DSA: "DSA", EC_PUBLIC_KEY: "EC"}
_HASHLIB = {name: "".join(name.lower().split("-")) for name in _DIGEST_NAMES.values()}

Range = tuple[int, int]
_ALL: tuple[Range, ...] = ((0, MAX_API_LEVEL),)
#: Lollipop to Marshmallow, where the platform accepted almost any pair.
_L_M: tuple[Range, ...] = ((21, 23),)
#: Before Gingerbread (API 9), whose JAR verifier changed which pairs it understood.
_PRE_GB: tuple[Range, ...] = ((0, 8),)


def _from(level: int) -> tuple[Range, ...]:
    return ((level, MAX_API_LEVEL),)


def _table() -> dict[tuple[str, str], tuple[Range, ...]]:
    """Android's support for (digestAlgorithm, signatureAlgorithm) pairs in a SignerInfo, by API level."""
    rsa_named = (MD5_RSA, SHA1_RSA, SHA224_RSA, SHA256_RSA, SHA384_RSA, SHA512_RSA)
    table: dict[tuple[str, str], tuple[Range, ...]] = {}
    # Mixed RSA pairs (digest and signature OID disagree) verify only on API 21-23, with a few exceptions below.
    for digest in (MD5, SHA1, SHA224, SHA256, SHA384, SHA512):
        for signature in rsa_named:
            table[digest, signature] = _L_M
    table.update(
        {
            (MD5, RSA): _ALL,
            (MD5, MD5_RSA): _PRE_GB + _from(21),
            (SHA1, RSA): _ALL,
            (SHA1, SHA1_RSA): _ALL,
            (SHA224, RSA): _PRE_GB + _from(21),
            (SHA224, SHA224_RSA): _PRE_GB + _from(21),
            (SHA224, SHA256_RSA): ((21, 21),),
            (SHA256, RSA): _PRE_GB + _from(18),
            (SHA256, SHA1_RSA): ((21, 21),),
            (SHA256, SHA256_RSA): _PRE_GB + _from(18),
            (SHA384, RSA): _from(18),
            (SHA384, SHA384_RSA): _from(21),
            (SHA512, RSA): _from(18),
            (SHA512, SHA384_RSA): ((21, 21),),
            (SHA512, SHA512_RSA): _from(21),
        }
    )
    dsa_named = (SHA1_DSA, SHA224_DSA, SHA256_DSA)
    for digest in (MD5, SHA1, SHA224, SHA256, SHA384, SHA512):
        for signature in dsa_named:
            table[digest, signature] = _L_M
    table.update(
        {
            (SHA1, DSA): _ALL,
            (SHA1, SHA1_DSA): _from(9),
            (SHA224, DSA): _from(22),
            (SHA224, SHA224_DSA): _from(21),
            (SHA256, DSA): _from(22),
            (SHA256, SHA256_DSA): _from(21),
        }
    )
    table.update({(SHA1, EC_PUBLIC_KEY): _from(18), (SHA224, EC_PUBLIC_KEY): _from(21)})
    table.update({(SHA256, EC_PUBLIC_KEY): _from(18), (SHA384, EC_PUBLIC_KEY): _from(18)})
    table[SHA512, EC_PUBLIC_KEY] = _from(18)
    ecdsa_named = (SHA1_ECDSA, SHA224_ECDSA, SHA256_ECDSA, SHA384_ECDSA, SHA512_ECDSA)
    for digest in (MD5, SHA1, SHA224, SHA256, SHA384, SHA512):
        for signature in ecdsa_named:
            table[digest, signature] = _L_M
    table.update(
        {
            (SHA1, SHA1_ECDSA): _from(18),
            (SHA224, SHA224_ECDSA): _from(21),
            (SHA256, SHA256_ECDSA): _from(21),
            (SHA384, SHA384_ECDSA): _from(21),
            (SHA512, SHA512_ECDSA): _from(21),
        }
    )
    return table


_SUPPORTED = _table()

# Extensions that Java's X509Certificate understands; any other critical extension makes apksig refuse the signer.
_KNOWN_EXTENSIONS = frozenset(
    {
        "2.5.29.14",
        "2.5.29.15",
        "2.5.29.16",
        "2.5.29.17",
        "2.5.29.18",
        "2.5.29.19",
        "2.5.29.20",
        "2.5.29.21",
        "2.5.29.27",
        "2.5.29.28",
        "2.5.29.29",
        "2.5.29.30",
        "2.5.29.31",
        "2.5.29.32",
        "2.5.29.33",
        "2.5.29.35",
        "2.5.29.36",
        "2.5.29.37",
        "2.5.29.46",
        "2.5.29.54",
        "1.3.6.1.5.5.7.1.1",
        "1.3.6.1.5.5.7.1.11",
        "1.3.6.1.5.5.7.48.1.5",
        "2.16.840.1.113730.1.1",
    }
)


class Pkcs7FormatError(ApkFormatError):
    """The signature block is not a PKCS #7 SignedData Android can read (apksig: JAR_SIG_PARSE_EXCEPTION)."""


class SignerInfoError(ApkFormatError):
    """Verification of a SignerInfo broke off, as Android's would (apksig: JAR_SIG_VERIFY_EXCEPTION)."""


@dataclass(frozen=True, slots=True)
class SignerInfo:
    #: The SignerIdentifier's issuer Name as encoded, or None when the signer is named by subjectKeyIdentifier.
    issuer_der: bytes | None
    serial_number: int | None
    digest_algorithm: str
    signature_algorithm: str
    #: The signed attributes exactly as encoded (starting with the [0] IMPLICIT tag), or None.
    signed_attrs: bytes | None
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedData:
    content_type: str
    #: Each element of the certificate set, as its original bytes.
    certificates: tuple[bytes, ...]
    signer_infos: tuple[SignerInfo, ...]


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag_class: int
    constructed: bool
    tag: int
    encoded: bytes
    contents: bytes


_UNIVERSAL, _CONTEXT = 0, 2
_TAG_INTEGER, _TAG_OCTET_STRING, _TAG_OID, _TAG_SEQUENCE, _TAG_SET = 2, 4, 6, 16, 17


def parse_signed_data(block: bytes) -> SignedData:
    """The SignedData of a ContentInfo; raises Pkcs7FormatError for anything else."""
    try:
        return _parse_signed_data(block)
    except Pkcs7FormatError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError and others on malformed input
        raise Pkcs7FormatError(f"malformed PKCS #7 structure: {exc}") from exc


def supported_api_levels(digest_oid: str, signature_oid: str) -> tuple[Range, ...]:
    return _SUPPORTED.get((digest_oid, signature_oid), ())


def unsupported_api_levels(digest_oid: str, signature_oid: str, min_sdk: int, max_sdk: int) -> list[Range]:
    """The parts of [min_sdk, max_sdk] where Android cannot verify this algorithm pair."""
    missing: list[Range] = []
    low = min_sdk
    for start, end in sorted(supported_api_levels(digest_oid, signature_oid)):
        if end < low or start > max_sdk:
            continue
        if start > low:
            missing.append((low, start - 1))
        low = max(low, end + 1)
        if low > max_sdk:
            break
    if low <= max_sdk:
        missing.append((low, max_sdk))
    return missing


def friendly_name(oid: str) -> str:
    return _DIGEST_NAMES.get(oid) or _SIGNATURE_NAMES.get(oid) or oid


def jca_signature_algorithm(digest_oid: str, signature_oid: str) -> tuple[str, str]:
    """(digest name, key type) of the signature, the way JCA names it (e.g. SHA256withRSA is SHA-256, RSA)."""
    named = _SELF_DESCRIBING.get(signature_oid)
    if named is not None:
        return named
    key_type = _KEY_ONLY.get(signature_oid)
    digest = _DIGEST_NAMES.get(digest_oid)
    if key_type is None or digest is None:
        raise SignerInfoError(
            f"unsupported signature algorithm: digest {digest_oid}, signature algorithm {signature_oid}"
        )
    return digest, key_type


def jca_name(digest: str, key_type: str) -> str:
    return f"{digest.replace('-', '')}with{'ECDSA' if key_type == 'EC' else key_type}"


def parse_certificates(encoded: Sequence[bytes]) -> list[Certificate]:
    """Certificates of the set, each from its original bytes; raises CertificateError naming the bad one."""
    result: list[Certificate] = []
    for index, der in enumerate(encoded, start=1):
        try:
            certificate = Certificate.from_der(der)
            _ = _extensions(certificate)
        except CertificateError as exc:
            raise CertificateError(f"failed to parse certificate #{index}: {exc}") from exc
        except Exception as exc:
            raise CertificateError(f"failed to parse certificate #{index}: {exc}") from exc
        result.append(certificate)
    return result


def find_certificate(certificates: Sequence[Certificate], signer_info: SignerInfo) -> Certificate | None:
    """The certificate a SignerInfo names by issuer and serial number (Android knows no other way)."""
    if signer_info.issuer_der is None or signer_info.serial_number is None:
        return None
    candidates = [cert for cert in certificates if cert.serial_number == signer_info.serial_number]
    for cert in candidates:
        if cert.issuer_der == signer_info.issuer_der:
            return cert
    # Java compares X500Principals, which equal when their canonical forms do (case, spacing, string type).
    wanted = _name(signer_info.issuer_der)
    if wanted is None:
        return None
    for cert in candidates:
        if _names_equal(_name(cert.issuer_der), wanted):
            return cert
    return None


def certificate_chain(certificates: Sequence[Certificate], leaf: Certificate) -> list[Certificate]:
    """The leaf, then each issuer found among the other certificates, until a self-issued one (apksig's order)."""
    unused = list(certificates)
    if leaf in unused:
        unused.remove(leaf)
    chain = [leaf]
    current = leaf
    while True:
        subject, issuer = _subject_and_issuer(current)
        if _names_equal(subject, issuer):
            break
        for index, candidate in enumerate(unused):
            if _names_equal(_subject_and_issuer(candidate)[0], issuer):
                current = unused.pop(index)
                chain.append(current)
                break
        else:
            break
    return chain


def verify_signer_info(
    signed_data: SignedData,
    certificates: Sequence[Certificate],
    signer_info: SignerInfo,
    signature_file: bytes,
    min_sdk: int,
    max_sdk: int,
) -> Certificate | None:
    """The signing certificate if `signer_info` verifies against the .SF bytes, else None.

    Raises SignerInfoError where Android stops trying altogether (no certificate, unusable key, unsafe or
    incomplete signed attributes) and Pkcs7FormatError for ambiguous signed attributes. The caller has already
    checked that the algorithm pair is supported on every API level asked about.
    """
    certificate = find_certificate(certificates, signer_info)
    if certificate is None:
        raise SignerInfoError("signing certificate referenced in SignerInfo not found in SignedData")
    _check_certificate_usable(certificate)
    digest_name, key_type = jca_signature_algorithm(signer_info.digest_algorithm, signer_info.signature_algorithm)
    public_key = _public_key(certificate, key_type)
    if signer_info.signed_attrs is None:
        signed = signature_file
    else:
        if not _signed_attributes_match(signed_data, signer_info, signature_file, min_sdk, max_sdk):
            return None
        # Android verifies the original encoding with only the tag turned into SET, not a DER re-encoding.
        signed = b"\x31" + signer_info.signed_attrs[1:]
    if not _verify_signature(public_key, key_type, digest_name, signer_info.signature, signed):
        return None
    return certificate


# -- signed attributes -------------------------------------------------------------------------------------------


def _signed_attributes_match(
    signed_data: SignedData, signer_info: SignerInfo, signature_file: bytes, min_sdk: int, max_sdk: int
) -> bool:
    assert signer_info.signed_attrs is not None
    if min_sdk < ANDROID_KITKAT:
        # Before KitKat the platform never checked the digest in signed attributes, so the JAR signature did not
        # protect the APK at all there; apksig (and we) reject such APKs outright.
        raise SignerInfoError(f"APKs with signed attributes are broken on platforms with API Level < {ANDROID_KITKAT}")
    attributes = _parse_attributes(signer_info.signed_attrs)
    if max_sdk >= ANDROID_N:
        content_type = _single_value(attributes, OID_CONTENT_TYPE)
        if content_type is None:
            raise SignerInfoError("no content type in signed attributes")
        if _decode_oid_value(content_type) != signed_data.content_type:
            return False
    message_digest = _single_value(attributes, OID_MESSAGE_DIGEST)
    if message_digest is None:
        raise SignerInfoError("no content digest in signed attributes")
    expected = _decode_octet_string_value(message_digest)
    digest_name = _DIGEST_NAMES.get(signer_info.digest_algorithm)
    if digest_name is None:
        raise SignerInfoError(f"unsupported digest algorithm: {signer_info.digest_algorithm}")
    return hashlib.new(_HASHLIB[digest_name], signature_file).digest() == expected


def _parse_attributes(encoded: bytes) -> dict[str, list[bytes]]:
    """Attribute type to its values; a type given twice is ambiguous and refused."""
    try:
        top = _first_tlv(encoded)
        attributes: list[tuple[str, list[bytes]]] = []
        for element in _children(top.contents):
            fields = _children(_expect(element, _UNIVERSAL, _TAG_SEQUENCE).contents)
            if len(fields) < 2:
                raise ValueError("attribute has no values")
            attr_type = _oid(fields[0])
            values = [value.encoded for value in _children(_expect(fields[1], _UNIVERSAL, _TAG_SET).contents)]
            attributes.append((attr_type, values))
    except Exception as exc:
        raise SignerInfoError(f"failed to parse signed attributes: {exc}") from exc
    result: dict[str, list[bytes]] = {}
    for attr_type, values in attributes:
        if attr_type in result:
            raise Pkcs7FormatError(f"duplicate signed attribute: {attr_type}")
        result[attr_type] = values
    return result


def _single_value(attributes: dict[str, list[bytes]], oid: str) -> bytes | None:
    values = attributes.get(oid)
    if not values:
        return None
    if len(values) > 1:
        raise Pkcs7FormatError(f"signed attribute {oid} has multiple values")
    return values[0]


def _decode_oid_value(encoded: bytes) -> str:
    try:
        return _oid(_first_tlv(encoded))
    except Exception as exc:
        raise Pkcs7FormatError(f"failed to decode OBJECT IDENTIFIER in signed attributes: {exc}") from exc


def _decode_octet_string_value(encoded: bytes) -> bytes:
    try:
        return _octet_string(_first_tlv(encoded))
    except Exception as exc:
        raise Pkcs7FormatError(f"failed to decode OCTET STRING in signed attributes: {exc}") from exc


# -- certificates and keys ---------------------------------------------------------------------------------------


def _extensions(certificate: Certificate) -> list[tuple[str, bool, object]]:
    parsed = asn1_x509.Certificate.load(certificate.der)
    extensions = parsed["tbs_certificate"]["extensions"]
    result: list[tuple[str, bool, object]] = []
    for extension in extensions:
        result.append((extension["extn_id"].dotted, bool(extension["critical"].native), extension["extn_value"]))
    return result


def _check_certificate_usable(certificate: Certificate) -> None:
    """Android's own checks before trusting a signer certificate: critical extensions and key usage."""
    try:
        extensions = _extensions(certificate)
    except Exception as exc:
        raise SignerInfoError(f"signing certificate has malformed extensions: {exc}") from exc
    for oid, critical, value in extensions:
        if critical and oid not in _KNOWN_EXTENSIONS:
            raise SignerInfoError(f"signing certificate has an unsupported critical extension {oid}")
        if oid == "2.5.29.15":
            try:
                usage = set(getattr(value, "native", None) or ())
            except Exception as exc:
                raise SignerInfoError(f"signing certificate has a malformed keyUsage extension: {exc}") from exc
            if "digital_signature" not in usage and "non_repudiation" not in usage:
                raise SignerInfoError(
                    "signing certificate not authorized for use in digital signatures: keyUsage extension missing "
                    "digitalSignature and nonRepudiation"
                )


_VerifyingKey = rsa.RSAPublicKey | dsa.DSAPublicKey | ec.EllipticCurvePublicKey


def _public_key(certificate: Certificate, key_type: str) -> _VerifyingKey:
    try:
        key = certificate.public_key()
    except CertificateError as exc:
        raise SignerInfoError(f"signing certificate's public key is unusable: {exc}") from exc
    expected: type = {"RSA": rsa.RSAPublicKey, "DSA": dsa.DSAPublicKey, "EC": ec.EllipticCurvePublicKey}[key_type]
    if not isinstance(key, expected):
        raise SignerInfoError(f"a {certificate.key_description} key cannot verify a {key_type} signature")
    assert isinstance(key, _VerifyingKey)
    return key


def _hash(digest_name: str) -> hashes.HashAlgorithm:
    return {
        "MD5": hashes.MD5(),
        "SHA-1": hashes.SHA1(),
        "SHA-224": hashes.SHA224(),
        "SHA-256": hashes.SHA256(),
        "SHA-384": hashes.SHA384(),
        "SHA-512": hashes.SHA512(),
    }[digest_name]


def _verify_signature(
    key: _VerifyingKey,
    key_type: str,
    digest_name: str,
    signature: bytes,
    data: bytes,
) -> bool:
    """False for a signature that does not verify; SignerInfoError for one Java cannot even decode."""
    algorithm = _hash(digest_name)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            needed = (key.key_size + 7) // 8
            if len(signature) != needed:
                raise SignerInfoError(f"RSA signature is {len(signature)} bytes, the key needs {needed}")
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        else:
            _check_dsa_signature_encoding(signature, key_type)
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(algorithm))
            else:
                key.verify(signature, data, algorithm)
    except InvalidSignature:
        return False
    except SignerInfoError:
        raise
    except Exception as exc:  # cryptography raises ValueError/UnsupportedAlgorithm for unusable keys or inputs
        raise SignerInfoError(f"{key_type} signature cannot be verified: {exc}") from exc
    return True


def _check_dsa_signature_encoding(signature: bytes, key_type: str) -> None:
    try:
        parsed = asn1_algos.DSASignature.load(signature, strict=True)
        _ = parsed.native
    except Exception as exc:
        raise SignerInfoError(f"{key_type} signature is not a valid DER SEQUENCE of two INTEGERs: {exc}") from exc


# -- names -------------------------------------------------------------------------------------------------------


def _name(der: bytes) -> asn1_x509.Name | None:
    try:
        name = asn1_x509.Name.load(der, strict=True)
        _ = name.native
        return name
    except Exception:
        return None


def _subject_and_issuer(certificate: Certificate) -> tuple[asn1_x509.Name | None, asn1_x509.Name | None]:
    tbs = asn1_x509.Certificate.load(certificate.der)["tbs_certificate"]
    return _name(tbs["subject"].dump()), _name(tbs["issuer"].dump())


def _names_equal(left: asn1_x509.Name | None, right: asn1_x509.Name | None) -> bool:
    """X.500 name equality after RFC 5280 string preparation (asn1crypto's), like Java's X500Principal.equals."""
    if left is None or right is None:
        return False
    try:
        return bool(left == right)
    except Exception:
        return bool(left.dump() == right.dump())


# -- BER walking -------------------------------------------------------------------------------------------------


def _parse_signed_data(block: bytes) -> SignedData:
    content_info = _children(_expect(_first_tlv(block), _UNIVERSAL, _TAG_SEQUENCE).contents)
    if not content_info:
        raise Pkcs7FormatError("empty ContentInfo")
    content_type = _oid(content_info[0])
    if content_type != OID_SIGNED_DATA:
        raise Pkcs7FormatError(f"unsupported ContentInfo.contentType: {content_type}")
    if len(content_info) < 2:
        raise Pkcs7FormatError("ContentInfo has no content")
    explicit = _expect(content_info[1], _CONTEXT, 0)
    signed_data = _expect(_first_tlv(explicit.contents), _UNIVERSAL, _TAG_SEQUENCE)
    fields = iter(_children(signed_data.contents))
    _integer(_next(fields, "version"))
    _expect(_next(fields, "digestAlgorithms"), _UNIVERSAL, _TAG_SET)
    encap = _children(_expect(_next(fields, "encapContentInfo"), _UNIVERSAL, _TAG_SEQUENCE).contents)
    if not encap:
        raise Pkcs7FormatError("empty EncapsulatedContentInfo")
    encap_type = _oid(encap[0])
    element = _next(fields, "signerInfos")
    certificates: tuple[bytes, ...] = ()
    if element.tag_class == _CONTEXT and element.tag == 0:
        certificates = tuple(cert.encoded for cert in _children(element.contents))
        element = _next(fields, "signerInfos")
    if element.tag_class == _CONTEXT and element.tag == 1:
        element = _next(fields, "signerInfos")
    signer_infos = tuple(_signer_info(info) for info in _children(_expect(element, _UNIVERSAL, _TAG_SET).contents))
    return SignedData(encap_type, certificates, signer_infos)


def _signer_info(element: _Tlv) -> SignerInfo:
    fields = iter(_children(_expect(element, _UNIVERSAL, _TAG_SEQUENCE).contents))
    _integer(_next(fields, "SignerInfo.version"))
    sid = _next(fields, "SignerInfo.sid")
    issuer_der: bytes | None = None
    serial: int | None = None
    if sid.tag_class == _UNIVERSAL and sid.tag == _TAG_SEQUENCE:
        parts = _children(sid.contents)
        if len(parts) < 2:
            raise Pkcs7FormatError("IssuerAndSerialNumber is incomplete")
        issuer_der = parts[0].encoded
        serial = _integer(parts[1])
    elif not (sid.tag_class == _CONTEXT and sid.tag == 0):
        raise Pkcs7FormatError("SignerInfo.sid is neither IssuerAndSerialNumber nor subjectKeyIdentifier")
    digest_algorithm = _algorithm(_next(fields, "SignerInfo.digestAlgorithm"))
    element = _next(fields, "SignerInfo.signatureAlgorithm")
    signed_attrs: bytes | None = None
    if element.tag_class == _CONTEXT and element.tag == 0:
        signed_attrs = element.encoded
        element = _next(fields, "SignerInfo.signatureAlgorithm")
    signature_algorithm = _algorithm(element)
    signature = _octet_string(_next(fields, "SignerInfo.signature"))
    return SignerInfo(issuer_der, serial, digest_algorithm, signature_algorithm, signed_attrs, signature)


def _first_tlv(data: bytes) -> _Tlv:
    """The first BER value of `data` (trailing bytes are ignored, as apksig's parser ignores them)."""
    if not data:
        raise Pkcs7FormatError("empty input where an ASN.1 value was expected")
    tag_class, method, tag, header, contents, trailer = asn1_parser.parse(data)
    return _Tlv(tag_class, method == 1, tag, data[: len(header) + len(contents) + len(trailer)], contents)


def _children(contents: bytes) -> list[_Tlv]:
    result: list[_Tlv] = []
    pos = 0
    while pos < len(contents):
        child = _first_tlv(contents[pos:])
        result.append(child)
        pos += len(child.encoded)
    return result


def _next(fields: Iterator[_Tlv], what: str) -> _Tlv:
    value = next(fields, None)
    if value is None:
        raise Pkcs7FormatError(f"{what} is missing")
    return value


def _expect(element: _Tlv, tag_class: int, tag: int) -> _Tlv:
    if element.tag_class != tag_class or element.tag != tag:
        raise Pkcs7FormatError(
            f"unexpected ASN.1 value: class {element.tag_class} tag {element.tag}, expected class {tag_class} tag {tag}"
        )
    return element


def _oid(element: _Tlv) -> str:
    _expect(element, _UNIVERSAL, _TAG_OID)
    return str(asn1_core.ObjectIdentifier.load(element.encoded).dotted)


def _integer(element: _Tlv) -> int:
    _expect(element, _UNIVERSAL, _TAG_INTEGER)
    return int(asn1_core.Integer.load(element.encoded).native)


def _octet_string(element: _Tlv) -> bytes:
    _expect(element, _UNIVERSAL, _TAG_OCTET_STRING)
    return bytes(asn1_core.OctetString.load(element.encoded).native)


def _algorithm(element: _Tlv) -> str:
    fields = _children(_expect(element, _UNIVERSAL, _TAG_SEQUENCE).contents)
    if not fields:
        raise Pkcs7FormatError("empty AlgorithmIdentifier")
    return _oid(fields[0])
