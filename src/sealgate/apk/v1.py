"""APK Signature Scheme v1 (JAR signing) verification, deciding exactly as apksig's V1SchemeVerifier decides.

An APK is JAR-signed when META-INF/MANIFEST.MF lists a digest of every entry, and each signer's .SF file digests the
manifest (or its sections) and is itself signed by a PKCS #7 block (.RSA, .DSA or .EC). Android's rules differ from
the JAR specification, and they change with the API level, so every check takes the SDK window [min_sdk, max_sdk]
the APK must verify on and fails if any platform in it would reject the APK:

1. no duplicate entry names; a manifest; manifest sections all named, unique and naming existing entries;
2. 1 to 10 signers (a block file with a matching .SF); each block's SignedData verifies against its .SF with an
   algorithm pair every platform in the window supports (before API 24 only the first SignerInfo is tried);
3. each .SF has Signature-Version; from API 24 its X-Android-APK-Signed attribute must not name an APK signature
   scheme whose block is missing (stripping protection); its digest of the whole manifest, or else of each manifest
   section it lists, verifies; its digest of the manifest's main section, if any, verifies;
4. every entry outside META-INF/ that is not a directory has a manifest section whose digests match its uncompressed
   data, and every such entry is signed by the same set of signers.

Errors make the verdict; warnings (e.g. unprotected files in META-INF/) do not. Signers whose .SF Android would
ignore are reported as warnings (their problems do not fail the APK unless no signer is left), as apksig reports them
as ignored signers. Entry data are hashed on all cores, every needed digest in one pass over each entry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sealgate.apk import jar_manifest, pkcs7
from sealgate.apk.certificate import Certificate, CertificateError
from sealgate.apk.jar_manifest import NamedDigest, Section
from sealgate.apk.report import Issue, Scheme, SchemeResult, SignerResult
from sealgate.errors import UsageError
from sealgate.ziparchive import ZipArchive, ZipEntry

MANIFEST_NAME = "META-INF/MANIFEST.MF"
META_INF = "META-INF/"
MAX_SIGNERS = 10
ANDROID_N = 24
ANDROID_P = 28
SIGNATURE_BLOCK_SUFFIXES = (".RSA", ".DSA", ".EC")
STRIP_PROTECTION_ATTRIBUTE = "X-Android-APK-Signed"
_SCHEME_NAMES = {2: "APK Signature Scheme v2", 3: "APK Signature Scheme v3"}
#: Java's Integer.parseInt takes any Unicode decimal digit (Character.digit), as does \d on str patterns.
_JAVA_INT = re.compile(r"[+-]?\d+")
_JAVA_TRIM = "".join(chr(code) for code in range(0x21))
#: Small entries are digested in batches of about this many compressed bytes (or entries), one task per batch.
_BATCH_BYTES = 4 * 1024 * 1024
_BATCH_ENTRIES = 256


def verify_v1(
    archive: ZipArchive,
    min_sdk: int,
    max_sdk: int,
    *,
    found_apk_sig_scheme_ids: frozenset[int],
) -> SchemeResult:
    """Verify the JAR signature of `archive` for platforms min_sdk..max_sdk.

    `found_apk_sig_scheme_ids` are the APK Signature Scheme IDs (2, 3) whose blocks the caller found in the APK
    Signing Block: a .SF that says the APK was also signed with a scheme missing from it was stripped.
    """
    if min_sdk > max_sdk:
        raise UsageError(f"minSdkVersion ({min_sdk}) > maxSdkVersion ({max_sdk})")
    result = SchemeResult(Scheme.V1)
    entries = [_JarEntry(entry.raw_name.decode("utf-8", errors="replace"), entry) for entry in archive.entries]
    result.present = any(_is_manifest(e.name) or _is_signature_block(e.name) for e in entries)
    verifier = _Verifier(archive, entries, min_sdk, max_sdk, found_apk_sig_scheme_ids, result)
    verifier.run()
    verifier.finish()
    return result


@dataclass(frozen=True, slots=True)
class _JarEntry:
    #: The name as apksig sees it (UTF-8, malformed bytes replaced), which is what the manifest names.
    name: str
    entry: ZipEntry


@dataclass(eq=False)
class _Signer:
    name: str
    block: _JarEntry
    signature_file: _JarEntry
    report: SignerResult
    ignored: bool = False
    sf_bytes: bytes = b""
    sf_entry_names: frozenset[str] = field(default_factory=frozenset)


class _Verifier:
    """One verification; methods follow apksig's stages and stop where it stops."""

    def __init__(
        self,
        archive: ZipArchive,
        entries: list[_JarEntry],
        min_sdk: int,
        max_sdk: int,
        found_ids: frozenset[int],
        result: SchemeResult,
    ) -> None:
        self.archive = archive
        self.entries = entries
        self.min_sdk = min_sdk
        self.max_sdk = max_sdk
        self.found_ids = found_ids
        self.result = result
        self.ignored: list[_Signer] = []

    # -- stages ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        if not self._check_duplicates():
            return
        manifest_entry, sf_entries, block_entries = self._signature_files()
        if manifest_entry is None:
            self.result.error("JAR_SIG_NO_MANIFEST", f"the APK is not JAR-signed: {MANIFEST_NAME} is missing")
            return
        manifest = self.archive.read(manifest_entry.entry)
        main_section, by_name = self._parse_manifest(manifest)
        if self._has_errors():
            return
        signers = self._identify_signers(sf_entries, block_entries)
        if not signers:
            return
        for signer in signers:
            self._verify_signature_block(signer)
            if signer.report.errors:
                self.result.signers.append(signer.report)
        if self._has_errors():
            return
        remaining: list[_Signer] = []
        for signer in signers:
            self._verify_signature_file(signer, manifest, main_section, by_name)
            if signer.ignored:
                self.ignored.append(signer)
            elif signer.report.errors:
                self.result.signers.append(signer.report)
            else:
                remaining.append(signer)
        if self._has_errors():
            return
        if not remaining:
            self.result.error("JAR_SIG_NO_SIGNATURES", "no JAR signature that Android would use is left")
            return
        apk_signers = self._verify_entries(remaining, by_name)
        if self._has_errors():
            return
        self._warn_unprotected(manifest_entry, apk_signers)
        for signer in remaining:
            if signer in apk_signers:
                self.result.signers.append(signer.report)
            else:
                self.ignored.append(signer)

    def finish(self) -> None:
        """Number the signers and turn ignored signers' findings into warnings (they cannot fail the APK)."""
        for index, report in enumerate(self.result.signers):
            report.index = index
        for signer in self.ignored:
            if not signer.report.errors:
                self.result.warn(
                    "JAR_SIG_SIGNER_IGNORED",
                    f"signer {signer.name} signs none of the entries the other signers sign; Android ignores it",
                )
            for issue in [*signer.report.errors, *signer.report.warnings]:
                self.result.warn(issue.code, f"ignored signer {signer.name}: {issue.message}")

    def _has_errors(self) -> bool:
        return bool(self.result.all_errors())

    def _check_duplicates(self) -> bool:
        seen: set[str] = set()
        reported: set[str] = set()
        for jar_entry in self.entries:
            if jar_entry.name in seen and jar_entry.name not in reported:
                reported.add(jar_entry.name)
                self.result.error(
                    "JAR_SIG_DUPLICATE_ZIP_ENTRY", f"entry {jar_entry.name!r} appears more than once in the APK"
                )
            seen.add(jar_entry.name)
        return not reported

    def _signature_files(self) -> tuple[_JarEntry | None, dict[str, _JarEntry], list[_JarEntry]]:
        manifest: _JarEntry | None = None
        sf_entries: dict[str, _JarEntry] = {}
        blocks: list[_JarEntry] = []
        for jar_entry in self.entries:
            name = jar_entry.name
            if not name.startswith(META_INF):
                continue
            if manifest is None and name == MANIFEST_NAME:
                manifest = jar_entry
            elif name.endswith(".SF"):
                sf_entries[name] = jar_entry
            elif name.endswith(SIGNATURE_BLOCK_SUFFIXES):
                blocks.append(jar_entry)
        return manifest, sf_entries, blocks

    def _parse_manifest(self, manifest: bytes) -> tuple[Section | None, dict[str, Section]]:
        main_section, sections = jar_manifest.parse(manifest)
        names = {jar_entry.name for jar_entry in self.entries}
        by_name: dict[str, Section] = {}
        for number, section in enumerate(sections, start=1):
            name = section.name
            if name is None:
                self.result.error(
                    "JAR_SIG_UNNNAMED_MANIFEST_SECTION",
                    f"manifest section #{number} has no Name attribute (an entry name with CR or LF splits sections)",
                )
                continue
            if name in by_name:
                by_name[name] = section
                self.result.error("JAR_SIG_DUPLICATE_MANIFEST_SECTION", f"the manifest has two sections for {name!r}")
                continue
            by_name[name] = section
            if name not in names:
                self.result.error(
                    "JAR_SIG_MISSING_ZIP_ENTRY_REFERENCED_IN_MANIFEST",
                    f"the manifest names {name!r}, which is not in the APK",
                )
        return main_section, by_name

    def _identify_signers(self, sf_entries: dict[str, _JarEntry], blocks: list[_JarEntry]) -> list[_Signer]:
        signers: list[_Signer] = []
        for block in blocks:
            sf_name = block.name[: block.name.rindex(".")] + ".SF"
            sf_entry = sf_entries.get(sf_name)
            if sf_entry is None:
                self.result.warn(
                    "JAR_SIG_MISSING_FILE", f"signature block {block.name} has no signature file {sf_name}; ignored"
                )
                continue
            name = block.name[len(META_INF) :]
            signers.append(_Signer(name, block, sf_entry, SignerResult(index=len(signers), name=name)))
        if not signers:
            self.result.error("JAR_SIG_NO_SIGNATURES", "the APK has no JAR signature (no .RSA/.DSA/.EC with its .SF)")
            return []
        if len(signers) > MAX_SIGNERS:
            self.result.error(
                "JAR_SIG_MAX_SIGNATURES_EXCEEDED",
                f"the APK has {len(signers)} JAR signers; Android accepts at most {MAX_SIGNERS}",
            )
            return []
        return signers

    # -- signature block against .SF -------------------------------------------------------------------------------

    def _verify_signature_block(self, signer: _Signer) -> None:
        report = signer.report
        block_bytes = self.archive.read(signer.block.entry)
        signer.sf_bytes = self.archive.read(signer.signature_file.entry)
        block_name, sf_name = signer.block.name, signer.signature_file.name
        try:
            signed_data = pkcs7.parse_signed_data(block_bytes)
        except pkcs7.Pkcs7FormatError as exc:
            report.error("JAR_SIG_PARSE_EXCEPTION", f"failed to parse {block_name}: {exc}")
            return
        if not signed_data.signer_infos:
            report.error("JAR_SIG_NO_SIGNERS", f"{block_name} contains no SignerInfo")
            return
        # Before Android N only the first SignerInfo is tried; from N on, the first that verifies is used.
        candidates = signed_data.signer_infos[:1] if self.min_sdk < ANDROID_N else signed_data.signer_infos
        certificates: list[Certificate] | None = None
        verified: tuple[pkcs7.SignerInfo, Certificate] | None = None
        for signer_info in candidates:
            if certificates is None:
                try:
                    certificates = pkcs7.parse_certificates(signed_data.certificates)
                except CertificateError as exc:
                    report.error("JAR_SIG_PARSE_EXCEPTION", f"failed to parse {block_name}: {exc}")
                    return
            if not self._algorithm_supported(signer, signer_info):
                return
            try:
                certificate = pkcs7.verify_signer_info(
                    signed_data, certificates, signer_info, signer.sf_bytes, self.min_sdk, self.max_sdk
                )
            except pkcs7.Pkcs7FormatError as exc:
                report.error("JAR_SIG_PARSE_EXCEPTION", f"failed to parse {block_name}: {exc}")
                return
            except pkcs7.SignerInfoError as exc:
                report.error("JAR_SIG_VERIFY_EXCEPTION", f"failed to verify {block_name} against {sf_name}: {exc}")
                return
            if certificate is not None and verified is None:
                verified = (signer_info, certificate)
        if verified is None or certificates is None:
            report.error("JAR_SIG_DID_NOT_VERIFY", f"{block_name} does not verify against {sf_name}")
            return
        signer_info, certificate = verified
        report.certificates = pkcs7.certificate_chain(certificates, certificate)
        digest, key_type = pkcs7.jca_signature_algorithm(signer_info.digest_algorithm, signer_info.signature_algorithm)
        report.verified_algorithms = [pkcs7.jca_name(digest, key_type)]

    def _algorithm_supported(self, signer: _Signer, signer_info: pkcs7.SignerInfo) -> bool:
        digest_oid, signature_oid = signer_info.digest_algorithm, signer_info.signature_algorithm
        missing = pkcs7.unsupported_api_levels(digest_oid, signature_oid, self.min_sdk, self.max_sdk)
        if not missing:
            return True
        signer.report.error(
            "JAR_SIG_UNSUPPORTED_SIG_ALG",
            f"{signer.block.name} uses digest algorithm {pkcs7.friendly_name(digest_oid)} and signature algorithm "
            f"{pkcs7.friendly_name(signature_oid)}, which Android cannot verify on API Level(s) "
            f"{_format_levels(missing)}",
        )
        return False

    # -- .SF against the manifest ----------------------------------------------------------------------------------

    def _verify_signature_file(
        self, signer: _Signer, manifest: bytes, main_section: Section | None, by_name: dict[str, Section]
    ) -> None:
        report, sf_name = signer.report, signer.signature_file.name
        sf_main, sf_sections = jar_manifest.parse(signer.sf_bytes)
        if sf_main is None or sf_main.get("Signature-Version") is None:
            report.error("JAR_SIG_MISSING_VERSION_ATTR_IN_SIG_FILE", f"{sf_name} has no Signature-Version attribute")
            signer.ignored = True
            return
        if self.max_sdk >= ANDROID_N:
            self._check_stripping(signer, sf_main)
            if report.errors:
                return
        created_by = sf_main.get("Created-By")
        signtool = created_by is not None and "signtool" in created_by
        manifest_verified = self._verify_manifest_digest(signer, sf_main, signtool, manifest)
        if not signtool:
            self._verify_main_section_digest(signer, sf_main, main_section, manifest)
        if report.errors:
            return
        names: set[str] = set()
        for number, sf_section in enumerate(sf_sections, start=1):
            name = sf_section.name
            if name is None:
                report.error("JAR_SIG_UNNNAMED_SIG_FILE_SECTION", f"{sf_name} section #{number} has no Name attribute")
                signer.ignored = True
                return
            if name in names:
                report.error("JAR_SIG_DUPLICATE_SIG_FILE_SECTION", f"{sf_name} has two sections for {name!r}")
                signer.ignored = True
                return
            names.add(name)
            if manifest_verified:
                continue
            manifest_section = by_name.get(name)
            if manifest_section is None:
                report.error(
                    "JAR_SIG_NO_ZIP_ENTRY_DIGEST_IN_SIG_FILE",
                    f"{sf_name} lists {name!r}, which has no section in the manifest",
                )
                signer.ignored = True
                continue
            self._verify_individual_section(signer, sf_section, signtool, manifest_section, manifest)
        signer.sf_entry_names = frozenset(names)

    def _check_stripping(self, signer: _Signer, sf_main: Section) -> None:
        """Android N+ rejects APKs whose .SF names a v2+ scheme whose signature is not in the APK."""
        sf_name = signer.signature_file.name
        listed = sf_main.get(STRIP_PROTECTION_ATTRIBUTE)
        if listed is None:
            if self.found_ids:
                signer.report.warn(
                    "JAR_SIG_NO_APK_SIG_STRIP_PROTECTION",
                    f"{sf_name} lacks {STRIP_PROTECTION_ATTRIBUTE}, so stripping the newer signatures goes unnoticed "
                    "on platforms that only check the JAR signature",
                )
            return
        supported = _supported_scheme_names(self.max_sdk)
        if not supported:
            return
        expected: set[int] = set()
        for token in listed.split(","):
            scheme_id = _parse_java_int(token.strip(_JAVA_TRIM))
            if scheme_id is None:
                continue
            if scheme_id in supported:
                expected.add(scheme_id)
            else:
                signer.report.warn(
                    "JAR_SIG_UNKNOWN_APK_SIG_SCHEME_ID",
                    f"{sf_name} names APK signature scheme ID {scheme_id}, unknown on the platforms verified for",
                )
        for scheme_id in sorted(expected - self.found_ids):
            signer.report.error(
                "JAR_SIG_MISSING_APK_SIG_REFERENCED",
                f"{sf_name} says the APK was signed with {supported[scheme_id]} (ID {scheme_id}), but that signature "
                "is missing: it was stripped",
            )

    def _verify_manifest_digest(self, signer: _Signer, sf_main: Section, signtool: bool, manifest: bytes) -> bool:
        sf_name = signer.signature_file.name
        suffix = "-Digest" if signtool else "-Digest-Manifest"
        expected = jar_manifest.digests_to_verify(sf_main, suffix, self.min_sdk, self.max_sdk)
        if not expected:
            signer.report.warn(
                "JAR_SIG_NO_MANIFEST_DIGEST_IN_SIG_FILE", f"{sf_name} has no digest of the whole manifest"
            )
            return False
        verified = True
        for named in expected:
            actual = _digest(named.algorithm, manifest)
            if actual != named.digest:
                signer.report.warn(
                    "JAR_SIG_ZIP_ENTRY_DIGEST_DID_NOT_VERIFY",
                    f"{named.algorithm} digest of {MANIFEST_NAME} in {sf_name} does not match: "
                    f"{_mismatch(actual, named)}; its sections are checked one by one instead",
                )
                verified = False
        return verified

    def _verify_main_section_digest(
        self, signer: _Signer, sf_main: Section, main_section: Section | None, manifest: bytes
    ) -> None:
        expected = jar_manifest.digests_to_verify(
            sf_main, "-Digest-Manifest-Main-Attributes", self.min_sdk, self.max_sdk
        )
        start, size = (main_section.start, main_section.size) if main_section is not None else (0, 0)
        for named in expected:
            actual = _digest(named.algorithm, manifest[start : start + size])
            if actual != named.digest:
                signer.report.error(
                    "JAR_SIG_MANIFEST_MAIN_SECTION_DIGEST_DID_NOT_VERIFY",
                    f"{named.algorithm} digest of the manifest's main section in {signer.signature_file.name} does "
                    f"not match: {_mismatch(actual, named)}",
                )

    def _verify_individual_section(
        self, signer: _Signer, sf_section: Section, signtool: bool, manifest_section: Section, manifest: bytes
    ) -> None:
        name, sf_name = sf_section.name, signer.signature_file.name
        expected = jar_manifest.digests_to_verify(sf_section, "-Digest", self.min_sdk, self.max_sdk)
        if not expected:
            signer.report.error(
                "JAR_SIG_NO_ZIP_ENTRY_DIGEST_IN_SIG_FILE",
                f"{sf_name} has no digest of the manifest section of {name!r} usable on every platform in the range",
            )
            return
        start, size = manifest_section.start, manifest_section.size
        end = start + size
        if signtool and size >= 2 and manifest[end - 2 : end] == b"\n\n":
            size -= 1  # Netscape signtool digested sections without their last newline.
        section_bytes = manifest[start : start + size]
        for named in expected:
            actual = _digest(named.algorithm, section_bytes)
            if actual != named.digest:
                signer.report.error(
                    "JAR_SIG_MANIFEST_SECTION_DIGEST_DID_NOT_VERIFY",
                    f"{named.algorithm} digest of the manifest section of {name!r} in {sf_name} does not match: "
                    f"{_mismatch(actual, named)}",
                )

    # -- entries against the manifest ------------------------------------------------------------------------------

    def _verify_entries(self, signers: list[_Signer], by_name: dict[str, Section]) -> set[_Signer]:
        """Check every entry that must be signed; returns the signers Android uses for this APK."""
        ordered = sorted(self.entries, key=lambda jar_entry: jar_entry.entry.local_header_offset)
        issues: list[list[Issue]] = []
        jobs: list[tuple[int, _JarEntry, list[NamedDigest]]] = []
        first: tuple[str, list[_Signer]] | None = None
        for jar_entry in ordered:
            name = jar_entry.name
            if name.startswith(META_INF) or name.endswith("/"):
                continue
            slot: list[Issue] = []
            issues.append(slot)
            section = by_name.get(name)
            if section is None:
                slot.append(Issue("JAR_SIG_NO_ZIP_ENTRY_DIGEST_IN_MANIFEST", f"entry {name!r} is not in the manifest"))
                continue
            entry_signers = [signer for signer in signers if name in signer.sf_entry_names]
            if not entry_signers:
                slot.append(Issue("JAR_SIG_ZIP_ENTRY_NOT_SIGNED", f"entry {name!r} is not signed by any signer"))
                continue
            if first is None:
                first = (name, entry_signers)
            elif entry_signers != first[1]:
                slot.append(
                    Issue(
                        "JAR_SIG_ZIP_ENTRY_SIGNERS_MISMATCH",
                        f"entry {first[0]!r} is signed by {_names(first[1])} but entry {name!r} by "
                        f"{_names(entry_signers)}; Android needs every entry signed by the same signers",
                    )
                )
                continue
            expected = jar_manifest.digests_to_verify(section, "-Digest", self.min_sdk, self.max_sdk)
            if not expected:
                slot.append(
                    Issue(
                        "JAR_SIG_NO_ZIP_ENTRY_DIGEST_IN_MANIFEST",
                        f"the manifest has no digest of {name!r} usable on every platform in the range",
                    )
                )
                continue
            jobs.append((len(issues) - 1, jar_entry, expected))
        actual_digests = _digest_entries(self.archive, [(job[1].entry, [d.algorithm for d in job[2]]) for job in jobs])
        for (slot_index, jar_entry, expected), actual in zip(jobs, actual_digests, strict=True):
            for named, digest in zip(expected, actual, strict=True):
                if digest != named.digest:
                    issues[slot_index].append(
                        Issue(
                            "JAR_SIG_ZIP_ENTRY_DIGEST_DID_NOT_VERIFY",
                            f"{named.algorithm} digest of entry {jar_entry.name!r} does not match {MANIFEST_NAME}: "
                            f"{_mismatch(digest, named)}",
                        )
                    )
        self.result.errors.extend(issue for slot in issues for issue in slot)
        if first is None:
            self.result.error("JAR_SIG_NO_SIGNED_ZIP_ENTRIES", "the JAR signature covers no entry of the APK")
            return set()
        return set(first[1])

    def _warn_unprotected(self, manifest_entry: _JarEntry, apk_signers: set[_Signer]) -> None:
        signature_names = {manifest_entry.name}
        for signer in apk_signers:
            signature_names.update((signer.block.name, signer.signature_file.name))
        for jar_entry in self.entries:
            name = jar_entry.name
            if name.startswith(META_INF) and not name.endswith("/") and name not in signature_names:
                self.result.warn(
                    "JAR_SIG_UNPROTECTED_ZIP_ENTRY",
                    f"{name} is not protected by the JAR signature; it can be changed without invalidating it",
                )


# -- helpers -----------------------------------------------------------------------------------------------------


def _is_manifest(name: str) -> bool:
    return name == MANIFEST_NAME


def _is_signature_block(name: str) -> bool:
    return name.startswith(META_INF) and name.endswith(SIGNATURE_BLOCK_SUFFIXES)


def _supported_scheme_names(max_sdk: int) -> dict[int, str]:
    """The v2+ schemes the platforms up to max_sdk know: v2 from API 24, v3 from API 28."""
    if max_sdk >= ANDROID_P:
        return dict(_SCHEME_NAMES)
    if max_sdk >= ANDROID_N:
        return {2: _SCHEME_NAMES[2]}
    return {}


def _parse_java_int(text: str) -> int | None:
    """Integer.parseInt: an optional sign and decimal digits, within 32 bits; None otherwise."""
    if not _JAVA_INT.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**31) <= value < 2**31 else None


def _format_levels(ranges: Sequence[tuple[int, int]]) -> str:
    parts = []
    for low, high in ranges:
        if low == high:
            parts.append(str(low))
        elif high == pkcs7.MAX_API_LEVEL:
            parts.append(f"{low}+")
        else:
            parts.append(f"{low}-{high}")
    return ", ".join(parts)


def _names(signers: Sequence[_Signer]) -> str:
    return "[" + ", ".join(signer.name for signer in signers) + "]"


def _digest(algorithm: str, data: bytes) -> bytes:
    return hashlib.new(jar_manifest.HASHLIB_NAMES[algorithm], data, usedforsecurity=False).digest()


def _mismatch(actual: bytes, named: NamedDigest) -> str:
    computed = base64.b64encode(actual).decode("ascii")
    if named.digest is None:
        return f"computed {computed}, but the recorded value {named.encoded!r} is not valid base64"
    return f"computed {computed}, recorded {named.encoded}"


def _digest_entry(archive: ZipArchive, entry: ZipEntry, algorithms: Sequence[str]) -> list[bytes]:
    """Every requested digest of one entry's uncompressed data, in a single streaming pass."""
    hashers = [hashlib.new(jar_manifest.HASHLIB_NAMES[name], usedforsecurity=False) for name in algorithms]
    # The signed digests authenticate these bytes; like Android's StrictJarFile, do not also check CRC-32.
    for chunk in archive.iter_data(entry, check_crc=False):
        for hasher in hashers:
            hasher.update(chunk)
    return [hasher.digest() for hasher in hashers]


def _digest_entries(archive: ZipArchive, jobs: Sequence[tuple[ZipEntry, Sequence[str]]]) -> list[list[bytes]]:
    """Digest entries on all cores (zlib and hashlib release the GIL).

    Big entries go first so that no core idles at the end; small ones are batched so that thousands of tiny
    resources do not each pay for a task.
    """
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        return [_digest_entry(archive, entry, algorithms) for entry, algorithms in jobs]
    results: list[list[bytes]] = [[] for _ in jobs]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="v1-digest")
    try:
        futures = [(batch, pool.submit(_digest_batch, archive, jobs, batch)) for batch in _batches(jobs)]
        for batch, future in futures:
            for index, digests in zip(batch, future.result(), strict=True):
                results[index] = digests
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _batches(jobs: Sequence[tuple[ZipEntry, Sequence[str]]]) -> list[list[int]]:
    order = sorted(range(len(jobs)), key=lambda index: jobs[index][0].compressed_size, reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    current_size = 0
    for index in order:
        current.append(index)
        current_size += jobs[index][0].compressed_size
        if current_size >= _BATCH_BYTES or len(current) >= _BATCH_ENTRIES:
            batches.append(current)
            current, current_size = [], 0
    if current:
        batches.append(current)
    return batches


def _digest_batch(
    archive: ZipArchive, jobs: Sequence[tuple[ZipEntry, Sequence[str]]], batch: Sequence[int]
) -> list[list[bytes]]:
    return [_digest_entry(archive, *jobs[index]) for index in batch]
