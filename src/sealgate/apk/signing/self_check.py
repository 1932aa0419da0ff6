"""The signer's check of its own output, before the output replaces anything: cheap, and still a proof.

`verify_apk` on the output would hash the whole APK twice more (the v2/v3 chunks and every JAR entry), doubling the
cost of signing to learn what the signer already knows: it hashed the output's chunks from the file while writing
it, and the JAR digests from the entries it copied byte for byte. What can still go wrong is in what was written
last or laid out by offset, and that is what is checked here, from the file as it now is:

* the output opens with the strict ZIP reader: every local header agrees with its central record, no violation;
* its central directory and end record are byte for byte the ones laid out, at the offsets laid out;
* the APK Signing Block is the one built, where it was meant to be; the part of the output hashed after the copy
  (JAR files, padding) and the central directory and end record are hashed again, and with the chunk digests taken
  during the copy they give exactly the content digests that were signed; every v2/v3/v3.1 block the verifier would
  check in the SDK window is parsed and its signatures verified by the verifier's own code, against those digests;
* the JAR signature files read back as written, the manifest lists exactly the signed entries, the .SF digests the
  manifest, and each PKCS #7 block verifies over the .SF with the signer's certificate;
* the verdict and the identity (signers, lineage, signers by SDK level) come from the verifier's own rules.

`ApkSigningOptions(verify_output=True)` runs the full `verify_apk` instead, for those who want the gigabytes read.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sealgate.apk import jar_manifest, pkcs7
from sealgate.apk.algorithms import ContentDigest
from sealgate.apk.certificate import CertificateError
from sealgate.apk.content_digest import bytes_chunk_digests
from sealgate.apk.report import Scheme, SchemeResult, SignerResult
from sealgate.apk.signing import jar
from sealgate.apk.signing.options import ANDROID_N, ANDROID_P, ANDROID_T, SigningPlan
from sealgate.apk.signing.streaming_digest import HeadDigests, file_chunk_digests
from sealgate.apk.signing.writer import Layout
from sealgate.apk.signing_block import V2_BLOCK_ID, V3_BLOCK_ID, V31_BLOCK_ID, SigningBlock, locate_signing_block
from sealgate.apk.v2v3 import parse_scheme_block
from sealgate.apk.verifier import ApkVerification, judge_scheme_results
from sealgate.errors import ApkFormatError, ApkSigningError, ZipFormatError
from sealgate.ziparchive import EOCD_SIZE, ZipArchive


@dataclass(frozen=True)
class WrittenApk:
    """What the signer laid out and signed, for the check to compare the file with."""

    layout: Layout
    #: The entries MANIFEST.MF must list (the kept entries), and the JAR files added, as (name, bytes).
    signed_entries: tuple[str, ...]
    jar_files: tuple[tuple[str, bytes], ...]
    jar_signers: tuple[jar.JarSigner, ...]
    #: The APK Signing Block written before the central directory, None without v2/v3.
    signing_block: bytes | None
    #: Chunk digests taken during the copy, and the content digests the blocks signed.
    head: HeadDigests | None
    digests: dict[ContentDigest, bytes]

    @property
    def cd_offset(self) -> int:
        if self.signing_block is None:
            return self.layout.entries_end
        return self.layout.before_block + len(self.signing_block)


def check_output(path: Path, plan: SigningPlan, written: WrittenApk) -> ApkVerification:
    """The report on the output at `path`, or ApkSigningError naming the first thing that is not as meant."""
    try:
        archive = ZipArchive.open(path)
    except ZipFormatError as exc:
        raise _failed(f"it does not read back as a ZIP archive: {exc}") from exc
    with archive:
        if archive.violations:
            raise _failed(archive.violations[0].message)
        _check_directory(archive, written)
        report = ApkVerification(os.fspath(path), plan.min_sdk, plan.max_sdk)
        found: set[int] = set()
        if written.signing_block is not None:
            found = _check_blocks(archive, plan, written, report)
        if written.jar_files:
            _check_jar(archive, plan, written, report, found)
        try:
            judge_scheme_results(report, archive)
        except ApkFormatError as exc:
            raise _failed(str(exc)) from exc
    if not report.verified:
        problems = "; ".join(f"{issue.code}: {issue.message}" for issue in report.errors[:3])
        raise _failed(problems or "it does not verify")
    return report


def _failed(reason: str) -> ApkSigningError:
    return ApkSigningError(f"the signed APK failed its self-check, so it was not written: {reason}")


def _check_directory(archive: ZipArchive, written: WrittenApk) -> None:
    sections = archive.sections
    layout = written.layout
    if sections.cd_offset != written.cd_offset or sections.cd_size != len(layout.central_directory):
        raise _failed("the central directory is not where it was laid out")
    if archive.pread(sections.cd_offset, sections.cd_size) != layout.central_directory:
        raise _failed("the central directory differs from the one laid out")
    eocd = layout.eocd_with_cd_offset(written.cd_offset)
    if sections.eocd_offset + len(eocd) != sections.file_size or archive.pread(sections.eocd_offset, len(eocd)) != eocd:
        raise _failed("the end of central directory record differs from the one laid out")


def _check_blocks(archive: ZipArchive, plan: SigningPlan, written: WrittenApk, report: ApkVerification) -> set[int]:
    """Signatures and digests of the v2/v3/v3.1 blocks the verifier would check; returns the schemes found."""
    assert written.signing_block is not None and written.head is not None
    block, reason = locate_signing_block(archive)
    layout = written.layout
    if block is None or block.offset != layout.before_block:
        raise _failed(f"the APK Signing Block is not where it was written: {reason or 'wrong offset'}")
    if archive.pread(block.offset, len(written.signing_block)) != written.signing_block:
        raise _failed("the APK Signing Block differs from the one built")
    actual = _content_digests(archive, block, written)
    if actual != written.digests:
        raise _failed("the APK's contents changed after they were hashed for signing")
    phases = []
    rotation_min_sdk: int | None = None
    found: set[int] = set()
    if plan.v31_signers and plan.max_sdk >= ANDROID_T and (v31 := block.find(V31_BLOCK_ID)) is not None:
        phases.append(parse_scheme_block(Scheme.V31, v31, max(plan.min_sdk, ANDROID_T), plan.max_sdk))
        rotation_min_sdk = min(record.min_sdk for record in plan.v31_signers)
        found.add(int(Scheme.V31))
    if plan.v3 and plan.max_sdk >= ANDROID_P and (v3 := block.find(V3_BLOCK_ID)) is not None:
        phases.append(
            parse_scheme_block(
                Scheme.V3, v3, max(plan.min_sdk, ANDROID_P), plan.max_sdk, rotation_min_sdk=rotation_min_sdk
            )
        )
        found.add(int(Scheme.V3))
    v2_needed = plan.min_sdk < ANDROID_P or not found
    if plan.v2 and plan.max_sdk >= ANDROID_N and v2_needed and (v2 := block.find(V2_BLOCK_ID)) is not None:
        phases.append(
            parse_scheme_block(
                Scheme.V2,
                v2,
                max(plan.min_sdk, ANDROID_N),
                plan.max_sdk,
                found_scheme_ids=frozenset(found),
                supported_scheme_ids=frozenset({2, 3}) if plan.max_sdk >= ANDROID_P else frozenset({2}),
            )
        )
        found.add(int(Scheme.V2))
    for phase in phases:
        needed = {algorithm: actual[algorithm] for algorithm in phase.digests_needed if algorithm in actual}
        if phase.digests_needed - needed.keys():
            raise _failed(f"the {phase.result.scheme.label} block needs a digest that was not computed")
        report.scheme_results[phase.result.scheme] = phase.finish(needed)
    return found


def _content_digests(archive: ZipArchive, block: SigningBlock, written: WrittenApk) -> dict[ContentDigest, bytes]:
    """Hash again what was hashed after the copy, from the file, and complete the digests taken during it."""
    assert written.head is not None
    head = written.head
    algorithms = head.algorithms
    sections = archive.sections
    eocd = bytearray(archive.pread(sections.eocd_offset, EOCD_SIZE + len(sections.comment)))
    eocd[16:20] = block.offset.to_bytes(4, "little")
    fd = archive.fileno
    tail = [
        file_chunk_digests(fd, head.end, block.offset - head.end, algorithms),
        file_chunk_digests(fd, sections.cd_offset, sections.cd_size, algorithms),
        bytes_chunk_digests(bytes(eocd), algorithms),
    ]
    return head.content_digests(tail)


def _check_jar(
    archive: ZipArchive, plan: SigningPlan, written: WrittenApk, report: ApkVerification, found: set[int]
) -> None:
    """The JAR files read back as written, parse, and their PKCS #7 blocks verify with the intended certificates."""
    files = dict(written.jar_files)
    for name, data in written.jar_files:
        entry = archive.entry(name)
        if entry is None or archive.read(entry, max_size=len(data)) != data:
            raise _failed(f"{name} does not read back as it was written")
    manifest = files[jar.MANIFEST_NAME]
    _, sections = jar_manifest.parse(manifest)
    if sorted(section.name or "" for section in sections) != sorted(written.signed_entries):
        raise _failed(f"{jar.MANIFEST_NAME} does not list exactly the signed entries")
    window = _jar_window(plan, found)
    low, high = window or (plan.min_sdk, plan.max_sdk)
    result = SchemeResult(Scheme.V1, present=True)
    for index, jar_signer in enumerate(written.jar_signers):
        signature_file = files[f"{jar.META_INF}{jar_signer.name}.SF"]
        block_name = f"{jar_signer.name}.{jar_signer.algorithm.key_type}"
        _check_signature_file(signature_file, manifest, block_name)
        signer = SignerResult(index=index, name=block_name)
        try:
            signed_data = pkcs7.parse_signed_data(files[f"{jar.META_INF}{block_name}"])
            certificates = pkcs7.parse_certificates(signed_data.certificates)
            certificate = (
                pkcs7.verify_signer_info(
                    signed_data, certificates, signed_data.signer_infos[0], signature_file, low, high
                )
                if signed_data.signer_infos
                else None
            )
        except (ApkFormatError, CertificateError) as exc:
            raise _failed(f"{block_name} does not verify: {exc}") from exc
        if certificate is None or certificate.der != jar_signer.signer.certificate.der:
            raise _failed(f"{block_name} does not verify with the certificate of key {jar_signer.signer.name!r}")
        signer.certificates = [certificate]
        signer.verified_algorithms = [jar_signer.algorithm.digest]
        result.signers.append(signer)
    if window is not None:
        report.scheme_results[Scheme.V1] = result


def _check_signature_file(signature_file: bytes, manifest: bytes, block_name: str) -> None:
    """The .SF must digest the manifest that was written (SHA-256, or SHA-1 for the oldest platforms)."""
    main, _ = jar_manifest.parse(signature_file)
    for attribute, hash_function in (
        ("SHA-256-Digest-Manifest", hashlib.sha256),
        ("SHA1-Digest-Manifest", hashlib.sha1),
    ):
        value = main.get(attribute) if main is not None else None
        if value is not None and value == base64.b64encode(hash_function(manifest).digest()).decode("ascii"):
            return
    raise _failed(f"the .SF beside {block_name} does not digest the manifest that was written")


def _jar_window(plan: SigningPlan, found: set[int]) -> tuple[int, int] | None:
    """The levels on which the verifier checks the JAR signature (its `_jar_window` rule)."""
    if plan.min_sdk < ANDROID_N or not found:
        return plan.min_sdk, plan.max_sdk
    if plan.min_sdk < ANDROID_P and int(Scheme.V2) not in found:
        return plan.min_sdk, min(plan.max_sdk, ANDROID_P - 1)
    return None
