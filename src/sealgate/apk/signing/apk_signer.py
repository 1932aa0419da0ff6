"""Signing an APK: the one entry point, `sign_apk`.

The steps are apksigner's, arranged so that the APK is read and written once and never held in memory:

1. open the input strictly (an APK Android would refuse is refused here too) and settle the schemes and signers;
2. copy the entries into a temporary file beside the output, re-aligned; meanwhile the other cores compute the JAR
   digests of their uncompressed data and the v2/v3 chunk digests of the output, each chunk as soon as the copy has
   passed it (`streaming_digest`);
3. add the JAR signature (v1), pad the entries to a 4096-byte page, lay out the central directory, and hash what
   is left: the last chunks, the central directory and the end record;
4. sign the v2, v3 and v3.1 blocks over those digests, then write the APK Signing Block, the central directory and
   the end record;
5. check the result (`self_check`: strict ZIP structure, the blocks' signatures and digests, the JAR files, the
   identity by the verifier's rules, without hashing the gigabytes again; or the full `verify_apk` with
   `verify_output`), check it names exactly the signers (and lineage) that were meant, fsync it (it has been
   flushed in the background since the copy began) and only then rename it into place.

A failure at any step leaves no output file behind. Given the same input and keys the output is byte-identical,
except for the randomized signatures of ECDSA and DSA keys: no clock is read, and new entries carry the newest
timestamp already in the APK.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from sealgate.apk.algorithms import ContentDigest
from sealgate.apk.content_digest import bytes_chunk_digests
from sealgate.apk.lineage import Lineage
from sealgate.apk.manifest import read_manifest
from sealgate.apk.signing import block, jar
from sealgate.apk.signing.key_algorithms import block_algorithm, jar_algorithm
from sealgate.apk.signing.options import (
    ANDROID_N,
    ANDROID_P,
    ANDROID_T,
    ApkSigningOptions,
    SigningPlan,
    V3Signer,
    plan_signing,
)
from sealgate.apk.signing.output import AtomicOutput
from sealgate.apk.signing.self_check import WrittenApk, check_output
from sealgate.apk.signing.streaming_digest import HeadDigests, StreamingDigest, file_chunk_digests
from sealgate.apk.signing.writer import Layout, ZipWriter
from sealgate.apk.verifier import ApkVerification, verify_apk
from sealgate.errors import ApkFormatError, ApkSigningError, ZipFormatError
from sealgate.signing import Signer
from sealgate.ziparchive import ZipArchive, ZipEntry, not_a_zip_reason

#: A source-stamp pointer describes the signatures it was made with; apksigner drops it when it re-signs.
SOURCE_STAMP_ENTRY = "stamp-cert-sha256"
#: Each JAR digest worker holds a few MiB of entry data at a time; the cap keeps memory bounded on big machines.
_MAX_DIGEST_WORKERS = 8
#: Bound on the input META-INF/MANIFEST.MF whose main section is carried over.
_MAX_SOURCE_MANIFEST = 64 * 1024 * 1024


def sign_apk(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    signers: Sequence[Signer],
    options: ApkSigningOptions = ApkSigningOptions(),  # noqa: B008 - frozen, so sharing the default is safe
) -> ApkVerification:
    """Sign `input_path` into `output_path` and return the report on the result (see `self_check`).

    `signers` are independent v1/v2 signers, or with `options.lineage` points of the rotation history (oldest
    first; the oldest signs v1/v2, the newest v3). Raises UsageError for options that cannot work, ApkFormatError
    for an input that is not an APK Android would install, and ApkSigningError when the output cannot be written
    or fails its check; in every such case nothing is left at `output_path` (an existing file stays as it was).
    """
    archive = _open(input_path)
    with archive:
        manifest = read_manifest(archive)
        plan = plan_signing(options, signers, manifest.min_sdk)
        # Every key's algorithms are settled before a byte is written: a key that cannot sign fails fast.
        jar_signers = _jar_signers(plan)
        for signer in (*plan.v2_signers, *(record.signer for record in (*plan.v3_signers, *plan.v31_signers))):
            block_algorithm(signer)
        with AtomicOutput(output_path) as output:
            try:
                written = _write_signed(archive, output, plan, jar_signers, options)
                if options.verify_output:
                    report = verify_apk(output.temp_path, min_sdk=plan.min_sdk, max_sdk=plan.max_sdk)
                else:
                    report = check_output(output.temp_path, plan, written)
            except OSError as exc:
                raise ApkSigningError(
                    f"cannot sign {os.fspath(input_path)} into {output.path}: {exc.strerror}"
                ) from exc
            _check_result(report, plan)
            output.commit()
    report.path = os.fspath(output_path)
    return report


def _open(path: str | os.PathLike[str]) -> ZipArchive:
    try:
        archive = ZipArchive.open(path)
    except ZipFormatError as exc:
        raise ApkFormatError(f"{os.fspath(path)}: malformed APK, {not_a_zip_reason(exc)}") from exc
    if archive.sections.zip64_eocd_offset is not None:
        archive.close()
        raise ApkFormatError(f"{os.fspath(path)}: ZIP64 APKs cannot carry APK signatures")
    if archive.violations:
        message = archive.violations[0].message
        archive.close()
        raise ApkFormatError(f"{os.fspath(path)}: {message}; Android refuses such an APK, so it is not signed")
    return archive


def _write_signed(
    archive: ZipArchive,
    output: AtomicOutput,
    plan: SigningPlan,
    jar_signers: list[jar.JarSigner],
    options: ApkSigningOptions,
) -> WrittenApk:
    out_fd = output.fd
    kept = _kept_entries(archive)
    block_signers = _block_signers(plan)
    needed = sorted({item.algorithm.apk.content_digest for items in block_signers for item in items}, key=int)
    signs_blocks = plan.v2 or plan.v3
    with ThreadPoolExecutor(
        max_workers=min(os.cpu_count() or 1, _MAX_DIGEST_WORKERS), thread_name_prefix="apk-sign"
    ) as pool:
        # The JAR digests of the input's entries and the v2/v3 chunks of the output are hashed on the other
        # cores while this thread copies: the chunks as soon as the copy has passed them.
        stream = StreamingDigest(out_fd, needed if signs_blocks else (), pool)
        writer = ZipWriter(
            archive, out_fd, alignment=options.alignment, page_alignment=options.page_alignment, progress=stream.advance
        )
        digests: list[Future[list[tuple[str, bytes]]]] = []
        digest_name = ""
        if jar_signers:
            digest_name = jar.content_digest_name(signer.algorithm for signer in jar_signers)
            digests = [pool.submit(jar.digest_batch, archive, batch, digest_name) for batch in jar.entry_batches(kept)]
        # The disk writes the output while it is copied, hashed, signed and checked, not after.
        output.start_writeback()
        try:
            writer.copy_entries(kept)
            entry_digests = dict(pair for future in digests for pair in future.result())
            files: list[tuple[str, bytes]] = []
            if jar_signers:
                source_manifest = _source_manifest(archive)
                files = jar.sign_jar(jar_signers, entry_digests, digest_name, plan.scheme_ids, source_manifest)
                for name, data in files:
                    writer.add_deflated(name, data)
            layout = writer.layout(page_align=signs_blocks)
            signing_block: bytes | None = None
            head: HeadDigests | None = None
            content_digests: dict[ContentDigest, bytes] = {}
            if signs_blocks:
                writer.write_at(layout.entries_end, bytes(layout.before_block - layout.entries_end))
                head, content_digests = _finish_digests(stream, out_fd, layout)
                signing_block = _signing_block(plan, block_signers, content_digests)
                tail = signing_block + layout.central_directory
                writer.write_at(
                    layout.before_block, tail + layout.eocd_with_cd_offset(layout.before_block + len(signing_block))
                )
            else:
                cd_offset = layout.entries_end
                writer.write_at(cd_offset, layout.central_directory + layout.eocd_with_cd_offset(cd_offset))
        finally:
            for future in digests:
                future.cancel()
            stream.cancel()
    return WrittenApk(
        layout=layout,
        signed_entries=tuple(entry_digests),
        jar_files=tuple(files),
        jar_signers=tuple(jar_signers),
        signing_block=signing_block,
        head=head,
        digests=content_digests,
    )


def _finish_digests(
    stream: StreamingDigest, out_fd: int, layout: Layout
) -> tuple[HeadDigests, dict[ContentDigest, bytes]]:
    """Hash what the copy left (the last chunks, with the JAR files), the central directory and the end record."""
    # The tail is hashed by this thread while the pool finishes the chunks the copy passed.
    algorithms = stream.algorithms
    start = stream.submitted
    tail = [
        file_chunk_digests(out_fd, start, layout.before_block - start, algorithms),
        bytes_chunk_digests(layout.central_directory, algorithms),
        bytes_chunk_digests(layout.eocd_with_cd_offset(layout.before_block), algorithms),
    ]
    head = stream.head()
    return head, head.content_digests(tail)


_BlockSigners = tuple[list[block.BlockSigner], list[block.BlockSigner], list[block.BlockSigner]]


def _block_signers(plan: SigningPlan) -> _BlockSigners:
    """The v2, v3 and v3.1 signers, each with the algorithm its key signs blocks with."""
    return (
        [block.BlockSigner(signer, block_algorithm(signer)) for signer in plan.v2_signers],
        [_v3_block_signer(record) for record in plan.v3_signers],
        [_v3_block_signer(record) for record in plan.v31_signers],
    )


def _signing_block(plan: SigningPlan, signers: _BlockSigners, digests: dict[ContentDigest, bytes]) -> bytes:
    v2_signers, v3_signers, v31_signers = signers
    return block.signing_block(
        block.scheme_pairs(
            block.v2_block(v2_signers, digests, v3_signed=plan.v3) if v2_signers else None,
            block.v3_block(v31_signers, digests) if v31_signers else None,
            block.v3_block(v3_signers, digests) if v3_signers else None,
        )
    )


def _jar_signers(plan: SigningPlan) -> list[jar.JarSigner]:
    names = jar.signer_names(plan.v1_signers)
    return [
        jar.JarSigner(signer, name, jar_algorithm(signer, plan.min_sdk))
        for signer, name in zip(plan.v1_signers, names, strict=True)
    ]


def _source_manifest(archive: ZipArchive) -> bytes | None:
    entry = archive.entry(jar.MANIFEST_NAME)
    if entry is None:
        return None
    return archive.read(entry, max_size=_MAX_SOURCE_MANIFEST)


def _v3_block_signer(record: V3Signer) -> block.BlockSigner:
    return block.BlockSigner(
        record.signer,
        block_algorithm(record.signer),
        record.min_sdk,
        record.max_sdk,
        record.lineage,
        record.rotation_min_sdk,
    )


def _check_result(report: ApkVerification, plan: SigningPlan) -> None:
    """The output must verify, and name the signers and lineage we signed with, before it replaces anything."""
    if not report.verified:
        problems = "; ".join(f"{issue.code}: {issue.message}" for issue in report.errors[:3])
        raise ApkSigningError(f"the signed APK does not verify, so it was not written: {problems}")
    expected, lineage = _expected_identity(plan)
    actual = sorted(certificate.der for certificate in report.signers)
    if actual != sorted(signer.certificate.der for signer in expected):
        raise ApkSigningError("the signed APK verifies but names other signers than the ones it was signed with")
    actual_lineage = [node.certificate.der for node in report.lineage.nodes] if report.lineage is not None else None
    expected_lineage = [node.certificate.der for node in lineage.nodes] if lineage is not None else None
    if actual_lineage != expected_lineage:
        raise ApkSigningError("the signed APK verifies but carries another lineage than the one it was signed with")


def _expected_identity(plan: SigningPlan) -> tuple[tuple[Signer, ...], Lineage | None]:
    """Who Android uses at the newest SDK level of the window: v3.1, else v3, else v2, else v1 signers."""
    for records, first_level in ((plan.v31_signers, ANDROID_T), (plan.v3_signers, ANDROID_P)):
        covering = [r for r in records if r.min_sdk <= plan.max_sdk <= r.max_sdk and plan.max_sdk >= first_level]
        if covering:
            return (covering[0].signer,), covering[0].lineage
    if plan.v2 and plan.max_sdk >= ANDROID_N:
        return plan.v2_signers, None
    return plan.v1_signers, None


def _kept_entries(archive: ZipArchive) -> list[ZipEntry]:
    """The input entries the signed copy keeps: what the JAR signature covers, minus a stale source stamp."""
    return [entry for entry in archive.entries if jar.is_signed_entry(entry.name) and entry.name != SOURCE_STAMP_ENTRY]
