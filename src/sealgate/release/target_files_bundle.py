"""Target files through the offline custodian: the bundle kind "target-files".

`sealgate bundle create --target-files target-files.zip releasekey` carries a build's target-files package to the
offline machine; `sealgate sign` shows what the build declares (fingerprint, build type, the APKs per role, whether
otacerts and vbmeta will be replaced) and the certificate of every role that will sign, unlocks them all with the
one passphrase before anything is signed, and runs `release.target_files.sign_target_files` there (its user-build
gate first), so no release key ever leaves the offline machine. The signing record gets one entry for the item,
under the item's role; the summary and the response name every role's certificate.

Online, `bundle apply` writes the signed package only if, checked against the exported public keys alone: it holds
exactly the entries that were sent (META/vbmeta_digest.txt may go), every APK apkcerts.txt maps to a role verifies
(sealgate's APK verifier, Android's rules) with exactly that role's certificate and PRESIGNED ones are byte for byte
the ones sent, every otacerts.zip holds only the ota role's certificate, IMAGES/vbmeta.img verifies with the avb
role's key (libavb's rules) with the rollback index asked for, SYSTEM/build.prop says release-keys, and, when
filesystem images were rebuilt, META/care_map.pb is exactly the care map computed here from the response's images.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from asn1crypto import pem

from sealgate.apk.certificate import Certificate
from sealgate.custody.kinds import ArtifactPlan, register_handler
from sealgate.errors import ReleaseError, SealgateError, UnreleasableBuildError
from sealgate.release.apkcerts import (
    DEFAULT_DEV_KEY_DIRECTORY,
    ApkCert,
    KeyMap,
    compressed_extension,
    parse_apkcerts,
)
from sealgate.release.build_props import is_build_prop_file, parse_props, release_refusals, rewrite_props
from sealgate.release.care_map import CARE_MAP, LEGACY_CARE_MAP, care_map_bytes
from sealgate.release.misc_info import parse_misc_info
from sealgate.release.otacerts import is_otacerts, is_payload_key, payload_key_pem
from sealgate.release.partition_images import filesystem_images
from sealgate.release.target_files import (
    APKCERTS,
    MISC_INFO,
    OTA_ROLE,
    OTAKEYS,
    VBMETA_DIGEST,
    replace_certificates,
    sign_target_files,
)
from sealgate.release.verified_boot import AVB_ROLE, VBMETA
from sealgate.signing import Signer
from sealgate.ziparchive import ZipArchive, not_a_zip_reason

KIND = "target-files"
_CARE_MAPS = {CARE_MAP, LEGACY_CARE_MAP}
ALGORITHM = "release-target-files"
_MAX_TEXT = 16 * 1024 * 1024


class TargetFilesHandler:
    """custody.kinds.ArtifactHandler for target-files packages."""

    algorithm = ALGORITHM

    def check_request(self, path: Path, options: Mapping[str, Any]) -> None:
        with _open(path) as archive:
            if archive.entry(APKCERTS) is None:
                raise ReleaseError(f"{path} has no {APKCERTS}: it is not a target-files package")

    def plan(self, path: Path, options: Mapping[str, Any]) -> ArtifactPlan:
        with _open(path) as archive:
            names = {entry.name for entry in archive.entries if not entry.is_directory}
            props = {name: parse_props(_text(archive, name)) for name in sorted(names) if is_build_prop_file(name)}
            refusals = release_refusals(names, props)
            if refusals:
                raise UnreleasableBuildError(refusals)
            apks = _mapped_apks(archive, names, options)
        per_role: dict[str, int] = {}
        for _, role in apks.values():
            if role is not None:
                per_role[role] = per_role.get(role, 0) + 1
        presigned = sum(1 for _, role in apks.values() if role is None)
        roles = list(per_role)
        otacerts = sorted(name for name in names if is_otacerts(name))
        if otacerts and OTA_ROLE not in roles:
            roles.append(OTA_ROLE)
        has_vbmeta = VBMETA in names
        if has_vbmeta and AVB_ROLE not in roles:
            roles.append(AVB_ROLE)
        system = props.get("SYSTEM/build.prop", {})
        fingerprint = system.get("ro.build.fingerprint", "?")
        lines = [
            f"build      {fingerprint}",
            f"           {system.get('ro.build.type', '?')} build, tags {system.get('ro.build.tags', '?')}",
            "APKs       "
            + (", ".join(f"{count} with {role}" for role, count in per_role.items()) or "none to sign")
            + (f"; {presigned} PRESIGNED, kept" if presigned else ""),
            f"otacerts   {len(otacerts)} replaced by the {OTA_ROLE} certificate" if otacerts else "otacerts   none",
            f"vbmeta     re-signed with {AVB_ROLE}" + _rollback_text(options) if has_vbmeta else "vbmeta     none",
        ]
        facts = {"fingerprint": fingerprint, "apks": per_role, "presigned": presigned, "otacerts": otacerts,
                 "vbmeta": has_vbmeta}  # fmt: skip
        return ArtifactPlan(tuple(roles), tuple(lines), facts)

    def sign(self, source: Path, output: Path, signers: Mapping[str, Signer], options: Mapping[str, Any]) -> None:
        keys = KeyMap(dict(signers), dict(options.get("key_map", {})))
        sign_target_files(source, output, keys, rollback_index=options.get("rollback_index"))

    def check(
        self, signed: Path, unsigned: Path, certificate: Callable[[str], Certificate], options: Mapping[str, Any]
    ) -> None:
        with _open(unsigned) as sent, _open(signed) as came:
            sent_names = {entry.name for entry in sent.entries if not entry.is_directory}
            came_names = {entry.name for entry in came.entries if not entry.is_directory}
            rebuilt_maps = _rebuilt_block_maps(sent, came)
            kept = sent_names - rebuilt_maps - _CARE_MAPS  # the care maps are checked once `rebuilt` is known
            if came_names - _CARE_MAPS not in (kept, kept - {VBMETA_DIGEST}):
                different = sorted(came_names ^ sent_names)[:5]
                raise ReleaseError(f"its entries are not the ones that were sent: {', '.join(different)}")
            apks = _mapped_apks(sent, sent_names, options)
            with tempfile.TemporaryDirectory(prefix=".sealgate-check-", dir=signed.parent) as work:
                for name, (cert, role) in apks.items():
                    if role is None:
                        if _digest(sent, name) != _digest(came, name):
                            raise ReleaseError(f"{name} is {cert.certificate} but is not the APK that was sent")
                        continue
                    _check_apk(came, name, certificate(role), role, Path(work))
                _check_mac_permissions(sent, came, came_names, apks, certificate, Path(work))
                rebuilt = _rebuilt_images(sent, came, came_names, rebuilt_maps)
                if rebuilt:
                    _check_rebuilt(came, came_names, rebuilt, certificate(AVB_ROLE), Path(work))
                regenerated = _check_care_map(sent_names, came, came_names, rebuilt)
                if VBMETA in came_names:  # (verified with the avb key just below; its chains are read here)
                    _check_chained(sent, came, _read(came, VBMETA), Path(work), rebuilt)
            ota = (
                certificate(OTA_ROLE) if any(is_otacerts(name) or is_payload_key(name) for name in came_names) else None
            )
            for name in sorted(came_names):
                if is_otacerts(name):
                    assert ota is not None
                    _check_otacerts(came, name, ota)
                elif is_payload_key(name):  # always: left as sent, it would still be the test key
                    assert ota is not None
                    if _read(came, name) != payload_key_pem(ota):
                        raise ReleaseError(f"{name} is not the ota certificate's public key")
            if VBMETA in came_names:
                _check_vbmeta(_read(came, VBMETA), certificate(AVB_ROLE), options.get("rollback_index"))
            tags = parse_props(_text(came, "SYSTEM/build.prop")).get("ro.build.tags") if (
                "SYSTEM/build.prop" in came_names
            ) else "release-keys"  # fmt: skip
            if tags != "release-keys":
                raise ReleaseError(f"SYSTEM/build.prop says ro.build.tags={tags}, not release-keys")
            _check_unchanged(sent, came, came_names, apks, rebuilt | regenerated)


def _check_mac_permissions(
    sent: ZipArchive,
    came: ZipArchive,
    names: set[str],
    apks: Mapping[str, tuple[ApkCert, str | None]],
    certificate: Callable[[str], Certificate],
    work: Path,
) -> None:
    """Each mac_permissions.xml must be the sent policy with exactly sign_target_files' certificate replacements
    (each re-signed APK's old signers -> its role's certificate): a policy edited afterwards could give another
    signer the platform seinfo."""
    from sealgate.apk.verifier import verify_apk

    policies = sorted(name for name in names if name.endswith("mac_permissions.xml"))
    if not policies:
        return
    replaced: dict[bytes, bytes] = {}
    conflicts: set[bytes] = set()
    for name, (_, role) in sorted(apks.items()):
        if role is None:
            continue
        new = certificate(role).der
        path = work / "sent.apk"
        _write_apk(sent, name, path)
        try:
            before = verify_apk(path)
        except SealgateError:
            continue  # as sign_target_files: an APK that does not verify has no certificates to replace
        for old in [signer.der for signer in before.signers] if before.verified else []:
            if replaced.setdefault(old, new) != new:
                conflicts.add(old)
    for name in policies:
        try:
            expected = replace_certificates(_read(sent, name).decode("utf-8"), replaced, conflicts, name)
        except UnicodeDecodeError:
            raise ReleaseError(f"{name} was sent as something other than UTF-8 text") from None
        if _read(came, name) != expected.encode("utf-8"):
            raise ReleaseError(f"{name} is not the policy that was sent with the re-signed certificates put in")


def _rebuilt_images(sent: ZipArchive, came: ZipArchive, names: set[str], rebuilt_maps: set[str]) -> set[str]:
    """The filesystem images sign_target_files rebuilt (`partition_images`): those whose block map it dropped, or
    which differ from the sent ones while the tree they are built from was re-signed (a dynamic partition has no
    block map). Whatever is claimed here must then pass `_check_rebuilt`."""
    result = {name.removesuffix(".map") + ".img" for name in rebuilt_maps}
    for name in names:
        if not (name.startswith("IMAGES/") and name.endswith(".img")) or name == VBMETA:
            continue
        tree = name.removeprefix("IMAGES/").removesuffix(".img").upper() + "/"
        changed = any(
            other.startswith(tree) and _digest(came, other) != _digest(sent, other) for other in names
        )  # fmt: skip
        if changed and sent.entry(name) is not None and _digest(came, name) != _digest(sent, name):
            result.add(name)
    return result


def _check_rebuilt(came: ZipArchive, names: set[str], rebuilt: set[str], avb: Certificate, work: Path) -> None:
    """A rebuilt image is accepted only as the custodian's vbmeta vouches for it: the response's images are checked
    as a locked bootloader checks them (avb_slot_verify with the avb key: every hash and hash-tree digest recomputed
    from the image bytes), and each rebuilt image must be among those vbmeta describes."""
    from sealgate.avb.slot import verify_image_set

    if VBMETA not in names:
        raise ReleaseError(f"{', '.join(sorted(rebuilt))} changed, but the package has no {VBMETA} to vouch for them")
    images = work / "images"
    images.mkdir()
    for name in sorted(n for n in names if n.startswith("IMAGES/") and n.endswith(".img") and "/" not in n[7:]):
        entry = came.entry(name)
        assert entry is not None
        with open(images / name.removeprefix("IMAGES/"), "wb") as handle:
            for chunk in came.iter_data(entry, max_size=2**40):
                handle.write(chunk)
    report = verify_image_set(images, [avb.public_key()])
    if not report.verified:
        problems = "; ".join(issue.message for issue in report.errors)
        raise ReleaseError(f"the rebuilt images do not verify with the avb key: {problems}")
    unvouched = sorted(
        name for name in rebuilt if name.removeprefix("IMAGES/").removesuffix(".img") not in report.checked
    )
    if unvouched:
        raise ReleaseError(f"{', '.join(unvouched)} changed, but {VBMETA} does not describe them")
    shutil.rmtree(images)


def _check_care_map(sent_names: set[str], came: ZipArchive, came_names: set[str], rebuilt: set[str]) -> set[str]:
    """When filesystem images were rebuilt, META/care_map.pb must be exactly the care map of the response's images
    (`release.care_map`, computed here from the images `_check_rebuilt` verified and the build.prop files
    `_check_unchanged` checks), and the old META/care_map.txt gone; otherwise the care maps are the ones sent.
    The care map entries so rewritten are returned (`_check_unchanged` checks everything else)."""
    if not filesystem_images(sorted(rebuilt)):
        if came_names & _CARE_MAPS != sent_names & _CARE_MAPS:
            raise ReleaseError("the care maps are not the ones that were sent, yet no filesystem image was rebuilt")
        return set()
    if LEGACY_CARE_MAP in came_names:
        raise ReleaseError(f"{LEGACY_CARE_MAP} still describes the images that were rebuilt")
    expected = care_map_bytes(came)
    if expected is None:
        if CARE_MAP in came_names:
            raise ReleaseError(f"{CARE_MAP} is there, but no partition of the rebuilt images has a care map")
        return set()
    if CARE_MAP not in came_names or _read(came, CARE_MAP) != expected:
        raise ReleaseError(f"{CARE_MAP} is not the care map of the rebuilt images (their blocks and fingerprints)")
    return {CARE_MAP}


def _check_chained(sent: ZipArchive, came: ZipArchive, vbmeta: bytes, work: Path, rebuilt: set[str]) -> None:
    """Each image vbmeta.img chains to must verify with the key its chain descriptor names and carry the sent
    image's descriptors and contents: re-signing changes the signature and nothing else (a rebuilt image's
    descriptors and contents were checked against the avb key by `_check_rebuilt`)."""
    from sealgate.avb.footer import read_image
    from sealgate.avb.vbmeta import read_vbmeta, verify_vbmeta

    try:
        chains = read_vbmeta(vbmeta).chain_partitions()
    except SealgateError as exc:
        raise ReleaseError(f"{VBMETA} is malformed: {exc}") from exc
    for partition, chain in sorted(chains.items()):
        name = f"IMAGES/{partition}.img"
        came_path, sent_path = work / "came.img", work / "sent.img"
        for archive, path in ((came, came_path), (sent, sent_path)):
            entry = archive.entry(name)
            if entry is None:
                raise ReleaseError(f"{VBMETA} chains to {name}, which the package does not hold")
            with open(path, "wb") as handle:
                for chunk in archive.iter_data(entry, max_size=2**40):
                    handle.write(chunk)
        try:
            came_footer, came_image = read_image(came_path)
            sent_footer, sent_image = read_image(sent_path)
            verified = verify_vbmeta(came_image, [chain.public_key]).verified
        except SealgateError as exc:
            raise ReleaseError(f"{name} is malformed: {exc}") from exc
        if not verified:
            raise ReleaseError(f"{name} does not verify with the key {VBMETA} chains it to")
        if name in rebuilt:
            continue
        if came_image.descriptors != sent_image.descriptors:
            raise ReleaseError(f"{name} does not carry the descriptors that were sent")
        if (came_footer is None) != (sent_footer is None) or (
            came_footer is not None
            and sent_footer is not None
            and (
                came_footer.original_image_size != sent_footer.original_image_size
                or _file_digest(came_path, came_footer.original_image_size)
                != _file_digest(sent_path, sent_footer.original_image_size)
            )
        ):
            raise ReleaseError(f"{name} does not hold the image that was sent")


def _file_digest(path: Path, size: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while size > 0 and (chunk := handle.read(min(size, 1 << 20))):
            hasher.update(chunk)
            size -= len(chunk)
    return hasher.hexdigest()


def _check_unchanged(
    sent: ZipArchive,
    came: ZipArchive,
    names: set[str],
    apks: Mapping[str, tuple[ApkCert, str | None]],
    rebuilt: set[str],
) -> None:
    """Every entry sign_target_files copies as it is (images, binaries, radio, ...) must be the one that was sent,
    and every build.prop exactly its release-keys rewrite: the checks above cover only what signing changes."""
    from sealgate.avb.vbmeta import read_vbmeta

    rewritten = {VBMETA, MISC_INFO, OTAKEYS, VBMETA_DIGEST} | rebuilt
    if VBMETA in names:  # the chained images are re-signed (vbmeta.img, which names them, was verified above)
        rewritten |= {f"IMAGES/{partition}.img" for partition in read_vbmeta(_read(came, VBMETA)).chain_partitions()}
    for name in sorted(names):
        if (
            apks.get(name, (None, None))[1] is not None
            or is_otacerts(name)
            or is_payload_key(name)
            or name in rewritten
            or name.endswith("mac_permissions.xml")
        ):
            continue
        if _digest(came, name) == _digest(sent, name):
            continue
        if is_build_prop_file(name):
            try:
                if _read(came, name) == rewrite_props(_read(sent, name).decode("utf-8")).encode("utf-8"):
                    continue
            except (UnicodeDecodeError, ReleaseError):
                pass
        raise ReleaseError(f"{name} is not the entry that was sent: signing copies it unchanged")


def _rebuilt_block_maps(sent: ZipArchive, came: ZipArchive) -> set[str]:
    """IMAGES/<part>.map entries sign_target_files drops because it rebuilt IMAGES/<part>.img (`partition_images`)."""
    result = set()
    for entry in sent.entries:
        if entry.name.startswith("IMAGES/") and entry.name.endswith(".map") and came.entry(entry.name) is None:
            image = entry.name.removesuffix(".map") + ".img"
            before, after = sent.entry(image), came.entry(image)
            if before is not None and after is not None and (before.crc32, before.uncompressed_size) != (
                after.crc32, after.uncompressed_size
            ):  # fmt: skip
                result.add(entry.name)
    return result


def _rollback_text(options: Mapping[str, Any]) -> str:
    index = options.get("rollback_index")
    return "" if index is None else f", rollback index {index}"


def _mapped_apks(
    archive: ZipArchive, names: set[str], options: Mapping[str, Any]
) -> dict[str, tuple[ApkCert, str | None]]:
    """Every APK entry -> (its apkcerts line, the role that signs it or None for PRESIGNED); ReleaseError naming
    what apkcerts.txt does not list or no role maps, as sign_target_files would refuse it."""
    certs = parse_apkcerts(_text(archive, APKCERTS))
    misc_info = parse_misc_info(_text(archive, MISC_INFO)) if MISC_INFO in names else {}
    dev_keys = os.path.dirname(misc_info.get("default_system_dev_certificate", "")) or DEFAULT_DEV_KEY_DIRECTORY
    installed = {os.path.basename(name) for name in names}
    extension = compressed_extension(certs, installed)
    keys = KeyMap({}, dict(options.get("key_map", {})))
    result: dict[str, tuple[ApkCert, str | None]] = {}
    problems = []
    for name in sorted(names):
        gzipped = extension is not None and name.endswith(".apk" + extension)
        if not (name.endswith(".apk") or gzipped):
            continue
        base = os.path.basename(name)
        if gzipped and extension is not None:
            base = base[: -len(extension)]
        cert = certs.get(base)
        if cert is None:
            problems.append(f"{name} is not in {APKCERTS}")
            continue
        if cert.presigned:
            result[name] = (cert, None)
            continue
        role = keys.role_of(cert.certificate, dev_keys)
        if role is None:
            problems.append(f"{name}'s certificate {cert.certificate} maps to no role (give a key_map)")
            continue
        result[name] = (cert, role)
    if problems:
        raise ReleaseError("; ".join(problems[:5]))
    return result


def _check_apk(archive: ZipArchive, name: str, expected: Certificate, role: str, work: Path) -> None:
    from sealgate.apk.verifier import verify_apk

    path = work / "check.apk"
    _write_apk(archive, name, path)
    try:
        report = verify_apk(path)
    except SealgateError as exc:
        raise ReleaseError(f"{name} is malformed: {exc}") from exc
    if not report.verified:
        problems = "; ".join(issue.message for issue in report.errors[:3])
        raise ReleaseError(f"{name} does not verify: {problems}")
    if [signer.sha256 for signer in report.signers] != [expected.sha256]:
        found = ", ".join(signer.sha256 for signer in report.signers)
        raise ReleaseError(f"{name} is signed by {found}, not the {role} certificate {expected.sha256}")


def _write_apk(archive: ZipArchive, name: str, path: Path) -> None:
    entry = archive.entry(name)
    assert entry is not None
    with open(path, "wb") as handle:
        if name.endswith(".gz"):
            with gzip.open(io.BytesIO(_read(archive, name))) as inflated:
                shutil.copyfileobj(inflated, handle)
        else:
            for chunk in archive.iter_data(entry, max_size=2**34):
                handle.write(chunk)


def _check_otacerts(archive: ZipArchive, name: str, ota: Certificate) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(_read(archive, name))) as inner:
            members = [inner.read(member) for member in inner.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ReleaseError(f"{name}: {not_a_zip_reason(exc)}") from exc
    found = []
    for data in members:
        if pem.detect(data):
            _, _, data = pem.unarmor(data)
        try:
            found.append(Certificate.from_der(data).sha256)
        except SealgateError:
            found.append("(not a certificate)")
    if found != [ota.sha256]:
        raise ReleaseError(f"{name} holds {', '.join(found) or 'nothing'}, not only the ota certificate {ota.sha256}")


def _check_vbmeta(data: bytes, avb: Certificate, rollback_index: int | None) -> None:
    from sealgate.avb.vbmeta import read_vbmeta, verify_vbmeta

    try:
        verdict = verify_vbmeta(data, [avb.public_key()])
        image = read_vbmeta(data)
    except SealgateError as exc:
        raise ReleaseError(f"{VBMETA} is malformed: {exc}") from exc
    if not verdict.verified:
        raise ReleaseError(f"{VBMETA} does not verify with the avb key ({verdict.status})")
    if rollback_index is not None and image.rollback_index != rollback_index:
        raise ReleaseError(f"{VBMETA} has rollback index {image.rollback_index}, not the {rollback_index} asked for")


def _open(path: Path) -> ZipArchive:
    try:
        return ZipArchive.open(path, strict=True)
    except SealgateError as exc:
        raise ReleaseError(f"{path} is not a target-files package: {exc}") from exc


def _read(archive: ZipArchive, name: str) -> bytes:
    entry = archive.entry(name)
    if entry is None:
        raise ReleaseError(f"the package has no {name}")
    return archive.read(entry, max_size=_MAX_TEXT)


def _text(archive: ZipArchive, name: str) -> str:
    return _read(archive, name).decode("utf-8", "replace")


def _digest(archive: ZipArchive, name: str) -> str:
    entry = archive.entry(name)
    if entry is None:
        return ""
    hasher = hashlib.sha256()
    for chunk in archive.iter_data(entry, max_size=2**40):
        hasher.update(chunk)
    return hasher.hexdigest()


register_handler(KIND, TargetFilesHandler())
