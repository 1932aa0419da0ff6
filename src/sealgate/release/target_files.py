"""Re-signing a target-files package for release, as build/make/tools/releasetools/sign_target_files_apks.py does.

The steps, in the order that lets every refusal happen before a byte is written:

1. open the package strictly, read META/apkcerts.txt, META/apexkeys.txt, META/misc_info.txt and the prop files;
2. the user-build gate (`build_props.release_refusals`): a userdebug or eng build, ro.debuggable=1 or an su binary
   is refused with every reason, and nothing is written;
3. plan every entry: each APK (anywhere in the package; "Foo.apk.gz" when apkcerts says compressed="gz") must be
   listed in apkcerts.txt, as CheckApkAndApexKeysAvailable demands, and its certificate name must map to a role
   that has a signer; PRESIGNED and EXTERNAL packages are copied byte for byte. APEX files are only carried when
   apexkeys.txt marks them PRESIGNED: re-signing an APEX payload (an AVB-signed filesystem image inside the APK)
   is not done here, so any other APEX is refused rather than shipped with test keys;
4. write the output beside its destination: APKs re-signed with `sealgate.apk.signing.sign_apk` (the schemes the
   APK's minSdkVersion needs, or v1 with SHA-1 for platforms up to API 23, as SignApk asks for), prop files
   rewritten to release-keys (RewriteProps), every */otacerts.zip replaced by one holding the OTA certificate
   (ReplaceOtaKeys/WriteOtacerts), META/otakeys.txt naming it, *mac_permissions.xml given the new certificates in
   place of the build's (ReplaceCerts), IMAGES/vbmeta.img re-signed with the AVB key with its descriptors kept and
   the rollback index set, and the partitions it chains to re-signed too (`verified_boot`), META/misc_info.txt
   updated (ReplaceMiscInfoTxt, RewriteAvbProps), META/vbmeta_digest.txt dropped (it no longer matches);
   everything else copied as it is;
5. fsync and rename into place (`AtomicOutput`); a failure at any step leaves nothing at the output path.

Like sign_target_files_apks (which lets add_img_to_target_files regenerate IMAGES/), the EROFS images whose source
directory changed are rebuilt from the signed directories and vbmeta re-describes them (`partition_images`;
META/care_map.pb is then computed again from the new images, `care_map`, as sign_target_files_apks drops it for
add_img_to_target_files to regenerate), and so are boot.img and recovery.img whose ramdisk changed
(`boot_images`); with `rebuild_images=False`, or when no stale image can be rebuilt by default, the report lists
the images left stale instead. The output is deterministic: entries in the input's order, each stamped
2009-01-01 (`zip_writer`); only ECDSA/DSA signatures differ between runs.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sealgate.apk.certificate import Certificate
from sealgate.apk.report import Issue
from sealgate.apk.signing import ApkSigningOptions, sign_apk
from sealgate.apk.signing.output import AtomicOutput
from sealgate.apk.verifier import verify_apk
from sealgate.durable import fsync_directory
from sealgate.errors import ReleaseError, SealgateError, UnreleasableBuildError, ZipFormatError
from sealgate.ota.whole_file import trusted_key
from sealgate.release import boot_images, care_map, partition_images
from sealgate.release.apkcerts import (
    DEFAULT_DEV_KEY_DIRECTORY,
    ApexKey,
    ApkCert,
    KeyMap,
    compressed_extension,
    parse_apexkeys,
    parse_apkcerts,
)
from sealgate.release.build_props import (
    DEFAULT_TAG_CHANGES,
    is_build_prop_file,
    parse_props,
    release_refusals,
    rewrite_props,
)
from sealgate.release.misc_info import format_misc_info, parse_misc_info, rewrite_avb_props, set_vbmeta_signing
from sealgate.release.otacerts import is_otacerts, is_payload_key, otacerts_zip, payload_key_pem
from sealgate.release.report import SignedPackage, SignReport
from sealgate.release.verified_boot import VBMETA, VerifiedBoot, resign_verified_boot
from sealgate.release.zip_writer import ZipWriter, central_attributes, is_symlink
from sealgate.signing import Signer
from sealgate.ziparchive import METHOD_DEFLATED, ZipArchive, ZipEntry

OTA_ROLE = "ota"
APKCERTS = "META/apkcerts.txt"
APEXKEYS = "META/apexkeys.txt"
MISC_INFO = "META/misc_info.txt"
OTAKEYS = "META/otakeys.txt"
VBMETA_DIGEST = "META/vbmeta_digest.txt"
OTA_CERTIFICATE_NAME = "ota.x509.pem"
#: Bound on the text files read into memory (prop files, apkcerts.txt, misc_info.txt, mac_permissions.xml).
_MAX_TEXT = 16 * 1024 * 1024
_CHUNK = 4 * 1024 * 1024
#: Platforms up to this API level get SHA-1 JAR signatures, as sign_target_files_apks asks SignApk for them.
_LAST_SHA1_PLATFORM = 23


@dataclass(frozen=True)
class _ApkJob:
    cert: ApkCert
    role: str
    signer: Signer
    gzipped: bool


def sign_target_files(
    input_zip: str | os.PathLike[str],
    output_zip: str | os.PathLike[str],
    keys: KeyMap,
    *,
    rollback_index: int | None = None,
    avb_algorithm: str | None = None,
    tag_changes: tuple[str, ...] = DEFAULT_TAG_CHANGES,
    rebuild_images: bool | None = None,
    accept_root_owned: bool = False,
) -> SignReport:
    """Sign `input_zip` for release into `output_zip` with the signers of `keys` (see the module docstring).

    Raises UnreleasableBuildError for a build that is not a user build, ReleaseError for a package that cannot be
    signed (an APK without a key, a role without a signer, an APEX that is not PRESIGNED, malformed META files);
    in every case nothing is written at `output_zip`.

    `rebuild_images` (None: when some stale image is EROFS and mkfs.erofs is installed) rebuilds the images whose
    directories changed (`partition_images`); an image that cannot be rebuilt is then refused, nothing written.
    """
    if rollback_index is not None and not 0 <= rollback_index < 1 << 64:
        raise ReleaseError(f"the rollback index must be a 64-bit unsigned number, not {rollback_index}")
    report = SignReport(os.fspath(input_zip), os.fspath(output_zip))
    with _open(input_zip) as archive:
        attributes = central_attributes(archive)
        names = {entry.name for entry in archive.entries}
        props = _read_props(archive, attributes)
        refusals = release_refusals(names, props)
        if refusals:
            raise UnreleasableBuildError(refusals)
        misc_info_text = _read_text(archive, MISC_INFO)
        misc_info = parse_misc_info(misc_info_text) if misc_info_text is not None else {}
        jobs = _plan_packages(archive, keys, misc_info, report)
        ota_signer = _ota_signer(archive, keys)
        options = _apk_options(props.get("SYSTEM/build.prop", {}))
        mac_permissions = [entry for entry in archive.entries if entry.name.endswith("mac_permissions.xml")]
        replaced: dict[bytes, bytes] = {}
        conflicts: set[bytes] = set()
        changed: set[str] = set()
        outer = tempfile.TemporaryDirectory(dir=Path(output_zip).parent, prefix=".sign-target-files-")
        first_pass = Path(outer.name) / "signed.zip" if rebuild_images is not False else Path(output_zip)
        with (
            outer,
            AtomicOutput(first_pass) as output,
            tempfile.TemporaryDirectory(dir=outer.name, prefix="work-") as work,
        ):
            vbmeta = resign_verified_boot(archive, keys, Path(work), algorithm=avb_algorithm,
                                          rollback_index=rollback_index)  # fmt: skip
            if vbmeta is not None:
                report.vbmeta = vbmeta.to_json()
            writer = ZipWriter(output.fd)
            for index, entry in enumerate(archive.entries):
                name = entry.name
                deflate = entry.method == METHOD_DEFLATED
                external = attributes[index][1]
                if entry in mac_permissions:
                    continue  # written last, once every certificate it names has been replaced
                if index in jobs:
                    job = jobs[index]
                    old, signed = _sign_one(archive, entry, job, options, Path(work), bool(mac_permissions))
                    writer.add_file(name, signed, deflate=deflate, attributes=external)
                    signed.unlink()
                    for certificate in old:
                        if replaced.setdefault(certificate, job.signer.certificate.der) != job.signer.certificate.der:
                            conflicts.add(certificate)
                    changed.add(name)
                elif is_build_prop_file(name) and not is_symlink(attributes[index]):
                    text = _read_text(archive, name)
                    assert text is not None
                    writer.add_bytes(name, rewrite_props(text, tag_changes).encode("utf-8"), deflate=deflate,
                                     attributes=external)  # fmt: skip
                    report.props_rewritten.append(name)
                    changed.add(name)
                elif is_otacerts(name) and ota_signer is not None:
                    certificates = [(OTA_CERTIFICATE_NAME, ota_signer.certificate)]
                    writer.add_bytes(name, otacerts_zip(certificates), deflate=deflate, attributes=external)
                    report.otacerts.append(name)
                    changed.add(name)
                elif is_payload_key(name) and ota_signer is not None and not is_symlink(attributes[index]):
                    writer.add_bytes(name, payload_key_pem(ota_signer.certificate), deflate=deflate,
                                     attributes=external)  # fmt: skip
                    report.otacerts.append(name)
                    changed.add(name)
                elif name == OTAKEYS and ota_signer is not None:
                    writer.add_bytes(name, f"{OTA_CERTIFICATE_NAME}\n".encode(), deflate=deflate, attributes=external)
                elif name == MISC_INFO and misc_info_text is not None:
                    writer.add_bytes(name, _new_misc_info(misc_info_text, vbmeta, rollback_index, tag_changes),
                                     deflate=deflate, attributes=external)  # fmt: skip
                elif name == VBMETA and vbmeta is not None:
                    writer.add_bytes(name, vbmeta.vbmeta, deflate=deflate, attributes=external)
                elif vbmeta is not None and name in vbmeta.chained:
                    writer.add_file(name, vbmeta.chained[name], deflate=deflate, attributes=external)
                elif name == VBMETA_DIGEST and vbmeta is not None:
                    report.notes.append(Issue("VBMETA_DIGEST_DROPPED", f"{name} no longer matches vbmeta; dropped"))
                else:
                    writer.copy_entry(archive, entry, attributes[index])
            for entry in mac_permissions:
                index = archive.entries.index(entry)
                text = _read_text(archive, entry.name)
                assert text is not None
                new_text = replace_certificates(text, replaced, conflicts, entry.name)
                writer.add_bytes(entry.name, new_text.encode("utf-8"), deflate=entry.method == METHOD_DEFLATED,
                                 attributes=attributes[index][1])  # fmt: skip
                if new_text != text:
                    changed.add(entry.name)
            writer.finish()
            output.commit()
            if ota_signer is not None:
                report.ota_certificate_sha256 = ota_signer.certificate.sha256
            report.images_to_rebuild = _stale_images(changed, names)
            if first_pass != Path(output_zip):
                _finish_images(first_pass, Path(output_zip), report, keys, misc_info, rebuild_images,
                               accept_root_owned)  # fmt: skip
        if report.images_to_rebuild:
            report.notes.append(
                Issue(
                    "IMAGES_NOT_REBUILT",
                    "these images still hold the old contents of the directories that were re-signed; rebuild them "
                    "(add_img_to_target_files --is_signing) before making a factory image or OTA: "
                    + ", ".join(report.images_to_rebuild),
                )
            )
    return report


# -- reading ---------------------------------------------------------------------------------------------------


def _open(path: str | os.PathLike[str]) -> ZipArchive:
    try:
        archive = ZipArchive.open(path)
    except ZipFormatError as exc:
        raise ReleaseError(f"{os.fspath(path)} is not a readable target-files package: {exc}") from exc
    if archive.violations:
        archive.close()
        raise ReleaseError(f"{os.fspath(path)}: {archive.violations[0].message}")
    return archive


def _read_text(archive: ZipArchive, name: str) -> str | None:
    entry = archive.entry(name)
    if entry is None:
        return None
    try:
        return archive.read(entry, max_size=_MAX_TEXT).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReleaseError(f"{name} is not UTF-8 text: {exc}") from exc
    except ZipFormatError as exc:
        raise ReleaseError(f"cannot read {name}: {exc}") from exc


def _read_props(archive: ZipArchive, attributes: list[tuple[int, int]]) -> dict[str, dict[str, str]]:
    props = {}
    for index, entry in enumerate(archive.entries):
        if is_build_prop_file(entry.name) and not is_symlink(attributes[index]):
            text = _read_text(archive, entry.name)
            assert text is not None
            props[entry.name] = parse_props(text)
    return props


# -- planning --------------------------------------------------------------------------------------------------


def _plan_packages(
    archive: ZipArchive, keys: KeyMap, misc_info: dict[str, str], report: SignReport
) -> dict[int, _ApkJob]:
    """The signing job of every APK by entry index; refuses, naming all of them, what cannot be signed."""
    text = _read_text(archive, APKCERTS)
    certs = parse_apkcerts(text) if text is not None else {}
    installed = {os.path.basename(entry.name) for entry in archive.entries if not entry.is_directory}
    extension = compressed_extension(certs, installed)
    apex_text = _read_text(archive, APEXKEYS)
    apex_keys: dict[str, ApexKey] = parse_apexkeys(apex_text) if apex_text is not None else {}
    dev_keys = os.path.dirname(misc_info.get("default_system_dev_certificate", "")) or DEFAULT_DEV_KEY_DIRECTORY
    jobs: dict[int, _ApkJob] = {}
    missing: list[str] = []
    unmapped: dict[str, list[str]] = {}
    no_signer: dict[str, list[str]] = {}
    apexes: list[str] = []
    for index, entry in enumerate(archive.entries):
        name = entry.name
        if entry.is_directory:
            continue
        if name.endswith((".apex", ".capex")):
            apex = os.path.basename(name).removesuffix(".capex").removesuffix(".apex") + ".apex"
            key = apex_keys.get(apex)
            if key is None or not key.presigned:
                apexes.append(name)
            else:
                report.packages.append(SignedPackage(name, key.container_certificate, "apex-presigned"))
            continue
        gzipped = extension is not None and name.endswith(".apk" + extension)
        if not (name.endswith(".apk") or gzipped):
            continue
        base = os.path.basename(name)
        if gzipped and extension is not None:
            base = base[: -len(extension)]
        cert = certs.get(base)
        if cert is None:
            missing.append(name)
            continue
        if cert.presigned:
            report.packages.append(SignedPackage(name, cert.certificate, "presigned"))
            continue
        role = keys.role_of(cert.certificate, dev_keys)
        if role is None:
            unmapped.setdefault(cert.certificate, []).append(base)
            continue
        signer = keys.signer(role)
        if signer is None:
            no_signer.setdefault(role, []).append(base)
            continue
        jobs[index] = _ApkJob(cert, role, signer, gzipped)
        report.packages.append(SignedPackage(name, cert.certificate, "signed", role, signer.certificate.sha256))
    problems = []
    if missing:
        problems.append(f"no key is listed in {APKCERTS} for {', '.join(missing)}")
    for certificate, apks in sorted(unmapped.items()):
        problems.append(
            f"no role for the certificate {certificate} (used by {', '.join(apks)}); map it with "
            f"--key-map {certificate}=ROLE"
        )
    for role, apks in sorted(no_signer.items()):
        problems.append(f"no signer was given for the role {role} (needed by {', '.join(apks)})")
    if apexes:
        problems.append(
            "APEX packages are only carried when META/apexkeys.txt marks them PRESIGNED (re-signing an APEX payload "
            f"is not supported); not PRESIGNED: {', '.join(apexes)}"
        )
    if problems:
        raise ReleaseError("cannot sign the target-files package: " + "; ".join(problems))
    return jobs


def _ota_signer(archive: ZipArchive, keys: KeyMap) -> Signer | None:
    """The OTA role's signer when the package carries otacerts, checked to be a certificate recovery loads."""
    if (
        not any(is_otacerts(entry.name) or is_payload_key(entry.name) for entry in archive.entries)
        and archive.entry(OTAKEYS) is None
    ):
        return None
    signer = keys.signer(OTA_ROLE)
    if signer is None:
        raise ReleaseError("the package carries otacerts.zip: a signer for the role ota is needed to replace it")
    trusted_key(signer.certificate, f"the {OTA_ROLE} certificate")
    return signer


def _apk_options(system_props: dict[str, str]) -> ApkSigningOptions:
    sdk = system_props.get("ro.build.version.sdk", "")
    if sdk.isdigit() and int(sdk) <= _LAST_SHA1_PLATFORM:
        return ApkSigningOptions(min_sdk=1)
    return ApkSigningOptions()


# -- signing ---------------------------------------------------------------------------------------------------


def _sign_one(
    archive: ZipArchive, entry: ZipEntry, job: _ApkJob, options: ApkSigningOptions, work: Path, learn_old: bool
) -> tuple[list[bytes], Path]:
    """Sign one APK into a file in `work`; also the DER of the certificates it was signed with before, if asked."""
    unsigned = work / "in.apk"
    signed = work / "out.apk"
    try:
        with open(unsigned, "wb") as handle:
            for chunk in archive.iter_data(entry):
                handle.write(chunk)
        if job.gzipped:
            plain = work / "in-plain.apk"
            with gzip.open(unsigned, "rb") as source, open(plain, "wb") as target:
                shutil.copyfileobj(source, target, _CHUNK)
            plain.replace(unsigned)
        old: list[bytes] = []
        if learn_old:
            before = verify_apk(unsigned)
            old = [certificate.der for certificate in before.signers] if before.verified else []
        sign_apk(unsigned, signed, [job.signer], options)
    except SealgateError as exc:
        raise ReleaseError(f"cannot sign {entry.name} with the {job.role} key: {exc}") from exc
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ReleaseError(f"cannot sign {entry.name}: {exc}") from exc
    finally:
        unsigned.unlink(missing_ok=True)
    if job.gzipped:
        packed = work / "out.apk.gz"
        with (
            open(signed, "rb") as source,
            open(packed, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as target,
        ):
            shutil.copyfileobj(source, target, _CHUNK)
        signed.unlink()
        signed = packed
    return old, signed


def replace_certificates(text: str, replaced: dict[bytes, bytes], conflicts: set[bytes], where: str) -> str:
    """ReplaceCerts: each build certificate (hex DER, as a whole word) becomes the certificate that replaced it.

    The policy must still name each signer once (SELinuxMMAC refuses duplicates), and a certificate that was
    replaced by two different keys cannot be rewritten.
    """
    for old, new in replaced.items():
        pattern = re.compile(rf"\b{old.hex()}\b", re.IGNORECASE)
        if old in conflicts and pattern.search(text):
            raise ReleaseError(f"{where} names a certificate that was replaced by two different keys")
        text = pattern.sub(new.hex(), text)
    signatures = [value.lower() for value in re.findall(r'<signer\s+signature="([0-9A-Fa-f]+)"', text)]
    if len(signatures) != len(set(signatures)):
        raise ReleaseError(f"{where} would name the same signer twice after its certificates were replaced")
    return text


def _new_misc_info(
    text: str, vbmeta: VerifiedBoot | None, rollback_index: int | None, tag_changes: tuple[str, ...]
) -> bytes:
    values = parse_misc_info(text)
    original = set(values)
    if vbmeta is not None:
        set_vbmeta_signing(values, vbmeta.algorithm, rollback_index)
    if values.get("avb_enable") == "true":
        rewrite_avb_props(values, tag_changes)
    return format_misc_info(values, original).encode("utf-8")


def _finish_images(
    first_pass: Path,
    output_zip: Path,
    report: SignReport,
    keys: KeyMap,
    misc_info: dict[str, str],
    rebuild_images: bool | None,
    accept_root_owned: bool,
) -> None:
    """Rebuild the stale images into `output_zip`, or move the first pass there when there is nothing to do.

    Filesystem images first (`partition_images`), then boot images (`boot_images`) from that result; every
    refusal of either comes before anything is written at `output_zip`.
    """
    stale = partition_images.filesystem_images(report.images_to_rebuild)
    if not (stale and (rebuild_images or partition_images.wants_rebuild(misc_info, stale))):
        stale = []
    boot = boot_images.plan_boot_images(first_pass, report.images_to_rebuild, insist=bool(rebuild_images))
    if not stale and not boot:
        os.replace(first_pass, output_zip)
        fsync_directory(output_zip.parent)
        return
    rebuilt: list[partition_images.RebuiltImages] = []
    with tempfile.TemporaryDirectory(dir=first_pass.parent, prefix="images-") as work:
        source = first_pass
        if stale:
            target = Path(work) / "partitions.zip" if boot else output_zip
            rebuilt.append(partition_images.rebuild_partition_images(source, target, stale, keys, Path(work),
                                                                     accept_root_owned=accept_root_owned))  # fmt: skip
            source = target
        if boot:
            rebuilt.append(boot_images.rebuild_boot_images(source, output_zip, boot, keys, Path(work)))
    images = [name for result in rebuilt for name in result.rebuilt]
    resigned = [name for result in rebuilt for name in result.resigned]
    report.images_rebuilt = images + sorted(set(resigned), key=resigned.index)
    report.images_to_rebuild = [image for image in report.images_to_rebuild if image not in images]
    report.notes.append(Issue("IMAGES_REBUILT", "rebuilt from the signed directories (and the vbmeta images "
                              "describing them re-signed): " + ", ".join(report.images_rebuilt)))  # fmt: skip
    for result in rebuilt:
        for name in result.root_owned:
            report.notes.append(Issue("ROOT_OWNED", f"{name}: every file belongs to root (not built as root)"))
        for name in result.dropped:
            if name.endswith(".map"):
                report.notes.append(Issue("BLOCK_MAP_DROPPED", f"{name} described the old image; dropped"))
            else:
                report.notes.append(Issue("CARE_MAP_DROPPED", f"{name} described the old images; dropped"))
        if result.care_map:
            report.notes.append(Issue("CARE_MAP_REGENERATED", f"{care_map.CARE_MAP} describes the rebuilt images "
                                      "(their blocks and release-keys fingerprints)"))  # fmt: skip


def _stale_images(changed: set[str], names: set[str]) -> list[str]:
    partitions = {name.split("/", 1)[0] for name in changed if "/" in name}
    return sorted(
        image for image in (f"IMAGES/{partition.lower()}.img" for partition in partitions - {"META"}) if image in names
    )


__all__ = ["Certificate", "KeyMap", "SignReport", "replace_certificates", "sign_target_files"]
