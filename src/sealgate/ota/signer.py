"""Signing an OTA package with a whole-file signature, in the form `signapk -w` writes and recovery verifies.

The entries are copied as they are (raw compressed bytes, byte for byte, through the APK signer's ZIP writer with
no alignment), minus old signature files (META-INF/*.SF|RSA|DSA|EC, MANIFEST.MF, com/android/otacert) and
directories; META-INF/com/android/otacert (the signing certificate, PEM) is added last, as signapk adds it. The
signature covers every byte up to the end record's central-directory offset field, and the archive comment is
signapk's: "signed by SignApk", NUL, a detached PKCS#7 SignedData (one certificate, no signed attributes), and the
6-byte footer. The hash is the one the certificate's own signature algorithm names (recovery checks with that
one): SHA-1 for sha1/md5WithRSA certificates, SHA-256 otherwise; RSA keys sign PKCS#1 v1.5, EC keys ECDSA.

Unlike signapk, the entries are not rewritten (sorted, recompressed, re-stamped): the package's bytes stay as the
build made them, so the signed package hashes the same on every machine, and the offsets an A/B package's property
files name stay right (a package in which dropping an old signature file would move them is refused). The output
is checked with the verifier (`whole_file.verify_package`) before it replaces anything.

The package is read and written once: the entries are copied file to file by the kernel (`copy_file_range`) in
1 MiB steps while another thread hashes the output right behind the copy (`range_hasher`), and the verifier's check
uses that digest of the file as written instead of hashing the gigabytes again; signing costs about one copy and
one hash pass, overlapped on two cores.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from asn1crypto import algos
from asn1crypto import core as asn1_core
from asn1crypto import pem as asn1_pem

from sealgate.apk.signing.jar import detached_signed_data
from sealgate.apk.signing.output import AtomicOutput
from sealgate.apk.signing.writer import ZipWriter
from sealgate.errors import OtaFormatError, SealgateError, UsageError
from sealgate.ota.range_hasher import HASH_STEP, FollowingHasher
from sealgate.ota.whole_file import (
    EOCD_HEADER_SIZE,
    EOCD_MAGIC,
    FOOTER_SIZE,
    OtaVerification,
    RangeDigest,
    trusted_key,
    verify_package,
)
from sealgate.signing import Signer, SigningAlgorithm
from sealgate.ziparchive import ZipArchive, not_a_zip_reason

OTACERT = "META-INF/com/android/otacert"
#: signapk's STRIP_PATTERN: signature files a re-signed package must not keep.
_STRIP = re.compile(r"^(META-INF/((.*)[.](SF|RSA|DSA|EC)|com/android/otacert))|(META-INF/MANIFEST\.MF)$")
_MESSAGE = b"signed by SignApk\x00"
_MAX_COMMENT = 0xFFFF
#: The end record up to its comment length field: the last bytes the signature covers.
_SIGNED_EOCD_SIZE = EOCD_HEADER_SIZE - 2


def sign_package(
    input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], signer: Signer
) -> OtaVerification:
    """Sign `input_path` into `output_path` with `signer`; the verifier's report on the result."""
    key = trusted_key(signer.certificate, f"key {signer.name!r}")  # the certificate recovery will trust
    algorithm = _algorithm(signer, key.hash_name)
    try:
        archive = ZipArchive.open(input_path)
    except SealgateError as exc:
        raise OtaFormatError(f"{os.fspath(input_path)}: {not_a_zip_reason(exc)}") from None
    with archive, AtomicOutput(output_path) as output:
        if archive.violations:
            raise OtaFormatError(f"{os.fspath(input_path)}: {archive.violations[0].message}")
        output.start_writeback()
        writer = ZipWriter(archive, output.fd, alignment=1, page_alignment=1, copy_step=HASH_STEP)
        signed_length, digest = _write_signed_range(writer, archive, _certificate_pem(signer), key.hash_name)
        block = _signature_block(signer, algorithm, digest, key.hash_name)
        comment = _MESSAGE + block
        comment += struct.pack("<HBBH", len(block) + FOOTER_SIZE, 0xFF, 0xFF, len(comment) + FOOTER_SIZE)
        if len(comment) > _MAX_COMMENT:
            raise OtaFormatError("the signature is too large for a ZIP comment")
        if EOCD_MAGIC in comment:
            raise OtaFormatError("the signature happens to contain an end-of-central-directory marker; sign again")
        writer.write_at(signed_length, struct.pack("<H", len(comment)) + comment)
        _check_property_files_kept(archive, output.temp_path)
        # The full verdict on the file as it now is; only the hash of the signed range is the one taken while it
        # was written, from the file itself (hashing 2 GB again would prove nothing more).
        result = verify_package(output.temp_path, [key], written=RangeDigest(signed_length, key.hash_name, digest))
        if not result.verified:
            problems = "; ".join(issue.message for issue in result.errors)
            raise OtaFormatError(f"the signed package does not verify, so it was not written: {problems}")
        output.commit()
    result.path = os.fspath(output_path)
    return result


def _check_property_files_kept(archive: ZipArchive, signed: Path) -> None:
    """Entries are copied in place, but dropping an old signature file or a directory in front of them moves the
    rest: refuse a result in which a property-files token that was right no longer is (a device streaming the
    package would read the wrong bytes); such a package must be built again."""
    from sealgate.ota.info import text_property_files

    def matching(opened: ZipArchive) -> set[tuple[str, str]]:
        tokens = text_property_files(opened)
        return {(key, token.name) for key, items in tokens.items() for token in items if token.matches}

    with ZipArchive.open(signed) as output:
        moved = matching(archive) - matching(output)
    if moved:
        names = ", ".join(sorted({name for _, name in moved}))
        raise OtaFormatError(
            f"signing would move entries the property files point at ({names}): old signature files or directories "
            "lie before them; build the package again (sealgate ota package) and sign that"
        )


def _write_signed_range(
    writer: ZipWriter, archive: ZipArchive, certificate_pem: bytes, hash_name: str
) -> tuple[int, bytes]:
    """Write everything the signature covers, hashing it meanwhile: (signed length, digest).

    The end record's first 20 bytes (up to the comment length) are written here too and hashed from the file like
    the rest, so every signed byte is hashed as the file holds it; the comment length and the comment follow.
    """
    hasher = FollowingHasher(writer.fd, hash_name)
    writer.progress = hasher.advance
    try:
        kept = [entry for entry in archive.entries if not entry.is_directory and kept_entry(entry.name)]
        writer.copy_entries(kept)
        writer.add_deflated(OTACERT, certificate_pem)
        layout = writer.layout(page_align=False)
        cd_offset = layout.entries_end
        signed_tail = layout.eocd_with_cd_offset(cd_offset)[:_SIGNED_EOCD_SIZE]
        writer.write_at(cd_offset, layout.central_directory + signed_tail)
        signed_length = cd_offset + len(layout.central_directory) + len(signed_tail)
        return signed_length, hasher.finish(signed_length)
    finally:
        writer.progress = None
        hasher.cancel()


def _algorithm(signer: Signer, hash_name: str) -> SigningAlgorithm:
    wanted = {
        ("RSA", "sha1"): SigningAlgorithm.RSA_PKCS1_SHA1,
        ("RSA", "sha256"): SigningAlgorithm.RSA_PKCS1_SHA256,
        ("EC", "sha256"): SigningAlgorithm.ECDSA_SHA256,
    }
    key_types = {algorithm.key_type for algorithm in signer.algorithms()}
    for (key_type, name), algorithm in wanted.items():
        if name == hash_name and key_type in key_types and algorithm in signer.algorithms():
            return algorithm
    raise UsageError(f"key {signer.name!r} cannot make a {hash_name} whole-file signature recovery accepts")


def _certificate_pem(signer: Signer) -> bytes:
    return bytes(asn1_pem.armor("CERTIFICATE", signer.certificate.der))


def kept_entry(name: str) -> bool:
    """Whether signing carries an entry over (signapk's STRIP_PATTERN drops old signature files and otacert)."""
    return not name.endswith("/") and not _STRIP.match(name)


def _signature_block(signer: Signer, algorithm: SigningAlgorithm, digest: bytes, hash_name: str) -> bytes:
    """signapk's detached SignedData: one certificate, no signed attributes (recovery reads none)."""
    digest_algorithm = algos.DigestAlgorithm({"algorithm": hash_name})
    if algorithm is SigningAlgorithm.ECDSA_SHA256:
        signature_algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    else:
        signature_algorithm = algos.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pkcs1v15" if hash_name == "sha1" else "sha256_rsa", "parameters": asn1_core.Null()}
        )
    return detached_signed_data(signer, digest_algorithm, signature_algorithm, signer.sign_digest(digest, algorithm))


def signed_range(path: Path) -> bytes:
    """The bytes a whole-file signature covers (for checking it with another tool, such as openssl cms)."""
    data = path.read_bytes()
    comment_size = data[-2] | data[-1] << 8
    return data[: len(data) - comment_size - 2]
