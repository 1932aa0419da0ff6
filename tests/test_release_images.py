"""Rebuilding IMAGES/system.img while signing a target-files package: the input's system.img is an EROFS image built
here by Debian's mkfs.erofs from SYSTEM/ with the test-keys APKs; after sign-target-files, Debian's fsck.erofs
extracts exactly the signed SYSTEM/ tree (APKs checked with Debian's apksigner, release-keys props, the OTA
certificate), cryptsetup's `veritysetup verify` accepts the root digest vbmeta names, and `release avb-verify`
accepts the images with the AVB key and refuses them with the test key."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from conftest import require_tool
from release_tools import (
    DEV_KEYS,
    EXPECTED_ROLES,
    SYSTEM_BUILD_PROP,
    WIFI_CERT,
    BuildInputs,
    avb_release_inputs,
    otacerts,
    release_keys,
    role_signer,
    write_target_files,
)
from sealgate.avb.descriptors import ChainPartitionDescriptor, HashtreeDescriptor, PropertyDescriptor
from sealgate.avb.images import add_hashtree_footer
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.vbmeta import build_vbmeta, read_vbmeta
from sealgate.errors import ReleaseError
from sealgate.release import partition_images
from sealgate.release.apkcerts import KeyMap
from sealgate.release.report import SignReport
from sealgate.release.target_files import sign_target_files
from sealgate.signing import PrivateKeySigner
from signing_tools import apksigner_verify

#: (the test-keys input, the signed output, its report)
Signed = tuple[Path, Path, SignReport]
SYSTEM_SIZE = 8 * 1024 * 1024
FINGERPRINT_PROP = "com.android.build.system.fingerprint"
TEST_FINGERPRINT = "google/oriole/oriole:14/AP2A/1:user/test-keys"
FILE_CONTEXTS = "/(.*)?  u:object_r:system_file:s0\n/bin/sh  u:object_r:shell_exec:s0\n"


@pytest.fixture(scope="module")
def inputs(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildInputs:
    require_tool("apksigner")
    require_tool("mkfs.erofs")
    return avb_release_inputs(apksig_vectors, tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("images-inputs"))


@pytest.fixture(scope="module")
def avb_test_key() -> PrivateKeySigner:
    return role_signer("avb-test-key")


def _keys(inputs: BuildInputs) -> KeyMap:
    return release_keys(inputs)


def _misc_info(fs_type: str, *, dynamic: bool = False) -> str:
    # A dynamic partition: no system_size, and the generic fs_type (ImagePropFromGlobalDict's fallback for system).
    sizing = "use_dynamic_partition_size=true\nfs_type=" if dynamic else f"system_size={SYSTEM_SIZE}\nsystem_fs_type="
    return (
        f"default_system_dev_certificate={DEV_KEYS}/testkey\navb_enable=true\nrecovery_api_version=3\n"
        f"{sizing}{fs_type}\navb_system_hashtree_enable=true\n"
        f"avb_system_add_hashtree_footer_args=--prop {FINGERPRINT_PROP}:{TEST_FINGERPRINT}\n"
        "selinux_fc=META/file_contexts\n"
    )


def _fs_config(tree: Path) -> str:
    lines = ["system 0 0 0755"]
    for path in sorted(tree.rglob("*")):
        relative = path.relative_to(tree).as_posix()
        if relative == "bin/sh":
            lines.append("system/bin/sh 0 2000 0755 selabel=u:object_r:shell_exec:s0 capabilities=0x400")
        else:
            lines.append(f"system/{relative} 0 0 {'0755' if path.is_dir() else '0644'}")
    return "\n".join(lines) + "\n"


def _extract_tree(archive: zipfile.ZipFile, prefix: str, out: Path) -> None:
    for info in archive.infolist():
        name = info.filename
        if name.startswith(prefix) and not name.endswith("/"):
            target = out / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                target.symlink_to(archive.read(name).decode())
            else:
                target.write_bytes(archive.read(name))


def _add_symlink(package: Path, name: str, target: str) -> None:
    with zipfile.ZipFile(package, "a") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = 0o120777 << 16
        archive.writestr(info, target)


def _build_input(
    inputs: BuildInputs,
    avb_test_key: PrivateKeySigner,
    work: Path,
    fs_type: str = "erofs",
    *,
    dynamic: bool = False,
    vbmeta_system: bool = False,
    chain_system: bool = False,
    system_prop: str = SYSTEM_BUILD_PROP,
    more: Mapping[str, bytes] | None = None,
) -> Path:
    """A test-keys target-files package whose system.img really holds SYSTEM/, signed by the AVB test key
    (`system_prop` its SYSTEM/build.prop, `more` further entries)."""
    work.mkdir(parents=True, exist_ok=True)
    plain = write_target_files(work / "plain.zip", inputs, system_prop=system_prop)
    _add_symlink(plain, "SYSTEM/bin/ls", "sh")
    tree = work / "system-tree"
    with zipfile.ZipFile(plain) as archive:
        _extract_tree(archive, "SYSTEM/", tree)
    image = work / "system.img"
    subprocess.run(["mkfs.erofs", "--quiet", "-T1700000000", "--all-root", str(image), str(tree)], check=True)
    add_hashtree_footer(image, "system", SYSTEM_SIZE, avb_test_key if chain_system else None, salt=bytes(32),
                        properties={FINGERPRINT_PROP: TEST_FINGERPRINT.encode()}, rollback_index=7)  # fmt: skip
    # make_vbmeta_image --include_descriptors_from_image system.img: every footer descriptor, then a property.
    footer_descriptors = read_vbmeta(_footer_vbmeta(image)).descriptors
    vbmeta = build_vbmeta([*footer_descriptors, PropertyDescriptor("other", b"kept")], avb_test_key, padding_size=4096)
    chained: dict[str, bytes] = {}
    if vbmeta_system:  # the Pixel layout: vbmeta.img chains to vbmeta_system.img, which describes system.img
        chained["IMAGES/vbmeta_system.img"] = build_vbmeta(
            footer_descriptors, avb_test_key, padding_size=4096, rollback_index_location=1
        )
        key = public_key_metadata(avb_test_key.public_key)
        vbmeta = build_vbmeta([ChainPartitionDescriptor(1, "vbmeta_system", key)], avb_test_key, padding_size=4096)
    if chain_system:  # vbmeta.img chains to system.img itself: its footer is signed by the chained key
        key = public_key_metadata(avb_test_key.public_key)
        vbmeta = build_vbmeta([ChainPartitionDescriptor(2, "system", key)], avb_test_key, padding_size=4096)
    extra = {
        **chained,
        "META/misc_info.txt": _misc_info(fs_type, dynamic=dynamic).encode(),
        "META/filesystem_config.txt": _fs_config(tree).encode(),
        "META/file_contexts": FILE_CONTEXTS.encode(),
        "IMAGES/system.img": image.read_bytes(),
        "IMAGES/system.map": b"/system/bin/sh 1-2\n",
        "IMAGES/vbmeta.img": vbmeta,
        **(more or {}),
    }
    package = write_target_files(work / "target_files.zip", inputs, system_prop=system_prop, extra=extra)
    _add_symlink(package, "SYSTEM/bin/ls", "sh")
    return package


def _footer_vbmeta(image: Path) -> bytes:
    from sealgate.avb.footer import read_image_vbmeta

    return read_image_vbmeta(image)[1]


@pytest.fixture(scope="module")
def signed(inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    work = tmp_path_factory.mktemp("images")
    source = _build_input(inputs, avb_test_key, work)
    out = work / "signed.zip"
    report = sign_target_files(source, out, _keys(inputs))
    return source, out, report


def test_the_rebuilt_image_holds_exactly_the_signed_tree(signed: Signed, inputs: BuildInputs, tmp_path: Path) -> None:
    _, out, report = signed
    assert report.images_rebuilt == ["IMAGES/system.img", "IMAGES/vbmeta.img"]
    assert report.images_to_rebuild == []
    assert {note.code for note in report.notes} >= {"IMAGES_REBUILT", "BLOCK_MAP_DROPPED"}
    with zipfile.ZipFile(out) as archive:
        assert "IMAGES/system.map" not in archive.namelist()
        (tmp_path / "system.img").write_bytes(archive.read("IMAGES/system.img"))
        _extract_tree(archive, "SYSTEM/", tmp_path / "expected")
    fsck = require_tool("fsck.erofs")
    subprocess.run([fsck, f"--extract={tmp_path / 'got'}", str(tmp_path / "system.img")], check=True,
                   capture_output=True)  # fmt: skip
    expected = {p.relative_to(tmp_path / "expected").as_posix() for p in (tmp_path / "expected").rglob("*")}
    got = {p.relative_to(tmp_path / "got").as_posix() for p in (tmp_path / "got").rglob("*")}
    assert got == expected
    for name in expected:
        if (tmp_path / "expected" / name).is_file():
            assert (tmp_path / "got" / name).read_bytes() == (tmp_path / "expected" / name).read_bytes(), name
    for path, role in EXPECTED_ROLES.items():
        if path.startswith("SYSTEM/"):
            verdict = apksigner_verify(tmp_path / "got" / path.removeprefix("SYSTEM/"))
            assert verdict.verified and verdict.signers == [inputs.signers[role].certificate.sha256], path
    build_prop = (tmp_path / "got" / "build.prop").read_text()
    assert "ro.build.tags=release-keys" in build_prop and "test-keys" not in build_prop
    with zipfile.ZipFile(tmp_path / "got" / "etc/security/otacerts.zip") as otacerts:
        pem = otacerts.read(otacerts.namelist()[0])
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    assert x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER) == inputs.signers["ota"].certificate.der
    assert os.readlink(tmp_path / "got/bin/ls") == "sh"
    if os.geteuid() == 0:  # fsck.erofs restores owners and modes for root, as fs_config gave them
        sh = (tmp_path / "got" / "bin/sh").stat()
        assert (sh.st_uid, sh.st_gid, sh.st_mode & 0o7777) == (0, 2000, 0o755)
    image = (tmp_path / "system.img").read_bytes()
    assert b"u:object_r:shell_exec:s0" in image  # the SELinux label mkfs.erofs took from the file contexts
    if os.geteuid() == 0:  # fs_config's capabilities=0x400 as a VFS_CAP_REVISION_2 security.capability xattr
        assert partition_images.vfs_cap_data(0x400) in image
    dump = subprocess.run([require_tool("dump.erofs"), "-s", str(tmp_path / "system.img")], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    fingerprint = "google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/release-keys"
    assert "Thu Jan  1 00:00:00 2009" in dump  # add_img_to_target_files' FIXED_FILE_TIMESTAMP
    assert str(uuid.uuid5(uuid.NAMESPACE_URL, f"system-{fingerprint}")) in dump


def test_veritysetup_confirms_the_root_digest_vbmeta_names(signed: Signed, tmp_path: Path) -> None:
    _, out, _ = signed
    with zipfile.ZipFile(out) as archive:
        (tmp_path / "system.img").write_bytes(archive.read("IMAGES/system.img"))
        vbmeta = read_vbmeta(archive.read("IMAGES/vbmeta.img"))
    descriptor = next(d for d in vbmeta.descriptors if isinstance(d, HashtreeDescriptor))
    fingerprint = b"google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/release-keys"
    assert descriptor.partition_name == "system" and descriptor.salt == hashlib.sha256(fingerprint).digest()
    properties = [(d.key, d.value) for d in vbmeta.descriptors if isinstance(d, PropertyDescriptor)]
    # the footer's fingerprint property, now release-keys, in the place of the old one; other descriptors kept
    assert properties == [(FINGERPRINT_PROP, b"google/oriole/oriole:14/AP2A/1:user/release-keys"), ("other", b"kept")]
    assert [type(d).__name__ for d in vbmeta.descriptors] == ["PropertyDescriptor", "HashtreeDescriptor",
                                                             "PropertyDescriptor"]  # fmt: skip
    tool = require_tool("veritysetup")
    image = str(tmp_path / "system.img")
    args = [tool, "verify", image, image, descriptor.root_digest.hex(), "--no-superblock", "--format=1",
            f"--hash={descriptor.hash_algorithm}", f"--salt={descriptor.salt.hex()}",
            f"--data-blocks={descriptor.image_size // descriptor.data_block_size}",
            f"--hash-offset={descriptor.tree_offset}"]  # fmt: skip
    assert subprocess.run(args, capture_output=True).returncode == 0
    wrong = bytearray(descriptor.root_digest)
    wrong[0] ^= 1
    assert subprocess.run([*args[:4], wrong.hex(), *args[5:]], capture_output=True).returncode != 0
    from sealgate.avb.footer import read_image

    _, footer_vbmeta = read_image(tmp_path / "system.img")
    props = {d.key: d.value for d in footer_vbmeta.descriptors if hasattr(d, "key")}
    assert props[FINGERPRINT_PROP].endswith(b"user/release-keys")


def test_avb_verify_passes_with_the_avb_key_only(
    signed: Signed,
    inputs: BuildInputs,
    avb_test_key: PrivateKeySigner,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sealgate.cli.main import main

    source, out, _ = signed
    for label, package in (("old", source), ("new", out)):
        with zipfile.ZipFile(package) as archive:
            for name in ("IMAGES/system.img", "IMAGES/vbmeta.img"):
                (tmp_path / label).mkdir(exist_ok=True)
                (tmp_path / label / Path(name).name).write_bytes(archive.read(name))
    avb = tmp_path / "avb_pkmd.bin"
    avb.write_bytes(public_key_metadata(inputs.signers["avb"].public_key))
    test = tmp_path / "test_pkmd.bin"
    test.write_bytes(public_key_metadata(avb_test_key.public_key))
    assert main(["release", "avb-verify", str(tmp_path / "old"), "--pkmd", str(test)]) == 0  # the input is sound
    assert main(["release", "avb-verify", str(tmp_path / "new"), "--pkmd", str(avb), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["checked"] == ["vbmeta", "system"]
    assert main(["release", "avb-verify", str(tmp_path / "new"), "--pkmd", str(test)]) == 1
    # The new vbmeta with the old image (test-keys contents) fails: the descriptor describes the rebuilt one.
    shutil.copy(tmp_path / "old" / "system.img", tmp_path / "new" / "system.img")
    assert main(["release", "avb-verify", str(tmp_path / "new"), "--pkmd", str(avb)]) == 1


def test_two_runs_give_identical_bytes(signed: Signed, inputs: BuildInputs, tmp_path: Path) -> None:
    source, out, _ = signed
    again = tmp_path / "again.zip"
    sign_target_files(source, again, _keys(inputs))
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(out.read_bytes()).digest()


def test_an_ext4_partition_is_refused_and_nothing_written(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    source = _build_input(inputs, avb_test_key, tmp_path / "in", fs_type="ext4")
    out = tmp_path / "out.zip"
    with pytest.raises(ReleaseError, match=r"IMAGES/system.img is ext4 .*nothing was written"):
        sign_target_files(source, out, _keys(inputs), rebuild_images=True)
    assert not out.exists() and os.listdir(tmp_path) == ["in"]
    report = sign_target_files(source, out, _keys(inputs))  # the default leaves an ext4 image alone, with a note
    assert report.images_to_rebuild == ["IMAGES/system.img"] and report.images_rebuilt == []


def test_cli_refuses_non_root_ownership_unless_accepted(
    inputs: BuildInputs,
    avb_test_key: PrivateKeySigner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sealgate.cli import release_sign
    from sealgate.cli.main import main

    source = _build_input(inputs, avb_test_key, tmp_path / "in")
    monkeypatch.setattr(partition_images, "_running_as_root", lambda: False)
    monkeypatch.setattr(release_sign, "_KeystoreSigners", lambda store, passphrase: dict(inputs.signers))
    monkeypatch.setattr("sealgate.cli.signers.open_keystore", lambda path: None)
    monkeypatch.setattr("sealgate.cli.signers.keystore_passphrase", lambda fd: "")
    args = ["release", "sign-target-files", str(source), str(tmp_path / "out.zip"), "--keystore", str(tmp_path),
            "--key-map", f"{WIFI_CERT}=networkstack"]  # fmt: skip
    assert main(args) == 1
    assert "only root can give" in capsys.readouterr().err and not (tmp_path / "out.zip").exists()
    assert main([*args, "--accept-root-owned", "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["images_rebuilt"] == ["IMAGES/system.img", "IMAGES/vbmeta.img"]
    assert "ROOT_OWNED" in {note["code"] for note in line["notes"]}
    assert main([*args[:3], str(tmp_path / "stale.zip"), *args[4:], "--no-rebuild-images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images_to_rebuild"] == ["IMAGES/system.img"]
    with zipfile.ZipFile(tmp_path / "stale.zip") as stale, zipfile.ZipFile(source) as original:
        assert stale.read("IMAGES/system.img") == original.read("IMAGES/system.img")


def test_the_offline_bundle_check_accepts_a_rebuilt_image(signed: Signed, inputs: BuildInputs, tmp_path: Path) -> None:
    """`bundle apply`'s check of a package signed offline: the block map of the rebuilt image may go, nothing else."""
    from sealgate.release.target_files_bundle import TargetFilesHandler

    source, out, _ = signed
    options = {"key_map": {WIFI_CERT: "networkstack"}}
    TargetFilesHandler().check(out, source, lambda role: inputs.signers[role].certificate, options)
    with zipfile.ZipFile(out) as signed_zip, zipfile.ZipFile(tmp_path / "less.zip", "w") as less:
        for info in signed_zip.infolist():
            if info.filename != "META/filesystem_config.txt":
                less.writestr(info, signed_zip.read(info))
    with pytest.raises(ReleaseError, match="not the ones that were sent"):
        TargetFilesHandler().check(tmp_path / "less.zip", source, lambda role: inputs.signers[role].certificate,
                                   options)  # fmt: skip


def test_the_offline_bundle_check_refuses_a_rebuilt_image_changed_on_the_way(
    signed: Signed, inputs: BuildInputs, tmp_path: Path
) -> None:
    """A rebuilt image differs from the one sent, so `bundle apply` accepts it only as the custodian's vbmeta
    describes it: one byte changed in transit (or the test-keys image put back) is refused."""
    from sealgate.release.target_files_bundle import TargetFilesHandler

    source, out, _ = signed
    options = {"key_map": {WIFI_CERT: "networkstack"}}
    with zipfile.ZipFile(source) as original:
        old_system = original.read("IMAGES/system.img")
    for label, change, reason in (
        ("flipped", lambda data: data[:8192] + bytes([data[8192] ^ 1]) + data[8193:], "do not verify with the avb key"),
        ("test-keys image", lambda data: old_system, "IMAGES/system"),
    ):
        forged = tmp_path / f"{label}.zip"
        with zipfile.ZipFile(out) as signed_zip, zipfile.ZipFile(forged, "w") as copy:
            for info in signed_zip.infolist():
                data = signed_zip.read(info)
                copy.writestr(info, change(data) if info.filename == "IMAGES/system.img" else data)
        with pytest.raises(ReleaseError, match=reason):
            TargetFilesHandler().check(forged, source, lambda role: inputs.signers[role].certificate, options)


def test_a_dynamic_system_partition_described_by_vbmeta_system(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    """vbmeta_system.img (chained, re-signed with the avb key) gets the rebuilt system.img's descriptors; the
    partition is sized to its contents, as build_image sizes dynamic partitions."""
    from sealgate.cli.main import main

    source = _build_input(inputs, avb_test_key, tmp_path / "in", dynamic=True, vbmeta_system=True)
    with zipfile.ZipFile(source, "a") as archive:  # recovery in the boot ramdisk: boot.img goes stale too
        archive.writestr("BOOT/RAMDISK/system/etc/security/otacerts.zip",
                         otacerts(inputs.test_keys["testkey"].cert_path.read_bytes()))  # fmt: skip
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, _keys(inputs))
    assert report.images_rebuilt == ["IMAGES/system.img", "IMAGES/vbmeta_system.img"]
    # a boot image is not a filesystem image: still listed, with the note, not refused
    assert report.images_to_rebuild == ["IMAGES/boot.img"]
    assert "IMAGES_NOT_REBUILT" in {note.code for note in report.notes}
    images = tmp_path / "images"
    images.mkdir()
    with zipfile.ZipFile(out) as archive:
        for name in ("system", "vbmeta", "vbmeta_system"):
            (images / f"{name}.img").write_bytes(archive.read(f"IMAGES/{name}.img"))
    size = (images / "system.img").stat().st_size
    assert size % 4096 == 0 and size < SYSTEM_SIZE
    avb = tmp_path / "avb_pkmd.bin"
    avb.write_bytes(public_key_metadata(inputs.signers["avb"].public_key))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 0
    system = read_vbmeta((images / "vbmeta_system.img").read_bytes())
    assert system.rollback_index_location == 1
    with zipfile.ZipFile(source) as archive:
        (images / "system.img").write_bytes(archive.read("IMAGES/system.img"))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 1


def test_a_symlink_cannot_lead_the_staging_out_of_its_directory(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    source = _build_input(inputs, avb_test_key, tmp_path / "in")
    _add_symlink(source, "SYSTEM/escape", str(outside))
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("SYSTEM/escape/planted", b"must not be written outside the staging directory")
    with pytest.raises(ReleaseError, match="below the symlink escape"):
        sign_target_files(source, tmp_path / "out.zip", _keys(inputs))
    assert os.listdir(outside) == [] and not (tmp_path / "out.zip").exists()


def test_a_system_partition_chained_by_vbmeta_gets_a_signed_footer(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    from sealgate.avb.footer import read_image
    from sealgate.avb.vbmeta import verify_vbmeta
    from sealgate.cli.main import main

    source = _build_input(inputs, avb_test_key, tmp_path / "in", chain_system=True)
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, _keys(inputs))
    assert report.images_rebuilt == ["IMAGES/system.img"]  # vbmeta.img names the key, not the image
    images = tmp_path / "images"
    images.mkdir()
    with zipfile.ZipFile(out) as archive:
        for name in ("system", "vbmeta"):
            (images / f"{name}.img").write_bytes(archive.read(f"IMAGES/{name}.img"))
    _, footer = read_image(images / "system.img")
    assert verify_vbmeta(footer, [inputs.signers["avb"].public_key]).verified and footer.rollback_index == 7
    avb = tmp_path / "avb_pkmd.bin"
    avb.write_bytes(public_key_metadata(inputs.signers["avb"].public_key))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 0
