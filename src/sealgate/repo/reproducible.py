"""Reproducible builds: does an independently built unsigned APK equal the developer's signed APK?

F-Droid answers it with apksigcopier: copy the developer's signature onto the unsigned build and see whether the
result verifies. The same here, on the project's strict ZIP reader and verifier: the candidate is the signed APK
with every entry that is not a v1 signature file taken from the unsigned build instead (its local header, data and
data descriptor byte for byte, its central directory record), then the signed APK's APK Signing Block and end
record. v2/v3 signatures cover every one of those bytes and v1 signatures every entry's content, so the candidate
verifies with the developer's signers exactly when the build reproduces what the developer signed. When it does
not, the entries that differ are named, so a builder knows where to look.

A reproduced build is recorded as fdroidserver records it: the developer's signature files in
metadata/<package>/signatures/<versionCode>/ (the v1 files, APKSigningBlock and APKSigningBlockOffset, as
apksigcopier extracts them). The index then lists the developer-signed version first (fdroidserver's "developer
signed" group), so clients prefer the APK whose build was verified.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.durable import replace_file
from sealgate.errors import ApkFormatError, RepoError, SealgateError
from sealgate.ziparchive import CD_FIXED_SIZE, EOCD_SIZE, ZipArchive, ZipEntry

_SIGNATURE_FILE_SUFFIXES = (".SF", ".RSA", ".DSA", ".EC")
_MAX_DIFFERENCES = 20


@dataclass
class BuildVerification:
    reproducible: bool
    reason: str
    package: str = ""
    version_code: int = 0
    signers: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "reproducible": self.reproducible,
            "reason": self.reason,
            "package": self.package,
            "version_code": self.version_code,
            "signers": self.signers,
            "differences": self.differences,
        }


def is_signature_file(name: str) -> bool:
    """MANIFEST.MF and the .SF/.RSA/.DSA/.EC files at the top of META-INF/: what a v1 signature adds."""
    if not name.startswith("META-INF/") or "/" in name[len("META-INF/") :]:
        return False
    return name == "META-INF/MANIFEST.MF" or name.upper().endswith(_SIGNATURE_FILE_SUFFIXES)


def verify_build(unsigned: Path, signed: Path) -> BuildVerification:
    """Whether `unsigned` (an independent build) is what the developer signed in `signed`."""
    from sealgate.apk.verifier import verify_apk

    try:
        developer = verify_apk(signed)
    except SealgateError as exc:
        raise RepoError(f"{signed} is not an APK: {exc}") from None
    if not developer.verified or developer.manifest is None:
        reason = "; ".join(issue.message for issue in developer.errors[:2]) or "it does not verify"
        return BuildVerification(False, f"the developer's APK {signed} does not verify: {reason}")
    result = BuildVerification(
        False,
        "",
        package=developer.manifest.package,
        version_code=developer.manifest.version_code,
        signers=[certificate.sha256 for certificate in developer.signers],
    )
    with tempfile.TemporaryDirectory(prefix="sealgate-verify-build-") as work:
        candidate = Path(work) / "candidate.apk"
        try:
            result.differences = _build_candidate(unsigned, signed, candidate)
        except (ApkFormatError, RepoError) as exc:
            result.reason = str(exc)
            return result
        try:
            report = verify_apk(candidate)
        except SealgateError as exc:
            result.reason = f"the unsigned build with the developer's signature is not an APK: {exc}"
            return result
    same_signers = sorted(c.der for c in report.signers) == sorted(c.der for c in developer.signers)
    if report.verified and same_signers and not result.differences:
        result.reproducible = True
        result.reason = (
            "the unsigned build, with the developer's signature copied over, verifies: it is what was signed"
        )
    else:
        problems = "; ".join(issue.message for issue in report.errors[:2])
        result.reason = (
            "the developer's signature does not verify over the unsigned build"
            + (f" ({len(result.differences)} entries differ)" if result.differences else "")
            + (f": {problems}" if problems else "")
        )
    return result


def _build_candidate(unsigned_path: Path, signed_path: Path, out: Path) -> list[str]:
    """Write the signed APK with the unsigned build's entries; return the entries whose bytes differ."""
    with ZipArchive.open(unsigned_path) as unsigned, ZipArchive.open(signed_path) as signed:
        for archive, what in ((unsigned, "the unsigned build"), (signed, "the developer's APK")):
            if archive.violations:
                raise RepoError(f"{what} is not a well-formed APK: {archive.violations[0].message}")
        built = {entry.name: entry for entry in unsigned.entries if not is_signature_file(entry.name)}
        content = [entry for entry in signed.entries if not is_signature_file(entry.name)]
        differences = sorted(
            [f"{name}: only in the unsigned build" for name in built.keys() - {e.name for e in content}]
            + [f"{e.name}: missing from the unsigned build" for e in content if e.name not in built]
        )
        unsigned_records = _central_records(unsigned)
        signed_records = _central_records(signed)
        with open(out, "wb") as handle:
            offsets: dict[str, int] = {}
            for entry in sorted(signed.entries, key=lambda item: item.local_header_offset):
                source, source_entry = (signed, entry)
                if not is_signature_file(entry.name) and entry.name in built:
                    source, source_entry = unsigned, built[entry.name]
                    if _raw(unsigned, source_entry) != _raw(signed, entry):
                        differences.append(f"{entry.name}: {_how_different(source_entry, entry)}")
                offsets[entry.name] = handle.tell()
                handle.write(_raw(source, source_entry))
            # The developer's APK Signing Block (and whatever padding lay before it), then the directory.
            entries_end = max((entry.end_offset for entry in signed.entries), default=0)
            handle.write(signed.pread(entries_end, signed.sections.cd_offset - entries_end))
            cd_offset = handle.tell()
            for entry in signed.entries:
                use_unsigned = not is_signature_file(entry.name) and entry.name in built
                record = bytearray(unsigned_records[entry.name] if use_unsigned else signed_records[entry.name])
                struct.pack_into("<I", record, 42, offsets[entry.name])
                handle.write(record)
            cd_size = handle.tell() - cd_offset
            sections = signed.sections
            eocd = bytearray(signed.pread(sections.eocd_offset, EOCD_SIZE + len(sections.comment)))
            struct.pack_into("<II", eocd, 12, cd_size, cd_offset)
            handle.write(eocd)
    return differences[:_MAX_DIFFERENCES]


def _raw(archive: ZipArchive, entry: ZipEntry) -> bytes:
    return archive.pread(entry.local_header_offset, entry.end_offset - entry.local_header_offset)


def _how_different(built: ZipEntry, signed: ZipEntry) -> str:
    if built.crc32 != signed.crc32 or built.uncompressed_size != signed.uncompressed_size:
        return "different content"
    if built.method != signed.method or built.compressed_size != signed.compressed_size:
        return "same content, compressed differently"
    return "same content, different ZIP metadata (timestamps, extra fields, alignment)"


def _central_records(archive: ZipArchive) -> dict[str, bytes]:
    sections = archive.sections
    directory = archive.pread(sections.cd_offset, sections.cd_size)
    records: dict[str, bytes] = {}
    position = 0
    for entry in archive.entries:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", directory, position + 28)
        end = position + CD_FIXED_SIZE + name_length + extra_length + comment_length
        records[entry.name] = directory[position:end]
        position = end
    return records


def record_developer_signature(metadata_dir: Path, signed: Path, result: BuildVerification) -> Path:
    """Keep the developer's signature of a reproduced build in metadata/<package>/signatures/<versionCode>/."""
    from sealgate.apk.signing_block import locate_signing_block

    if not result.reproducible:
        raise RepoError("only a reproduced build's signature is recorded")
    target = metadata_dir / result.package / "signatures" / str(result.version_code)
    try:
        target.mkdir(parents=True, exist_ok=True)
        with ZipArchive.open(signed) as archive:
            for entry in archive.entries:
                if is_signature_file(entry.name):
                    replace_file(target / entry.name.split("/", 1)[1], archive.read(entry, max_size=16 << 20))
            block, _ = locate_signing_block(archive)
            if block is not None:
                replace_file(target / "APKSigningBlock", block.data)
                replace_file(target / "APKSigningBlockOffset", f"{hex(block.offset)}\n".encode("ascii"))
    except OSError as exc:
        raise RepoError(f"cannot record the developer's signature in {target}: {exc.strerror}") from None
    return target


def developer_signer(metadata_dir: Path, package: str) -> str | None:
    """The SHA-256 of the developer certificate recorded for `package` (fdroidserver's rule: the first found)."""
    from sealgate.apk import pkcs7

    signatures = metadata_dir / package / "signatures"
    if not signatures.is_dir():
        return None
    for version in sorted(os.listdir(signatures)):
        if not version.isdigit():
            continue
        blocks = [
            path for path in sorted((signatures / version).iterdir()) if path.suffix in _SIGNATURE_FILE_SUFFIXES[1:]
        ]
        if len(blocks) != 1:
            continue
        try:
            signed_data = pkcs7.parse_signed_data(blocks[0].read_bytes())
            certificates = pkcs7.parse_certificates(signed_data.certificates)
        except (SealgateError, OSError, ValueError):
            continue
        if certificates:
            return certificates[0].sha256
    return None
