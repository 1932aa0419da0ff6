"""APK Signature Scheme v1: JAR signing, byte for byte as apksig's V1SchemeSigner writes it.

Three kinds of file are added under META-INF/:

* MANIFEST.MF: the input manifest's main section (or just Manifest-Version), then one section per signed entry, in
  Java's name order, holding the digest of the entry's uncompressed data;
* <NAME>.SF, shared by all signers: Signature-Version, Created-By, the digest of the whole manifest, the
  X-Android-APK-Signed stripping protection (which v2+ schemes the APK also carries, so that a downgrade to v1 by
  deleting the signing block fails on Android 7+), then the digest of each manifest section;
* <NAME>.RSA / .DSA / .EC: a detached PKCS #7 SignedData over the .SF, without signed attributes, carrying the
  signer's certificate as its original bytes (Android identifies a signer by those exact bytes).

Lines are CRLF-terminated and wrapped at 70 bytes with one-space continuations, attributes after the first are sorted
by name, and a .SF whose size is a multiple of 1024 gets one more CRLF (a bug in Android 1.6's JAR reader).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from isal.isal_zlib import crc32 as _crc32

from sealgate.apk import jar_manifest
from sealgate.apk.signing.key_algorithms import JarAlgorithm
from sealgate.errors import ApkFormatError, UsageError, ZipFormatError
from sealgate.signing import Signer
from sealgate.ziparchive import ZipArchive, ZipEntry

MANIFEST_NAME = "META-INF/MANIFEST.MF"
META_INF = "META-INF/"
#: The Created-By value apksig writes into .SF files (not into MANIFEST.MF: the signer did not create the APK).
CREATED_BY = "1.0 (Android)"
_MAX_LINE = 70
_CRLF = b"\r\n"
_IGNORED_SUFFIXES = (".sf", ".rsa", ".dsa", ".ec")

_DIGEST_OIDS = {"SHA-1": "1.3.14.3.2.26", "SHA-256": "2.16.840.1.101.3.4.2.1"}
#: PKCS #7 SignerInfo signatureAlgorithm by (key type, digest), as apksig's AlgorithmIdentifier picks them: the
#: bare key OIDs, except DSA with SHA-256 whose bare form Android only accepts from API 22.
_SIGNATURE_OIDS = {
    ("RSA", "SHA-1"): "1.2.840.113549.1.1.1",
    ("RSA", "SHA-256"): "1.2.840.113549.1.1.1",
    ("DSA", "SHA-1"): "1.2.840.10040.4.1",
    ("DSA", "SHA-256"): "2.16.840.1.101.3.4.3.2",
    ("EC", "SHA-256"): "1.2.840.10045.2.1",
}
_SAFE_NAME = re.compile(r"[A-Z0-9_-]")
_HASHLIB = {"SHA-1": "sha1", "SHA-256": "sha256"}
#: Digest strength order, for several signers: the manifest uses the strongest digest any signer signs with.
_STRENGTH = {"SHA-1": 1, "SHA-256": 2}


@dataclass(frozen=True)
class JarSigner:
    """One v1 signer: its key, its file base name under META-INF/, and its algorithm."""

    signer: Signer
    name: str
    algorithm: JarAlgorithm


def is_signed_entry(name: str) -> bool:
    """apksig's isJarEntryDigestNeededInManifest: every file except the signature files at the top of META-INF/.

    Directories are not signed, and the signer drops them from the output as apksigner does.
    """
    if name.endswith("/"):
        return False
    if not name.startswith(META_INF):
        return True
    rest = name[len(META_INF) :]
    if "/" in rest:
        return True
    lower = rest.lower()
    return not (lower == "manifest.mf" or lower.endswith(_IGNORED_SUFFIXES) or lower.startswith("sig-"))


def signer_names(signers: Sequence[Signer]) -> list[str]:
    """JAR signature file names: the key's name, upper-cased, A-Z 0-9 - _ only, at most 8 characters.

    When two keys would get the same name (releasekey and releasekey2 both give RELEASEK), every signer is named
    SIGNER1, SIGNER2, ... instead, in the given order, so the result stays deterministic.
    """
    names = [signer_file_name(signer.name) for signer in signers]
    if len(set(names)) != len(names):
        return [f"SIGNER{index + 1}" for index in range(len(signers))]
    return names


def content_digest_name(algorithms: Iterable[JarAlgorithm]) -> str:
    """The digest MANIFEST.MF and the .SF use: the strongest one any signer signs with."""
    return max((algorithm.digest for algorithm in algorithms), key=_STRENGTH.__getitem__)


def digest(name: str) -> hashlib._Hash:
    return hashlib.new(_HASHLIB[name])


def sign_jar(
    signers: Sequence[JarSigner],
    entry_digests: Mapping[str, bytes],
    digest_name: str,
    scheme_ids: Sequence[int],
    source_manifest: bytes | None,
) -> list[tuple[str, bytes]]:
    """The v1 signature files to add, in apksig's order: each signer's .SF and block, then MANIFEST.MF."""
    manifest, sections = build_manifest(main_attributes(source_manifest), entry_digests, digest_name)
    signature_file = build_signature_file(manifest, sections, digest_name, scheme_ids)
    files: list[tuple[str, bytes]] = []
    for jar_signer in signers:
        block = build_signature_block(jar_signer, signature_file)
        files.append((f"{META_INF}{jar_signer.name}.SF", signature_file))
        files.append((f"{META_INF}{jar_signer.name}.{jar_signer.algorithm.key_type}", block))
    files.append((MANIFEST_NAME, manifest))
    return files


def main_attributes(source_manifest: bytes | None) -> list[tuple[str, str]]:
    """The main section to keep: the input manifest's (first spelling of a name, last value, as java.util.jar)."""
    if source_manifest is None:
        return [("Manifest-Version", "1.0")]
    main, _ = jar_manifest.parse(source_manifest)
    values: dict[str, tuple[str, str]] = {}
    for attribute in main.attributes if main is not None else ():
        if not attribute.name:
            continue
        key = attribute.name.lower()
        spelling = values[key][0] if key in values else attribute.name
        values[key] = (spelling, attribute.value)
    version = values.pop("manifest-version", ("Manifest-Version", "1.0"))[1]
    return [("Manifest-Version", version), *values.values()]


def build_manifest(
    main: Sequence[tuple[str, str]], entry_digests: Mapping[str, bytes], digest_name: str
) -> tuple[bytes, dict[str, bytes]]:
    """MANIFEST.MF and each entry's section bytes (what the .SF digests)."""
    out = bytearray(_main_section(main))
    attribute = _entry_digest_attribute(digest_name)
    sections: dict[str, bytes] = {}
    for name in sorted(entry_digests, key=java_order):
        _check_name(name)
        section = _section(name, [(attribute, base64.b64encode(entry_digests[name]).decode("ascii"))])
        out += section
        sections[name] = section
    return bytes(out), sections


def build_signature_file(
    manifest: bytes, sections: Mapping[str, bytes], digest_name: str, scheme_ids: Sequence[int]
) -> bytes:
    main: list[tuple[str, str]] = [("Signature-Version", "1.0"), ("Created-By", CREATED_BY)]
    if scheme_ids:
        main.append(("X-Android-APK-Signed", ", ".join(str(scheme) for scheme in scheme_ids)))
    manifest_digest = digest(digest_name)
    manifest_digest.update(manifest)
    main.append((_entry_digest_attribute(digest_name) + "-Manifest", _b64(manifest_digest.digest())))
    out = bytearray(_main_section(main))
    attribute = _entry_digest_attribute(digest_name)
    for name in sorted(sections, key=java_order):
        section_digest = digest(digest_name)
        section_digest.update(sections[name])
        out += _section(name, [(attribute, _b64(section_digest.digest()))])
    if out and len(out) % 1024 == 0:
        out += _CRLF
    return bytes(out)


def build_signature_block(jar_signer: JarSigner, signature_file: bytes) -> bytes:
    """A DER PKCS #7 ContentInfo holding detached SignedData over `signature_file`."""
    algorithm = jar_signer.algorithm
    signature = jar_signer.signer.sign(signature_file, algorithm.signing)
    return detached_signed_data(
        jar_signer.signer,
        {"algorithm": _DIGEST_OIDS[algorithm.digest], "parameters": asn1_core.Null()},
        {"algorithm": _SIGNATURE_OIDS[(algorithm.key_type, algorithm.digest)], "parameters": asn1_core.Null()},
        signature,
    )


def detached_signed_data(signer: Signer, digest_algorithm: Any, signature_algorithm: Any, signature: bytes) -> bytes:
    """A DER PKCS #7 ContentInfo: detached SignedData v1 with the signer's certificate (as its original bytes) and
    one SignerInfo without signed attributes, the form JAR signatures and OTA whole-file signatures share."""
    certificate = asn1_x509.Certificate.load(signer.certificate.der)
    if certificate.dump() != signer.certificate.der:
        raise UsageError(f"the certificate of key {signer.name!r} does not survive a round trip")
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value=cms.IssuerAndSerialNumber(
                    {
                        "issuer": certificate["tbs_certificate"]["issuer"],
                        "serial_number": certificate["tbs_certificate"]["serial_number"],
                    }
                ),
            ),
            "digest_algorithm": digest_algorithm,
            "signature_algorithm": signature_algorithm,
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [digest_algorithm],
            "encap_content_info": {"content_type": "data"},
            "certificates": [cms.CertificateChoices(name="certificate", value=certificate)],
            "signer_infos": [signer_info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump())


def java_order(name: str) -> bytes:
    """Sort key equal to Java's String.compareTo (UTF-16 code units), which orders apksig's sections."""
    return name.encode("utf-16-be", errors="surrogatepass")


# -- writing ------------------------------------------------------------------------------------------------------


def _main_section(attributes: Sequence[tuple[str, str]]) -> bytes:
    first, *rest = attributes
    out = _attribute(*first)
    for name, value in sorted(rest, key=lambda item: java_order(item[0])):
        out += _attribute(name, value)
    return out + _CRLF


def _section(name: str, attributes: Sequence[tuple[str, str]]) -> bytes:
    out = _attribute("Name", name)
    for attribute_name, value in sorted(attributes, key=lambda item: java_order(item[0])):
        out += _attribute(attribute_name, value)
    return out + _CRLF


def _attribute(name: str, value: str) -> bytes:
    """One attribute line, wrapped at 70 bytes (continuation lines: a space and 69 bytes), as apksig wraps it."""
    line = f"{name}: {value}".encode()
    out = bytearray(line[:_MAX_LINE])
    for start in range(_MAX_LINE, len(line), _MAX_LINE - 1):
        out += _CRLF + b" " + line[start : start + _MAX_LINE - 1]
    return bytes(out + _CRLF)


def _entry_digest_attribute(digest_name: str) -> str:
    return "SHA1-Digest" if digest_name == "SHA-1" else "SHA-256-Digest"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_name(name: str) -> None:
    """CR, LF and NUL cannot be written into a manifest (they would split or end the section)."""
    if any(char in name for char in "\r\n\0"):
        raise ApkFormatError(f"entry name {name!r} contains CR, LF or NUL, which a JAR manifest cannot hold")


def signer_file_name(name: str) -> str:
    """apksig's getSafeSignerName (an empty name becomes CERT, the name jarsigner uses by default)."""
    if not name:
        return "CERT"
    return "".join(char if _SAFE_NAME.fullmatch(char) else "_" for char in name.upper()[:8])


# -- entry digests -------------------------------------------------------------------------------------------------

#: Small entries are digested in batches of about this many compressed bytes (or entries), one task per batch.
_BATCH_BYTES = 4 * 1024 * 1024
_BATCH_ENTRIES = 256


def entry_batches(entries: Sequence[ZipEntry]) -> list[list[ZipEntry]]:
    """Entries grouped for the digest workers: big ones first so no core idles at the end, small ones batched."""
    ordered = sorted(entries, key=lambda entry: entry.compressed_size, reverse=True)
    batches: list[list[ZipEntry]] = []
    current: list[ZipEntry] = []
    size = 0
    for entry in ordered:
        current.append(entry)
        size += entry.compressed_size
        if size >= _BATCH_BYTES or len(current) >= _BATCH_ENTRIES:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


def digest_batch(archive: ZipArchive, entries: Sequence[ZipEntry], digest_name: str) -> list[tuple[str, bytes]]:
    """The digest of each entry's uncompressed data; the CRC-32 is checked too, so a damaged input is refused.

    ISA-L computes the CRC-32 (three times faster than zlib's), which keeps the check nearly free beside SHA-256.
    """
    results = []
    for entry in entries:
        hasher = digest(digest_name)
        crc = 0
        for chunk in archive.iter_data(entry, check_crc=False):
            hasher.update(chunk)
            crc = _crc32(chunk, crc)
        if crc != entry.crc32:
            raise ZipFormatError(f"entry {entry.name!r} fails its CRC-32 check: the input APK is damaged")
        results.append((entry.name, hasher.digest()))
    return results
