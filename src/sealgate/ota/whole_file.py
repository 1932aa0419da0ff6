"""The whole-file signature of an OTA package (`signapk -w`), verified exactly as Android's recovery verifies it.

An OTA zip ends with a comment holding a detached PKCS#7 signature and a 6-byte footer: the signature's start
counted from the end of the file (2 bytes, little endian), 0xff 0xff, and the comment's size (2 bytes). The
signature covers everything but the comment and its 2-byte length field. Recovery's verify_file
(bootable/recovery/install/verifier.cpp) checks, in this order: the footer marker, that the signature starts
inside the comment and after the footer, that the end-of-central-directory record sits where the comment size says,
that no other EOCD marker appears after it (libziparchive would pick the later one: a second, unsigned archive),
then it hashes the signed range, takes the first SignerInfo's signature out of the PKCS#7 (signed attributes are
not supported: the signature must sit where recovery's walk looks for it), and accepts the package if any trusted
key verifies it. The hash is the trusted certificate's choice, not the package's: SHA-1 for a certificate signed
with sha1WithRSA (or md5WithRSA), SHA-256 for sha256WithRSA and ecdsa-with-SHA256; other certificates are not
loaded at all, RSA keys must be 2048 or 4096 bits with exponent 3 or 65537, EC keys 256 bits.

Hand-written because no library verifies this format; the cryptography is `cryptography`'s, the PKCS#7 structure
asn1crypto's, and the signed range is read in 1 MiB steps into a reused buffer (`FileRanges`: cheaper than a memory
map) and hashed from there, each needed hash on its own thread, so memory stays bounded whatever the package's size.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.apk.certificate import Certificate, CertificateError
from sealgate.apk.report import Issue
from sealgate.errors import UsageError
from sealgate.filerange import FileRanges

FOOTER_SIZE = 6
EOCD_HEADER_SIZE = 22
EOCD_MAGIC = b"PK\x05\x06"
_STEP = 1024 * 1024
#: Certificate signature algorithms recovery loads, and the hash it then uses for the package.
_HASH_BY_CERTIFICATE_ALGORITHM = {
    "md5_rsa": "sha1",
    "sha1_rsa": "sha1",
    "sha256_rsa": "sha256",
    "sha256_ecdsa": "sha256",
}


@dataclass(frozen=True)
class TrustedKey:
    """An otacerts certificate as recovery loads it: its key, and the hash a package signed by it is checked with."""

    certificate: Certificate
    hash_name: str


@dataclass(frozen=True)
class RangeDigest:
    """The digest of a file's first `length` bytes, taken by whoever wrote them from the file as they wrote it.

    The signer hashes its output while copying it; the verifier then checks everything else again (footer, end
    record, comment, signature) and uses this digest instead of hashing the gigabytes a second time, but only when
    it covers exactly the signed range the file's footer describes, with the hash the trusted key needs.
    """

    length: int
    hash_name: str
    digest: bytes


@dataclass
class OtaVerification:
    path: str
    verified: bool = False
    signer: Certificate | None = None
    errors: list[Issue] = field(default_factory=list)

    def fail(self, code: str, message: str) -> OtaVerification:
        self.errors.append(Issue(code, message))
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "verified": self.verified,
            "signer": {"sha256": self.signer.sha256, "subject": self.signer.subject} if self.signer else None,
            "errors": [issue.to_json() for issue in self.errors],
        }


def trusted_key(certificate: Certificate, where: str) -> TrustedKey:
    """Load a certificate as recovery's LoadCertificateFromBuffer does; UsageError for one it would not load."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    algorithm = certificate.signature_algorithm
    hash_name = _HASH_BY_CERTIFICATE_ALGORITHM.get(algorithm)
    if hash_name is None:
        raise UsageError(f"{where}: recovery does not load certificates signed with {algorithm}")
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in (2048, 4096) or key.public_numbers().e not in (3, 65537):
            raise UsageError(f"{where}: recovery accepts RSA keys of 2048 or 4096 bits with exponent 3 or 65537")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size != 256:
            raise UsageError(f"{where}: recovery accepts EC keys of 256 bits only")
    else:
        raise UsageError(f"{where}: recovery accepts RSA and EC keys only")
    return TrustedKey(certificate, hash_name)


def load_trusted_keys(paths: Sequence[str | os.PathLike[str]]) -> list[TrustedKey]:
    """Keys from PEM certificates and otacerts.zip files (every entry ending in x509.pem, as recovery reads it)."""
    keys: list[TrustedKey] = []
    for path in paths:
        name = os.fspath(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the certificate {name}: {exc.strerror}") from None
        if data.startswith(b"PK"):
            keys.extend(_keys_from_zip(Path(path)))
        else:
            keys.append(trusted_key(_pem_certificate(data, name), name))
    if not keys:
        raise UsageError("no trusted certificate was given")
    return keys


def _keys_from_zip(path: Path) -> list[TrustedKey]:
    from sealgate.errors import SealgateError
    from sealgate.ziparchive import ZipArchive

    keys = []
    try:
        with ZipArchive.open(path) as archive:
            for entry in archive.entries:
                if entry.name.endswith("x509.pem"):
                    where = f"{path}!{entry.name}"
                    keys.append(trusted_key(_pem_certificate(archive.read(entry, max_size=1 << 20), where), where))
    except UsageError:
        raise
    except SealgateError as exc:
        raise UsageError(f"{path} is not a readable otacerts.zip: {exc}") from None
    return keys


def _pem_certificate(data: bytes, where: str) -> Certificate:
    from asn1crypto import pem

    try:
        if pem.detect(data):
            _, _, data = pem.unarmor(data)
        return Certificate.from_der(data)
    except (ValueError, CertificateError) as exc:
        raise UsageError(f"{where} is not an X.509 certificate: {exc}") from None


def verify_package(
    path: str | os.PathLike[str], keys: Sequence[TrustedKey], *, written: RangeDigest | None = None
) -> OtaVerification:
    """Recovery's verdict on the package at `path` with these trusted keys (a report; never raises on bad data).

    `written` is the signer's own digest of what it wrote (see `RangeDigest`); everyone else leaves it out.
    """
    result = OtaVerification(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return result.fail("OTA_UNREADABLE", f"cannot read {os.fspath(path)}: {exc.strerror}")
    try:
        return _verify(fd, keys, result, written)
    finally:
        os.close(fd)


def _verify(
    fd: int, keys: Sequence[TrustedKey], result: OtaVerification, written: RangeDigest | None
) -> OtaVerification:
    length = os.fstat(fd).st_size
    if length < FOOTER_SIZE:
        return result.fail("OTA_TOO_SMALL", "the file is too small to hold a whole-file signature footer")
    footer = os.pread(fd, FOOTER_SIZE, length - FOOTER_SIZE)
    if footer[2:4] != b"\xff\xff":
        return result.fail("OTA_NO_SIGNATURE", "the package has no whole-file signature footer (not signed with -w)")
    comment_size = footer[4] | footer[5] << 8
    signature_start = footer[0] | footer[1] << 8
    if signature_start > comment_size:
        return result.fail(
            "OTA_BAD_FOOTER",
            f"the signature starts {signature_start} bytes from the end, past the {comment_size}-byte comment",
        )
    if signature_start <= FOOTER_SIZE:
        return result.fail("OTA_BAD_FOOTER", "the signature would start inside the footer")
    eocd_size = comment_size + EOCD_HEADER_SIZE
    if length < eocd_size:
        return result.fail("OTA_BAD_FOOTER", "the file is too small for the end record the footer describes")
    signed_length = length - comment_size - 2
    eocd = os.pread(fd, eocd_size, length - eocd_size)
    if eocd[:4] != EOCD_MAGIC:
        return result.fail("OTA_EOCD_MISMATCH", "the comment size does not lead to the end-of-central-directory record")
    if eocd.find(EOCD_MAGIC, 4, eocd_size) != -1:
        return result.fail(
            "OTA_EOCD_IN_COMMENT",
            "an end-of-central-directory marker appears inside the signed comment: "
            "a ZIP reader could see another archive",
        )
    signature = _signer_info_signature(eocd[eocd_size - signature_start : eocd_size - FOOTER_SIZE])
    if signature is None:
        return result.fail("OTA_NO_SIGNATURE", "the comment holds no PKCS#7 signature recovery can read")
    needed = {key.hash_name for key in keys}
    known: dict[str, bytes] = {}
    if written is not None and written.length == signed_length and written.hash_name in needed:
        known[written.hash_name] = written.digest
    digests = {**_digests(fd, signed_length, needed - known.keys()), **known}
    for key in keys:
        if _verifies(key, digests[key.hash_name], signature):
            result.verified = True
            result.signer = key.certificate
            return result
    return result.fail("OTA_SIGNATURE_MISMATCH", "no trusted key verifies the whole-file signature")


def _signer_info_signature(block: bytes) -> bytes | None:
    """The first SignerInfo's signature, where recovery's read_pkcs7 finds it (no signed attributes)."""
    from asn1crypto import cms

    try:
        info = cms.ContentInfo.load(block)
        if info["content_type"].native != "signed_data":
            return None
        signer_infos = info["content"]["signer_infos"]
        if len(signer_infos) == 0 or signer_infos[0]["signed_attrs"].native is not None:
            return None
        signature = signer_infos[0]["signature"].native
    except (ValueError, TypeError, KeyError):
        return None
    return signature if isinstance(signature, bytes) else None


def _digests(fd: int, length: int, hash_names: set[str]) -> dict[str, bytes]:
    """Each needed hash of the first `length` bytes, all in one pass over the map (a thread per hash)."""
    hashers = {name: hashlib.new(name) for name in sorted(hash_names)}
    if length == 0 or not hashers:
        return {name: hasher.digest() for name, hasher in hashers.items()}
    with FileRanges(fd, length) as ranges:
        for offset in range(0, length, _STEP):
            with ranges.view(offset, min(_STEP, length - offset)) as view:
                if len(hashers) == 1:
                    next(iter(hashers.values())).update(view)
                else:
                    threads = [threading.Thread(target=hasher.update, args=(view,)) for hasher in hashers.values()]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
    return {name: hasher.digest() for name, hasher in hashers.items()}


def _verifies(key: TrustedKey, digest: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    algorithm = hashes.SHA1() if key.hash_name == "sha1" else hashes.SHA256()
    public = key.certificate.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
            return True
        if isinstance(public, ec.EllipticCurvePublicKey) and key.hash_name == "sha256":
            public.verify(signature, digest, ec.ECDSA(Prehashed(algorithm)))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
